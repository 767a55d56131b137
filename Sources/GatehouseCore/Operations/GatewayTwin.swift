import FoundationEssentials
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import Logging
import StrictJSON
import Synchronization

/// The gateway in its own twin (docs/operations.md, "The gateway's twin"): gatehoused reports,
/// as reported properties of its own hub identity (the one DPS assigned it by TPM attestation),
/// its version, the rule set's generation and hash, the firewall's state, the outbox's depth,
/// its devices by state and its last errors — under one property, `gatehouse`.
///
/// Updated on change at a bounded rate: a document is built at most every `checkEvery` and only
/// once `minInterval` has passed since the last one sent; it is sent if it differs from that one
/// (or an hour has passed). A change is therefore seen in the twin within `minInterval` plus
/// `checkEvery`, and a busy outbox costs one patch a `minInterval`, not one a message.
///
/// The patch goes straight to the hub transport (`GH_MESSAGE_TWIN_REPORTED`), never through the
/// outbox: it is state, not telemetry — the latest one is all that matters, and one lost with
/// the link is replaced by the next. Its token has the high bit set, which the relay never
/// hands out (outbox seqs are positive), so the relay ignores its acknowledgement.
///
/// With `[twin] health_telemetry`, the same document also goes out as a telemetry message of
/// that identity at that interval (property `gatehouse-kind=health`, JSON): a hub route can keep
/// the history the twin does not. It takes the same direct path, so a gateway that is offline
/// sends none for that time rather than a backlog of stale ones.
public final class GatewayTwin: Sendable {
    let deviceID: String
    let hub: PluginInstance
    let store: StateStore
    let telemetry: TelemetryRelay
    let metrics: GatewayMetrics
    let rules: (@Sendable () -> GatewayMetrics.RulesSummary?)?
    let firewall: (@Sendable () -> GatewayMetrics.FirewallCounters?)?
    let firewallConfigured: Bool
    let reports: Bool
    let minInterval: Duration
    let checkEvery: Duration
    let healthEvery: Duration?
    let logger: Logger

    private struct State {
        var lastSent: JSONValue?
        var sentAt: ContinuousClock.Instant?
        var checkedAt: ContinuousClock.Instant?
        var patches = 0
        var healthSentAt: ContinuousClock.Instant?
    }
    private let state = Mutex(State())
    private let nextToken = Atomic<UInt64>(0)

    init(
        deviceID: String, hub: PluginInstance, store: StateStore, telemetry: TelemetryRelay, metrics: GatewayMetrics,
        rules: (@Sendable () -> GatewayMetrics.RulesSummary?)?,
        firewall: (@Sendable () -> GatewayMetrics.FirewallCounters?)?, firewallConfigured: Bool,
        settings: GatewayConfig.Twin, logger: Logger
    ) {
        self.deviceID = deviceID
        self.hub = hub
        self.store = store
        self.telemetry = telemetry
        self.metrics = metrics
        self.rules = rules
        self.firewall = firewall
        self.firewallConfigured = firewallConfigured
        reports = settings.report
        minInterval = settings.minInterval
        checkEvery = min(settings.minInterval, .seconds(5))
        healthEvery = settings.healthTelemetry
        self.logger = logger
    }

    /// How many patches were handed to the hub transport (tests, status).
    public var patchesSent: Int { state.withLock { $0.patches } }

    /// Called every second by the "gateway twin" service.
    func tick() {
        let now = ContinuousClock.now
        if reports { reportIfDue(now) }
        if let healthEvery { sendHealthIfDue(now, every: healthEvery) }
    }

    /// Health telemetry: the document as a telemetry message, once every `every` while the
    /// gateway's link is up.
    private func sendHealthIfDue(_ now: ContinuousClock.Instant, every: Duration) {
        let due = state.withLock { state in state.healthSentAt.map { now - $0 >= every } ?? true }
        guard due, metrics.hubLinkState(deviceID) == "up" else { return }
        let message = PluginMessage(
            deviceID: deviceID, payload: Array(document().formatted(JSONFormat(sortsKeys: true)).utf8),
            properties: [.init("gatehouse-kind", "health"), .init("$.ct", "application/json"), .init("$.ce", "utf-8")],
            createdUnixMS: TelemetryRelay.nowMS())
        guard send(message, what: "health telemetry") else { return }
        state.withLock { $0.healthSentAt = now }
    }

    private func reportIfDue(_ now: ContinuousClock.Instant) {
        let due = state.withLock { state -> Bool in
            if let sentAt = state.sentAt, now - sentAt < minInterval { return false }
            if let checkedAt = state.checkedAt, now - checkedAt < checkEvery { return false }
            state.checkedAt = now
            return true
        }
        guard due, metrics.hubLinkState(deviceID) == "up" else { return }
        let document = self.document()
        let (changed, stale) = state.withLock { state in
            (state.lastSent != document, state.sentAt.map { now - $0 >= .seconds(3600) } ?? true)
        }
        guard changed || stale else { return }
        var message = PluginMessage(
            deviceID: deviceID, payload: Array(document.formatted(JSONFormat(sortsKeys: true)).utf8))
        message.isTwinReported = true
        guard send(message, what: "reported properties") else { return }
        state.withLock { state in
            state.lastSent = document
            state.sentAt = now
            state.patches += 1
        }
    }

    /// Hands one message of the gateway's own identity to the hub transport, with a token the
    /// relay never uses (high bit set); false (logged) when the transport does not take it now.
    private func send(_ message: PluginMessage, what: String) -> Bool {
        let token = (UInt64(1) << 63) | nextToken.add(1, ordering: .relaxed).newValue
        let status = hub.send(message, token: token)
        guard status == .ok else {
            logger.warning(
                "cannot send the gateway's \(what) now; tries again",
                metadata: ["device": "\(deviceID)", "status": "\(status)"])
            return false
        }
        logger.debug("gateway \(what) sent", metadata: ["device": "\(deviceID)"])
        return true
    }

    /// The reported-properties patch: everything under `gatehouse`.
    func document() -> JSONValue {
        let snapshot = telemetry.snapshot
        var gatehouse: JSONObject = [
            "version": .string(GatehouseVersion.current),
            "outbox": ["messages": .int(snapshot.outboxMessages), "bytes": .int(snapshot.outboxBytes)],
        ]
        if let rules = rules?() {
            gatehouse["rules"] = [
                "generation": .int(rules.generation), "sha256": .string(rules.sha256),
                "commandRules": .int(rules.commandRules), "telemetryRules": .int(rules.telemetryRules),
            ]
        } else {
            gatehouse["rules"] = .null
        }
        if firewallConfigured {
            if let counters = firewall?() {
                gatehouse["firewall"] = [
                    "configured": true, "applied": .bool(counters.applied),
                    "droppedPackets": .int(counters.dropsByReason.values.reduce(0) { $0 + $1.packets }),
                ]
            } else {
                gatehouse["firewall"] = ["configured": true, "applied": false]
            }
        } else {
            gatehouse["firewall"] = ["configured": false]
        }
        var devices: JSONObject = ["up": 0, "connecting": 0, "down": 0, "removed": 0, "provisioningFailed": 0]
        if let records = try? store.devices() {
            var counts: [String: Int] = [:]
            for record in records where record.id != deviceID {
                if record.isRemoved {
                    counts["removed", default: 0] += 1
                    continue
                }
                let link = ["up", "connecting"].contains(record.linkState) ? record.linkState : "down"
                counts[link, default: 0] += 1
                if record.provisioning.hasPrefix("failed") { counts["provisioningFailed", default: 0] += 1 }
            }
            for (key, count) in counts { devices[key] = .int(count) }
        }
        gatehouse["devices"] = .object(devices)
        gatehouse["lastErrors"] = .array(
            RecentErrors.shared.all.map { ["timeMs": .int($0.timeMS), "message": .string($0.message)] })
        return ["gatehouse": .object(gatehouse)]
    }
}
