import FoundationEssentials
import GateRules
import GatehouseAuth
import GatehousePluginKit
import GatehouseStore
import Logging
import StrictJSON
import Synchronization

/// The command gate: decides whether a cloud-to-device command may reach its leaf device.
///
///     the caller's token (C2D property / method payload field)
///       → verified (TokenVerifier: signature, issuer, audience, tenant, lifetime)
///       → not a replay (the command id, once per caller and device within the token's lifetime;
///         persisted with the audit row, bounded per caller: `ReplayLedger`)
///       → the rule policy (command, token claims, device, gateway, now)
///       → allow: the command without token and id, for delivery; deny: a 403 body naming why
///
/// Fail closed: a missing token, a token that does not verify, a missing id, a caller whose
/// share of the replay ledger is full, no rules or no `[auth]` — each denies. The reason never
/// contains the token.
public final class CommandGate: Sendable {
    /// What the gate decided about one command.
    public struct Outcome: Sendable {
        public enum Effect: String, Sendable { case allow, deny }
        public var effect: Effect
        /// The name rules saw (`command.name`).
        public var commandName: String
        /// Why: the rule's `because`, the verification failure, or the gate's own reason.
        public var reason: String
        /// The deciding rules, "name (file:line)".
        public var rules: [String]
        /// The caller (`oid`, else `sub`) and tenant of a verified token; "" otherwise.
        public var caller: String
        public var tenant: String
        /// The command to deliver (token and id removed); nil when denied.
        public var deliverable: PluginCommand?
        /// The command id this decision accepted (allowed or denied by the rules): the audit
        /// writer persists it with the decision's row, so it is durable before any delivery.
        public var commandID: CommandIDRecord?
        /// The name of the first deciding rule (nil: refused before the rules ran), and why the
        /// caller's token was refused (`AuthError.Code`; nil: it was not): the metrics' labels.
        public var decidingRule: String?
        public var tokenFailure: String?
        /// The decision's id: in every log line about it and in its audit row, which it joins
        /// (`gatehouse audit --decision ID`). Given by the command path.
        public var decisionID = ""

        /// The JSON a refused method gets with status 403 (members sorted by name).
        public var refusalBody: [UInt8] {
            var body: JSONObject = ["status": 403, "effect": "deny", "reason": .string(reason)]
            if !rules.isEmpty { body["rules"] = .array(rules.map(JSONValue.string)) }
            return Array(JSONValue.object(body).formatted(JSONFormat(sortsKeys: true)).utf8)
        }
    }

    let verifier: TokenVerifier?
    let rules: PolicyHandle?
    let settings: GatewayConfig.Auth
    let store: StateStore
    let gateway: Value
    let replay: ReplayLedger
    let logger: Logger
    let now: @Sendable () -> Date

    /// - Parameters:
    ///   - verifier: nil when `[auth]` is not configured: every command is then denied.
    ///   - rules: nil when `[gateway] rules_dir` is not set: every command is then denied.
    ///   - replayCapacity: each caller's share of the replay ledger; nil: `[auth] replay_max_per_caller`.
    public init(
        verifier: TokenVerifier?, rules: PolicyHandle?, settings: GatewayConfig.Auth?, gateway: GatewayConfig.Gateway,
        store: StateStore, logger: Logger, replayCapacity: Int? = nil,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.verifier = settings == nil ? nil : verifier
        self.rules = rules
        self.settings = settings ?? GatewayConfig.Auth(audiences: [])
        self.store = store
        self.gateway = .map([
            "id": .string(gateway.id), "tenant": .string(gateway.tenant), "site": .string(gateway.site),
            "tags": .map([:]),
        ])
        self.replay = ReplayLedger(maxPerCaller: replayCapacity ?? self.settings.replayMaxPerCaller)
        self.logger = logger
        self.now = now
        // The live command ids, read now rather than at the first command (if the database
        // cannot be read, `decide` tries again and refuses until it can).
        let startMS = Int64(now().timeIntervalSince1970 * 1000)
        _ = replay.loadIfNeeded { try store.liveCommandIDs(nowMS: startMS) }
    }

    /// Device tags and model, cached for a second: a registry read costs more than the rules,
    /// and tags change rarely (`gatehouse devices tag` takes effect within a second).
    private let deviceCache = Mutex<[String: (metadata: DeviceMetadata, until: Date)]>([:])

    private func deviceMetadata(_ deviceID: String, now: Date) -> DeviceMetadata? {
        if let cached = deviceCache.withLock({ $0[deviceID] }), cached.until > now { return cached.metadata }
        guard let metadata = try? store.deviceMetadata(deviceID) ?? DeviceMetadata() else { return nil }
        deviceCache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll(keepingCapacity: true) }
            cache[deviceID] = (metadata, now.addingTimeInterval(1))
        }
        return metadata
    }

    public func decide(_ command: PluginCommand) async -> Outcome {
        var outcome = Outcome(
            effect: .deny, commandName: command.kind == .directMethod ? command.name : "", reason: "", rules: [],
            caller: "", tenant: "", deliverable: nil)
        func deny(_ reason: String) -> Outcome {
            outcome.reason = reason
            return outcome
        }
        guard let verifier else { return deny("no [auth] section: the gateway cannot verify callers") }
        guard let rules else { return deny("no rules are loaded ([gateway] rules_dir)") }

        // 1. Take the token and the command id out of the command.
        let parsed: ParsedCommand
        switch ParsedCommand.parse(command, settings: settings) {
        case .failure(let problem): return deny(problem.reason)
        case .success(let value): parsed = value
        }
        outcome.commandName = parsed.name

        // 2. The token.
        guard let token = parsed.token else {
            return deny(
                command.kind == .c2dMessage
                    ? "no caller token: expected the property `\(settings.c2dTokenProperty): Bearer <jwt>`"
                    : "no caller token: expected the payload field `\(settings.methodTokenField): \"Bearer <jwt>\"`")
        }
        let verified: VerifiedToken
        switch await verifier.verify(token) {
        case .failure(let error):
            outcome.tokenFailure = error.code.rawValue
            return deny("token refused: \(error)")
        case .success(let value): verified = value
        }
        outcome.caller = verified.objectID ?? verified.subject
        outcome.tenant = verified.tenant ?? ""

        // 3. Replays: the same id from the same caller for the same device while the token
        // could still be used. Recorded before the rules run (a command the rules deny cannot
        // be replayed later when they would allow it), against the caller's own share only.
        let current = now()
        if let id = parsed.id {
            let nowMS = Int64((current.timeIntervalSince1970 * 1000).rounded(.down))
            let expiresMS = Int64((verified.expiresAt.timeIntervalSince1970 * 1000).rounded(.up))
            let untilMS = expiresMS + settings.clockSkew.components.seconds * 1000
            guard replay.loadIfNeeded({ try store.liveCommandIDs(nowMS: nowMS) }) else {
                return deny("cannot read the replay ledger (the state database); command refused")
            }
            let caller = CallerKey.of(verified)
            switch replay.record(caller: caller, device: command.deviceID, id: id, untilMS: untilMS, nowMS: nowMS) {
            case .fresh:
                outcome.commandID = CommandIDRecord(
                    caller: caller, deviceID: command.deviceID, commandID: id, expiresMS: untilMS)
            case .replayed: return deny("replayed command: id \(id) was already used for \(command.deviceID)")
            case .callerFull:
                return deny(
                    "replay.caller-quota: this caller already has \(replay.maxPerCaller) command ids within their "
                        + "tokens' lifetime ([auth] replay_max_per_caller); its commands are refused until some expire")
            }
        } else if settings.requireCommandID {
            return deny(
                command.kind == .c2dMessage
                    ? "no command id: expected the property `\(settings.c2dIDProperty)` (replay protection)"
                    : "no command id: expected the payload field `\(settings.methodIDField)` (replay protection)")
        }

        // 4. The rules.
        guard let device = deviceMetadata(command.deviceID, now: current) else {
            return deny("cannot read the device registry")
        }
        guard !device.removed else { return deny("device \(command.deviceID) was removed (gatehouse devices remove)") }
        let input = CommandInput(
            command: parsed.ruleValue(kind: command.kind),
            token: Value(verified.claims),
            device: .map([
                "id": .string(command.deviceID), "model": .string(device.model),
                "tags": .map(
                    device.tags.mapValues { tag in
                        switch tag {
                        case .string(let value): .string(value)
                        case .number(let value): .number(value)
                        case .bool(let value): .bool(value)
                        }
                    }),
            ]),
            gateway: gateway,
            now: .now(unixSeconds: Int64(current.timeIntervalSince1970)))
        let decision = rules.decide(input)
        for fault in decision.faults {
            logger.warning("a rule failed while deciding (it could not allow)", metadata: ["fault": "\(fault)"])
        }
        outcome.rules = decision.rules.map { "\($0.name) (\($0.file):\($0.line))" }
        outcome.decidingRule = decision.rules.first?.name
        if decision.effect == .allow {
            outcome.effect = .allow
            outcome.reason = decision.reason ?? "allowed by the rules"
            outcome.deliverable = parsed.deliverable
        } else {
            outcome.reason =
                decision.reason
                ?? (decision.isDefault
                    ? "no rule allows \(parsed.name.isEmpty ? "this command" : "command \"\(parsed.name)\"")"
                    : "denied by the rules")
        }
        return outcome
    }
}

/// A command with its token and id taken out.
struct ParsedCommand: Sendable {
    var name: String
    var token: String?
    var id: String?
    /// The payload as rules see it (`command.args`): JSON if it parses, else its text.
    var args: Value
    var properties: [String: String]
    var deliverable: PluginCommand

    struct Problem: Error {
        var reason: String
    }

    /// The longest command id accepted, in UTF-8 bytes (IoT Hub's message ids have at most 128
    /// characters): what one caller can make the replay ledger hold stays small.
    static let maxIDBytes = 256

    /// Whether `key` names the token: compared without regard to case, so that `Authorization`
    /// or `AUTHORIZATION` are taken out like `authorization` — a device must never receive a
    /// caller's token, whatever its spelling.
    static func isTokenKey(_ key: String, _ configured: String) -> Bool {
        key.lowercased() == configured.lowercased()
    }

    static func checkID(_ id: String?) -> Problem? {
        guard let id, id.utf8.count > maxIDBytes else { return nil }
        return Problem(reason: "the command id is longer than \(maxIDBytes) bytes")
    }

    static func parse(_ command: PluginCommand, settings: GatewayConfig.Auth) -> Result<ParsedCommand, Problem> {
        switch command.kind {
        case .c2dMessage:
            var token: String?
            var id: String?
            var name = ""
            var kept: [PluginMessage.Property] = []
            for property in command.properties {
                if isTokenKey(property.key, settings.c2dTokenProperty) {
                    // Two spellings (`authorization`, `Authorization`): which one counts is
                    // ambiguous, so neither does (fail closed).
                    guard token == nil else {
                        return .failure(
                            Problem(
                                reason: "ambiguous caller token: more than one `\(settings.c2dTokenProperty)` "
                                    + "property (compared without regard to case)"))
                    }
                    guard let bearer = TokenVerifier.bearerToken(fromAuthorization: property.value) else {
                        return .failure(Problem(reason: "the caller token is not of the form `Bearer <jwt>`"))
                    }
                    token = bearer
                    continue  // never delivered to the device
                }
                if property.key == settings.c2dIDProperty { id = property.value }
                if property.key == settings.c2dNameProperty { name = property.value }
                kept.append(property)
            }
            if let problem = checkID(id) { return .failure(problem) }
            var deliverable = command
            deliverable.properties = kept
            return .success(
                ParsedCommand(
                    name: name, token: token, id: id.flatMap { $0.isEmpty ? nil : $0 },
                    args: Self.args(command.payload),
                    properties: Dictionary(kept.map { ($0.key, $0.value) }) { a, _ in a },
                    deliverable: deliverable))
        case .directMethod:
            let object: JSONObject
            do {
                guard let parsed = try JSONValue(parsing: command.payload).objectValue else {
                    return .failure(
                        Problem(reason: "the method payload is not a JSON object (it must carry the caller token)"))
                }
                object = parsed
            } catch {
                // The parse error names the byte and the rule, never the payload's text.
                return .failure(
                    Problem(reason: "the method payload is not valid JSON (it must carry the caller token): \(error)"))
            }
            var token: String?
            let tokenKeys = object.keys.filter { isTokenKey($0, settings.methodTokenField) }
            if tokenKeys.count > 1 {
                // Two spellings (`authorization`, `Authorization`): which one counts is
                // ambiguous, so neither does (fail closed).
                return .failure(
                    Problem(
                        reason: "ambiguous caller token: more than one `\(settings.methodTokenField)` field "
                            + "(compared without regard to case)"))
            }
            if let key = tokenKeys.first, let value = object[key] {
                guard let text = value.stringValue, let bearer = TokenVerifier.bearerToken(fromAuthorization: text)
                else {
                    return .failure(Problem(reason: "the caller token is not of the form `Bearer <jwt>`"))
                }
                token = bearer
            }
            var id: String?
            if let value = object[settings.methodIDField] {
                guard let text = value.stringValue, !text.isEmpty else {
                    return .failure(
                        Problem(reason: "the command id `\(settings.methodIDField)` must be a non-empty string"))
                }
                id = text
            }
            if let problem = checkID(id) { return .failure(problem) }
            var rest = object
            for key in tokenKeys { rest[key] = nil }
            rest[settings.methodIDField] = nil
            // The rest as the caller wrote it: members in their order, numbers exact.
            var deliverable = command
            deliverable.payload = JSONValue.object(rest).utf8Bytes
            return .success(
                ParsedCommand(
                    name: command.name, token: token, id: id, args: Value(rest), properties: [:],
                    deliverable: deliverable))
        }
    }

    static func args(_ payload: [UInt8]) -> Value {
        if payload.isEmpty { return .null }
        if let json = try? JSONValue(parsing: payload) { return Value(json) }
        return .string(String(decoding: payload, as: UTF8.self))
    }

    func ruleValue(kind: PluginCommand.Kind) -> Value {
        var fields: [String: Value] = [
            "name": .string(name), "kind": .string(kind == .directMethod ? "method" : "c2d"), "args": args,
            "properties": .map(properties.mapValues(Value.string)),
        ]
        if let id { fields["id"] = .string(id) }
        return .map(fields)
    }
}

extension Value {
    /// A JSON claim or payload as the rule language's value (rules see numbers as 64-bit
    /// floating point: docs/rules.md).
    init(_ json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .number(let value): self = .number(value.doubleValue)
        case .string(let value): self = .string(value)
        case .array(let values): self = .list(values.map(Value.init))
        case .object(let members): self.init(members)
        }
    }

    /// A JSON object (token claims, method arguments) as a map.
    init(_ object: JSONObject) {
        self = .map(Dictionary(uniqueKeysWithValues: object.map { ($0.key, Value($0.value)) }))
    }
}
