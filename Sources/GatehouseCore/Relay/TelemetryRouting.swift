import FoundationEssentials
import GateRules
import GatehousePluginKit
import GatehouseStore
import Logging
import Synchronization

/// The destinations the daemon knows. A rule set is checked against them when it loads (a
/// route to anything else stops the start, or is refused on reload) — docs/rules.md, "In the
/// daemon".
public enum TelemetryDestination {
    /// The hub, through the outbox: priority lanes, time to live.
    public static let upstream = "upstream"
    /// The gateway's own archive (`[archive]`), exported by `gatehouse archive export`.
    public static let archive = "archive"
    public static let all: Set<String> = [upstream, archive]
}

/// One policy's telemetry rules, prepared for the relay's ingest: which inputs to build, and
/// where each rule's counts go. Built once per policy (a reload swaps in another).
final class TelemetryRouting: Sendable {
    let policy: Policy
    let reads: TelemetryReads
    let gateway: Value
    /// The rules in policy order; tallies are indexed like this, `rules.count` being the
    /// default (no rule routes the message: dropped).
    let rules: [TelemetryRuleInfo]
    let routesUpstream: [Bool]
    let routesArchive: [Bool]
    /// Whether a decision can differ between messages; if not, one decision serves a batch.
    let perMessage: Bool

    init(policy: Policy, gateway: Value) {
        self.policy = policy
        self.reads = policy.telemetryReads
        self.gateway = gateway
        let rules = policy.telemetryRules
        self.rules = rules
        routesUpstream = rules.map { $0.routes.contains { $0.destination == TelemetryDestination.upstream } }
        routesArchive = rules.map { $0.routes.contains { $0.destination == TelemetryDestination.archive } }
        perMessage = !reads.isDisjoint(with: TelemetryReads.message.union([.device, .now]))
    }

    /// What the rules decided for a batch: what goes into the outbox and the archive (in one
    /// transaction), and the per-rule counts, applied once that transaction committed.
    struct Batch {
        var records: [OutboxRecord] = []
        var archived: [ArchiveRecord] = []
        /// Per device: the messages kept (outbox or archive, each once), for the registry.
        var received: [String: (count: Int, lastMS: Int64)] = [:]
        var tally: Tally
    }

    /// Counts per rule (indexed like `rules`, plus the default).
    struct Tally {
        var routed: [Int]
        var archived: [Int]
        var dropped: [Int]
        var failed: [Int]
        /// Messages no destination took (a drop, or no route).
        var droppedMessages = 0
        var archivedMessages = 0

        init(rules: Int) {
            routed = Array(repeating: 0, count: rules + 1)
            archived = routed
            dropped = routed
            failed = routed
        }
    }

    /// Routes a batch. Decisions are made here, before the relay takes its `book` lock, into one
    /// scratch that the whole batch reuses (no allocation a decision).
    func route(_ messages: [PluginMessage], nowMS: Int64, facts: DeviceFacts) -> Batch {
        var batch = Batch(tally: Tally(rules: rules.count))
        batch.records.reserveCapacity(messages.count)
        let now: Value = reads.contains(.now) ? .now(unixSeconds: nowMS / 1000) : .null
        var scratch = RouteScratch()
        var verdict = Verdict()
        if !perMessage {
            policy.route(TelemetryInput(message: .map([:]), gateway: gateway, now: now), into: &scratch)
            count(scratch, times: messages.count, into: &batch.tally)
            verdict = Verdict(scratch, rules: rules)
        }
        for message in messages {
            if perMessage {
                policy.route(input(for: message, now: now, facts: facts), into: &scratch)
                count(scratch, times: 1, into: &batch.tally)
                verdict = Verdict(scratch, rules: rules)
            }
            let createdMS = message.createdUnixMS == 0 ? nowMS : message.createdUnixMS
            var kept = false
            if let upstream = verdict.upstream {
                let properties = message.properties.map { OutboxProperty($0.key, $0.value) }
                batch.records.append(
                    OutboxRecord(
                        deviceID: message.deviceID, properties: properties, payload: message.payload,
                        createdMS: createdMS, enqueuedMS: nowMS, priority: upstream.priority,
                        expiresMS: upstream.ttlMS > 0 ? nowMS + upstream.ttlMS : 0, ttlRule: upstream.ttlRule))
                kept = true
            }
            if let rule = verdict.archiveRule {
                batch.archived.append(
                    ArchiveRecord(
                        timeMS: nowMS, createdMS: createdMS, deviceID: message.deviceID, topic: message.topic,
                        properties: message.properties.map { OutboxProperty($0.key, $0.value) },
                        payload: message.payload, rule: rule))
                batch.tally.archivedMessages += 1
                kept = true
            }
            if kept {
                batch.received[message.deviceID, default: (0, nowMS)].count += 1
            } else {
                batch.tally.droppedMessages += 1
            }
        }
        return batch
    }

    /// A decision as the relay applies it.
    struct Verdict {
        var upstream: (priority: OutboxPriority, ttlMS: Int64, ttlRule: String?)?
        var archiveRule: String?

        init() {}

        init(_ decision: RouteScratch, rules: [TelemetryRuleInfo]) {
            for (route, origin) in zip(decision.routes, decision.origins) {
                switch route.destination {
                case TelemetryDestination.upstream:
                    var ttlMS: Int64 = 0
                    if let ttl = route.ttl {
                        ttlMS = ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000
                    }
                    upstream = (OutboxPriority(route.priority), ttlMS, route.ttl == nil ? nil : rules[origin].rule.name)
                case TelemetryDestination.archive:
                    archiveRule = rules[origin].rule.name
                default:
                    break  // the rule set was checked against the known destinations
                }
            }
        }
    }

    private func count(_ decision: RouteScratch, times: Int, into tally: inout Tally) {
        for fault in decision.faults { tally.failed[fault.rule] += times }
        if decision.dropped {
            if decision.deciding.isEmpty {
                tally.dropped[rules.count] += times
            } else {
                for position in decision.deciding { tally.dropped[position] += times }
            }
            return
        }
        for position in decision.deciding {
            if routesUpstream[position] { tally.routed[position] += times }
            if routesArchive[position] { tally.archived[position] += times }
        }
    }

    /// The rules' inputs for one message: only what they read (docs/rules.md, "In the daemon").
    func input(for message: PluginMessage, now: Value, facts: DeviceFacts) -> TelemetryInput {
        var fields: [String: Value] = [:]
        if reads.contains(.topic), !message.topic.isEmpty { fields["topic"] = .string(message.topic) }
        if reads.contains(.size) { fields["size"] = .number(Double(message.payload.count)) }
        if !reads.isDisjoint(with: [.properties, .contentType]) {
            var properties: [String: Value] = [:]
            properties.reserveCapacity(message.properties.count)
            for property in message.properties where properties[property.key] == nil {
                properties[property.key] = .string(property.value)
            }
            if reads.contains(.properties) { fields["properties"] = .map(properties) }
            if reads.contains(.contentType), let type = properties["$.ct"] { fields["content_type"] = type }
        }
        if reads.contains(.body), let text = String(validating: message.payload, as: UTF8.self),
            let body = try? Value(json: text)
        {
            fields["body"] = body
        }
        return TelemetryInput(
            message: .map(fields), device: reads.contains(.device) ? facts.value(for: message.deviceID) : .null,
            gateway: gateway, now: now)
    }
}

extension OutboxPriority {
    init(_ priority: RoutePriority) {
        switch priority {
        case .low: self = .low
        case .normal: self = .normal
        case .high: self = .high
        }
    }
}

/// What telemetry rules read of a device (`device.id`, `device.model`, `device.tags`), kept in
/// memory: routing never reads the registry. Refreshed from it every 10 s and on SIGHUP, so
/// `gatehouse devices tag` reaches the telemetry rules within 10 s.
final class DeviceFacts: Sendable {
    private struct State {
        var metadata: [String: DeviceMetadata] = [:]
        var values: [String: Value] = [:]
    }
    private let state = Mutex(State())

    func value(for deviceID: String) -> Value {
        state.withLock { state in
            if let value = state.values[deviceID] { return value }
            var fields: [String: Value] = ["id": .string(deviceID)]
            if let metadata = state.metadata[deviceID] {
                if !metadata.model.isEmpty { fields["model"] = .string(metadata.model) }
                fields["tags"] = .map(
                    metadata.tags.mapValues { tag in
                        switch tag {
                        case .string(let value): .string(value)
                        case .number(let value): .number(value)
                        case .bool(let value): .bool(value)
                        }
                    })
            }
            let value = Value.map(fields)
            if state.values.count >= 100_000 { state.values.removeAll(keepingCapacity: true) }
            state.values[deviceID] = value
            return value
        }
    }

    func replace(_ metadata: [String: DeviceMetadata]) {
        state.withLock { state in
            guard state.metadata != metadata else { return }
            state.metadata = metadata
            state.values.removeAll(keepingCapacity: true)
        }
    }
}

/// Each telemetry rule's counts since the daemon started, by kind and name (a reload may drop
/// a rule; its counts stay). `gatehouse rules stats` reads them from the state database.
final class TelemetryRuleCounters: Sendable {
    struct Key: Hashable {
        let kind: String
        let rule: String
    }
    private struct State {
        var table: [Key: TelemetryRuleStats] = [:]
        /// Bumped by every change, so the heartbeat writes only when something changed.
        var generation = 0
    }
    private let state = Mutex(State())
    static let defaultRule = "(no rule routes the message)"

    /// Makes sure every rule of a policy has a row, so that rules that never matched show too.
    func register(_ routing: TelemetryRouting) {
        state.withLock { state in
            for info in routing.rules {
                let key = Key(kind: info.drops ? "drop" : "route", rule: info.rule.name)
                if state.table[key] == nil {
                    state.table[key] = TelemetryRuleStats(
                        kind: key.kind, rule: key.rule, file: info.rule.file, line: info.rule.line)
                    state.generation += 1
                }
            }
        }
    }

    func add(_ tally: TelemetryRouting.Tally, from routing: TelemetryRouting) {
        state.withLock { state in
            for position in 0...routing.rules.count {
                let routed = tally.routed[position]
                let archived = tally.archived[position]
                let dropped = tally.dropped[position]
                let failed = tally.failed[position]
                guard routed + archived + dropped + failed > 0 else { continue }
                let key: Key
                var file = ""
                var line = 0
                if position == routing.rules.count {
                    key = Key(kind: "default", rule: Self.defaultRule)
                } else {
                    let info = routing.rules[position]
                    key = Key(kind: info.drops ? "drop" : "route", rule: info.rule.name)
                    file = info.rule.file
                    line = info.rule.line
                }
                var stats =
                    state.table[key] ?? TelemetryRuleStats(kind: key.kind, rule: key.rule, file: file, line: line)
                if position < routing.rules.count {
                    stats.file = file
                    stats.line = line
                }
                stats.routed += routed
                stats.archived += archived
                stats.dropped += dropped
                stats.failed += failed
                state.table[key] = stats
            }
            state.generation += 1
        }
    }

    /// Messages whose time to live ran out, by the rule that gave it.
    func expired(_ rules: [String?]) {
        guard !rules.isEmpty else { return }
        state.withLock { state in
            for rule in rules {
                guard let rule else { continue }
                let key = Key(kind: "route", rule: rule)
                state.table[key, default: TelemetryRuleStats(kind: "route", rule: rule)].expired += 1
            }
            state.generation += 1
        }
    }

    var generation: Int { state.withLock { $0.generation } }

    var snapshot: [TelemetryRuleStats] {
        state.withLock { state in
            state.table.values.sorted { a, b in
                if (a.kind == "default") != (b.kind == "default") { return b.kind == "default" }
                return (a.file, a.line, a.rule) < (b.file, b.line, b.rule)
            }
        }
    }
}

/// The archive's budget (`[archive]`): what `route telemetry … to archive` keeps, pruned by
/// age and size by the "archive pruning" service.
public struct ArchivePolicy: Sendable, Equatable {
    public var maxBytes: Int = 256 * 1024 * 1024
    public var maxAge: Duration = .seconds(7 * 24 * 3600)

    public init() {}
}

/// Keeps the archive within its budget. Its size is counted in memory (the archive is read
/// once, at the first pruning), so pruning is one indexed read when nothing is due.
final class ArchiveKeeper: Sendable {
    private struct State {
        var policy: ArchivePolicy
        var messages = 0
        var bytes = 0
        var counted = false
    }
    private let state: Mutex<State>
    let store: StateStore
    let logger: Logger

    init(store: StateStore, policy: ArchivePolicy, logger: Logger) {
        self.store = store
        self.logger = logger
        state = Mutex(State(policy: policy))
    }

    func update(_ policy: ArchivePolicy) { state.withLock { $0.policy = policy } }

    func added(messages: Int, bytes: Int) {
        state.withLock { state in
            state.messages += messages
            state.bytes += bytes
        }
    }

    var totals: (messages: Int, bytes: Int) { state.withLock { ($0.messages, $0.bytes) } }

    /// Deletes what is past the age or size budget.
    func prune(nowMS: Int64) {
        do {
            if !state.withLock({ $0.counted }) {
                let totals = try store.archiveTotals()
                state.withLock { state in
                    state.messages = totals.messages
                    state.bytes = totals.bytes
                    state.counted = true
                }
            }
            let (policy, bytes) = state.withLock { ($0.policy, $0.bytes) }
            let cutoff = nowMS - Int64(policy.maxAge.components.seconds) * 1000
            let pruned = try store.pruneArchive(olderThan: cutoff, freeing: max(0, bytes - policy.maxBytes))
            guard pruned.messages > 0 else { return }
            state.withLock { state in
                state.messages -= pruned.messages
                state.bytes -= pruned.bytes
            }
            logger.info(
                "archive pruned to its budget",
                metadata: [
                    "messages": "\(pruned.messages)", "bytes": "\(pruned.bytes)", "max_bytes": "\(policy.maxBytes)",
                    "max_age": "\(policy.maxAge)",
                ])
        } catch {
            logger.error("cannot prune the archive", metadata: ["error": "\(error)"])
        }
    }
}
