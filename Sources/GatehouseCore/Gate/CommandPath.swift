import FoundationEssentials
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import Logging
import StrictJSON
import Synchronization

/// The command path: carries a command from the upstream transport through the gate to the site
/// transport, and the device's answer back; one audit record and one log line a decision. It
/// owns the site delivery handle; `HostRouter` hands it `command` and `deliver_result`.
///
///     hub plugin ──command──▶ gate.decide ──allow──▶ site plugin.deliver ──deliver_result──▶ respond
///                                         └─deny───▶ respond(403, reason)
public final class CommandPath: Sendable {
    let store: StateStore
    let logger: Logger
    private let wiring = Mutex<Wiring?>(nil)
    private let pending = Mutex<[UInt64: Pending]>([:])
    private let nextToken = Atomic<UInt64>(0)
    let refused = Atomic<Int>(0)

    struct Wiring: Sendable {
        var gate: CommandGate
        var site: PluginInstance
    }

    struct Pending: Sendable {
        var device: String
        var name: String
        var decisionID: String
        var started: ContinuousClock.Instant
        var respond: @Sendable (Int32, [UInt8]) -> Void
    }

    let auditLog: AuditWriter

    /// Decisions by effect and deciding rule, tokens refused by reason (docs/operations.md).
    let metrics: GatewayMetrics

    public init(store: StateStore, logger: Logger, metrics: GatewayMetrics = GatewayMetrics()) {
        self.store = store
        self.metrics = metrics
        self.logger = logger
        auditLog = AuditWriter(store: store, logger: logger)
    }

    public var isConfigured: Bool { wiring.withLock { $0 != nil } }

    /// Until this is called every command is refused (fail closed).
    public func configure(gate: CommandGate, site: PluginInstance) {
        wiring.withLock { $0 = Wiring(gate: gate, site: site) }
    }

    func handle(_ command: PluginCommand, respond: @escaping @Sendable (Int32, [UInt8]) -> Void) {
        guard let wiring = wiring.withLock({ $0 }) else {
            refuse(command, reason: "the command gate is not running", respond: respond)
            return
        }
        Task {
            let started = ContinuousClock.now
            guard let outcome = await decideAndAudit(command, gate: wiring.gate) else {
                respond(503, Self.body(status: 503, reason: "the audit log cannot be written; command refused"))
                return
            }
            guard outcome.effect == .allow, let deliverable = outcome.deliverable else {
                respond(403, outcome.refusalBody)
                return
            }
            let token = nextToken.add(1, ordering: .relaxed).newValue
            pending.withLock {
                $0[token] = Pending(
                    device: command.deviceID, name: outcome.commandName, decisionID: outcome.decisionID,
                    started: started, respond: respond)
            }
            let status = wiring.site.deliver(deliverable, token: token)
            guard status == .ok else {
                _ = pending.withLock { $0.removeValue(forKey: token) }
                let code: Int32 = status == .invalid ? 501 : 503
                let reason =
                    status == .invalid
                    ? "the site transport cannot deliver commands" : "the site broker is not reachable now"
                logger.warning(
                    "allowed command not delivered",
                    metadata: [
                        "device": "\(command.deviceID)", "command": "\(outcome.commandName)", "reason": "\(reason)",
                        "decision": "\(outcome.decisionID)",
                    ])
                respond(code, Self.body(status: code, reason: reason))
                return
            }
        }
    }

    /// Decides and makes the decision durable in the audit log: what happens between a command's
    /// arrival and its delivery. The audit row is written before anything reaches the device; a
    /// decision that cannot be audited is not carried out (nil: fail closed).
    public func decideAndAudit(_ command: PluginCommand, gate: CommandGate) async -> CommandGate.Outcome? {
        var outcome = await gate.decide(command)
        outcome.decisionID = Self.newDecisionID()
        guard await audit(command, outcome) else {
            refused.add(1, ordering: .relaxed)
            return nil
        }
        if outcome.effect == .deny { refused.add(1, ordering: .relaxed) }
        return outcome
    }

    /// The site transport's report on a delivery.
    func deliverResult(token: UInt64, status: Int32, body: [UInt8]) {
        guard let entry = pending.withLock({ $0.removeValue(forKey: token) }) else { return }
        let elapsed = ContinuousClock.now - entry.started
        logger.info(
            "command delivered",
            metadata: [
                "device": "\(entry.device)", "command": "\(entry.name)", "status": "\(status)",
                "decision": "\(entry.decisionID)",
                "ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)",
            ])
        entry.respond(status, body)
    }

    /// Refuses without a decision (no gate): still audited.
    func refuse(_ command: PluginCommand, reason: String, respond: @escaping @Sendable (Int32, [UInt8]) -> Void) {
        refused.add(1, ordering: .relaxed)
        var refusal = CommandGate.Outcome(
            effect: .deny, commandName: command.name, reason: reason, rules: [], caller: "", tenant: "",
            deliverable: nil)
        refusal.decisionID = Self.newDecisionID()
        let outcome = refusal
        // No task: the answer must not wait for a free thread of the cooperative pool.
        log(command, outcome)
        auditLog.append(record(command, outcome)) { _ in respond(403, outcome.refusalBody) }
    }

    /// One log line and one durable audit row; false if the row could not be written.
    private func audit(_ command: PluginCommand, _ outcome: CommandGate.Outcome) async -> Bool {
        log(command, outcome)
        return await auditLog.append(record(command, outcome), commandID: outcome.commandID)
    }

    private func log(_ command: PluginCommand, _ outcome: CommandGate.Outcome) {
        metrics.decision(effect: outcome.effect.rawValue, rule: outcome.decidingRule ?? "none")
        if let reason = outcome.tokenFailure { metrics.jwtFailure(reason: reason) }
        logger.log(
            level: outcome.effect == .allow ? .info : .notice,
            "command \(outcome.effect == .allow ? "allowed" : "denied")",
            metadata: [
                "device": "\(command.deviceID)", "kind": "\(Self.kind(command))", "command": "\(outcome.commandName)",
                "caller": "\(outcome.caller)", "tenant": "\(outcome.tenant)",
                "rules": "\(outcome.rules.joined(separator: "; "))", "reason": "\(outcome.reason)",
                "decision": "\(outcome.decisionID)",
            ])
    }

    private func record(_ command: PluginCommand, _ outcome: CommandGate.Outcome) -> AuditRecord {
        AuditRecord(
            timeMS: Int64(Date().timeIntervalSince1970 * 1000), deviceID: command.deviceID,
            commandKind: Self.kind(command), commandName: outcome.commandName, caller: outcome.caller,
            tenant: outcome.tenant, effect: outcome.effect.rawValue, rules: outcome.rules.joined(separator: "; "),
            reason: outcome.reason, decisionID: outcome.decisionID)
    }

    /// 16 hex digits, random: unique enough to join one decision's log lines and audit row
    /// across restarts, and it says nothing about the command.
    static func newDecisionID() -> String {
        let value = UInt64.random(in: 0...UInt64.max)
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func kind(_ command: PluginCommand) -> String {
        command.kind == .directMethod ? "direct-method" : "c2d-message"
    }

    static func body(status: Int32, reason: String) -> [UInt8] {
        let object: JSONValue = ["status": .int(status), "reason": .string(reason)]
        return Array(object.formatted(JSONFormat(sortsKeys: true)).utf8)
    }
}
