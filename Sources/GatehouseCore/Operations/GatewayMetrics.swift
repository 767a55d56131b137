import FoundationEssentials
import GatehouseStore
import Metrics
import Prometheus
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The gateway's Prometheus metrics (docs/operations.md, "Metrics"): one registry a gateway,
/// every name registered here once, with its help text, so that the exposition is the same
/// whoever records first (swift-prometheus stops the process when one name is registered twice
/// with different help) and `promtool check metrics` finds nothing to lint.
///
/// Two ways in, chosen by how often an event happens:
/// - rare events (a command decision, a token refused, a reload, a link change, a signature, a
///   dead letter, a registration) are recorded where they happen, through the methods below;
/// - the telemetry path's counts are not touched on the hot path at all: the relay keeps its
///   own atomic counters (which it kept before metrics existed), and `collect` moves what they
///   gained since the last scrape into the Prometheus counters. With no scraper, the relay does
///   exactly the work it did before (docs/benchmarks.md, "Metrics on and off").
///
/// Labels are bounded sets: transports, lanes, reasons, effects and rule names (which the
/// operator writes); never a device id.
public final class GatewayMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// The plugin names of `[site]` and `[hub]`: the `transport` label.
    private let transports = Mutex<(site: String, hub: String)>(("", ""))
    /// What the synced counters had reached at the last `collect`.
    private let synced = Mutex<[String: Double]>([:])
    /// Where `collect` reads the state it reports (set by `Gateway`).
    private let sources = Mutex<Sources?>(nil)
    let startedUnixS = Date().timeIntervalSince1970

    /// Each upstream link's last state, and the devices whose link was up once (a later up is a
    /// reconnect).
    private let links = Mutex<(states: [String: String], everUp: Set<String>)>(([:], []))
    private let siteLinkUp = Atomic<Int>(0)
    /// The loops systemd's watchdog watches (`SystemdService`); they beat whether or not metrics
    /// are served.
    public let liveness = Liveness()

    public struct Sources: Sendable {
        var telemetry: TelemetryRelay
        var store: StateStore
        var rules: (@Sendable () -> RulesSummary?)?
        var firewall: (@Sendable () -> FirewallCounters?)?
    }

    /// What the rule-set gauges report.
    public struct RulesSummary: Sendable, Equatable {
        public var generation: Int
        public var sha256: String
        public var commandRules: Int
        public var telemetryRules: Int
    }

    /// The firewall plugin's drop counters by reason, and whether what is applied still matches.
    public struct FirewallCounters: Sendable {
        public var dropsByReason: [String: (packets: Int, bytes: Int)]
        public var applied: Bool
    }

    public init() {
        registry = PrometheusCollectorRegistry()
        registry.makeGauge(descriptor: Self.buildInfo, labels: [("version", GatehouseVersion.current)]).set(Double(1))
        for state in ["up", "connecting", "down"] {
            registry.makeGauge(descriptor: Self.hubLinks, labels: [("state", state)]).set(Double(0))
        }
        registry.makeGauge(descriptor: Self.siteLink).set(Double(0))
        _ = registry.makeCounter(descriptor: Self.hubReconnects)
        registry.makeGauge(descriptor: Self.processStart).set(startedUnixS)
    }

    /// Makes this registry the process's swift-metrics backend, so that what any library records
    /// through swift-metrics is served beside gatehouse's own metrics. swift-metrics allows one
    /// bootstrap a process: the first gateway started wins, later calls do nothing.
    public func bootstrapMetricsSystem() {
        guard !Self.bootstrapped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
    }
    private static let bootstrapped = Atomic<Bool>(false)

    func configure(siteTransport: String, hubTransport: String, sources: Sources) {
        transports.withLock { $0 = (siteTransport, hubTransport) }
        self.sources.withLock { $0 = sources }
        // Present from the first scrape on, at zero, so that rate() and absent() behave.
        for (descriptor, labels) in [
            (Self.received, [("transport", siteTransport)]), (Self.sent, [("transport", hubTransport)]),
        ] {
            _ = registry.makeCounter(descriptor: descriptor, labels: labels)
        }
        for reason in Self.dropReasons {
            _ = registry.makeCounter(descriptor: Self.dropped, labels: [("reason", reason)])
        }
        for outcome in ["ok", "refused"] {
            _ = registry.makeCounter(
                descriptor: Self.sasSigned, labels: [("transport", hubTransport), ("outcome", outcome)])
        }
    }

    // MARK: - The catalog

    static func descriptor(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "gatehouse", metricName: name, unitName: unit, helpText: help)
    }

    static var buildInfo: MetricNameDescriptor {
        descriptor("build", "info", "The running gatehoused version (value 1).")
    }
    static var received: MetricNameDescriptor {
        descriptor(
            "messages_received", "total", "Site messages the site transport handed over and gatehoused took (durably).")
    }
    static var sent: MetricNameDescriptor {
        descriptor("messages_sent", "total", "Messages the hub acknowledged.")
    }
    static var dropped: MetricNameDescriptor {
        descriptor(
            "messages_dropped", "total",
            "Messages that left without delivery, by reason: outbox_full, max_age, ttl, removed_device, rule.")
    }
    static let dropReasons = ["outbox_full", "max_age", "ttl", "removed_device", "rule"]
    static var archived: MetricNameDescriptor {
        descriptor("messages_archived", "total", "Messages the telemetry rules kept in the archive.")
    }
    static var deadLetters: MetricNameDescriptor {
        descriptor(
            "dead_letters", "total", "Messages kept as dead letters (never deliverable), by source and reason.")
    }
    static var outboxMessages: MetricNameDescriptor {
        descriptor(
            "outbox_messages", "", "Messages waiting in the outbox, by priority lane.")
    }
    static var outboxOldest: MetricNameDescriptor {
        descriptor(
            "outbox_oldest_message_age", "seconds",
            "Age of the oldest message waiting in each priority lane (0: empty).")
    }
    static var outboxBytes: MetricNameDescriptor {
        descriptor(
            "outbox_bytes", "", "Bytes waiting in the outbox (all lanes), as counted against [outbox] max_bytes.")
    }
    static var outboxMemory: MetricNameDescriptor {
        descriptor("outbox_memory", "bytes", "Outbox payload bytes held in memory.")
    }
    static var outboxInflight: MetricNameDescriptor {
        descriptor(
            "outbox_inflight_messages", "", "Messages sent to the hub and not yet acknowledged.")
    }
    static var hubLinks: MetricNameDescriptor {
        descriptor("hub_links", "", "Upstream device links by state.")
    }
    static var hubReconnects: MetricNameDescriptor {
        descriptor(
            "hub_link_reconnects", "total", "Upstream links that came up again after having been up.")
    }
    static var siteLink: MetricNameDescriptor {
        descriptor("site_link_up", "", "1 while the site transport is connected to the site broker.")
    }
    static var sasSigned: MetricNameDescriptor {
        descriptor(
            "sas_tokens_signed", "total",
            "SAS tokens signed for the hub transport (mqtt: connect and renewal; amqp: CBS put-tokens), by outcome.")
    }
    static var signing: MetricNameDescriptor {
        descriptor(
            "signing_duration", "seconds", "Time to sign one SAS token, by signer (tpm: an HMAC inside the TPM).")
    }
    static var decisions: MetricNameDescriptor {
        descriptor(
            "command_decisions", "total",
            "Command decisions by effect and deciding rule (none: refused before the rules).")
    }
    static var jwtFailures: MetricNameDescriptor {
        descriptor("jwt_failures", "total", "Caller tokens refused, by reason.")
    }
    static var provisioning: MetricNameDescriptor {
        descriptor(
            "provisioning_registrations", "total", "DPS registrations on leaf devices' behalf, by outcome.")
    }
    static var provisioningDuration: MetricNameDescriptor {
        descriptor(
            "provisioning_duration", "seconds", "Time of one DPS registration attempt, by outcome.")
    }
    static var provisioningDevices: MetricNameDescriptor {
        descriptor(
            "provisioning_devices", "",
            "Devices in the registry (not removed) by DPS state: none (no provisioning), assigning, assigned, failed.")
    }
    static var rulesReloads: MetricNameDescriptor {
        descriptor("rules_reloads", "total", "Rule-set reloads by outcome (accepted, refused).")
    }
    static var rulesGeneration: MetricNameDescriptor {
        descriptor(
            "rules_generation", "", "How many times a new rule set went live since the start (the rule-set version).")
    }
    static var rulesInfo: MetricNameDescriptor {
        descriptor("rules", "info", "The live rule set's SHA-256 (value 1).")
    }
    static var rulesCount: MetricNameDescriptor {
        descriptor("rules", "", "Rules in the live rule set, by kind.")
    }
    static var firewallDrops: MetricNameDescriptor {
        descriptor("firewall_dropped_packets", "total", "Packets the firewall dropped, by reason.")
    }
    static var firewallDropBytes: MetricNameDescriptor {
        descriptor("firewall_dropped", "bytes_total", "Bytes the firewall dropped, by reason.")
    }
    static var firewallApplied: MetricNameDescriptor {
        descriptor(
            "firewall_applied", "", "1 while the firewall's applied ruleset is in place and unchanged.")
    }

    static var processResident: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "process", metricName: "resident_memory", unitName: "bytes", helpText: "Resident memory size.")
    }
    static var processVirtual: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "process", metricName: "virtual_memory", unitName: "bytes", helpText: "Virtual memory size.")
    }
    static var processCPU: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "process", metricName: "cpu", unitName: "seconds_total", helpText: "User and system CPU time.")
    }
    static var processFDs: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "process", metricName: "open", unitName: "fds", helpText: "Open file descriptors.")
    }
    static var processStart: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "process", metricName: "start_time", unitName: "seconds",
            helpText: "Start time of the process since the Unix epoch.")
    }

    /// Buckets for TPM and key signing: a software key signs in microseconds, a TPM in
    /// milliseconds to a second (docs/benchmarks.md, tpm-bench).
    static let signingBuckets: [Duration] = [
        .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
    ]
    static let provisioningBuckets: [Duration] = [
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        .seconds(10), .seconds(30), .seconds(60),
    ]

    // MARK: - Events

    func deadLetter(source: String, reason: String, count: Int = 1) {
        guard count > 0 else { return }
        registry.makeCounter(descriptor: Self.deadLetters, labels: [("source", source), ("reason", reason)])
            .increment(by: Int64(count))
    }

    /// A device's upstream link changed (the hub transport's `link_state`).
    func hubLink(_ deviceID: String, state: String) {
        let reconnect = links.withLock { links -> Bool in
            links.states[deviceID] = state
            guard state == "up" else { return false }
            return !links.everUp.insert(deviceID).inserted
        }
        if reconnect { registry.makeCounter(descriptor: Self.hubReconnects).increment() }
    }

    /// The last link state the hub transport reported for the device (nil: none yet).
    func hubLinkState(_ deviceID: String) -> String? { links.withLock { $0.states[deviceID] } }

    /// A removed device's link is not counted any more.
    func forgetHubLink(_ deviceID: String) {
        _ = links.withLock { $0.states.removeValue(forKey: deviceID) }
    }

    func siteLink(up: Bool) { siteLinkUp.store(up ? 1 : 0, ordering: .relaxed) }
    public var isSiteLinkUp: Bool { siteLinkUp.load(ordering: .relaxed) == 1 }

    func signed(ok: Bool, signer: String, duration: Duration) {
        let hub = transports.withLock { $0.hub }
        registry.makeCounter(
            descriptor: Self.sasSigned, labels: [("transport", hub), ("outcome", ok ? "ok" : "refused")]
        )
        .increment()
        registry.makeDurationHistogram(
            descriptor: Self.signing, labels: [("signer", signer)], buckets: Self.signingBuckets
        )
        .record(duration)
    }

    func decision(effect: String, rule: String) {
        registry.makeCounter(descriptor: Self.decisions, labels: [("effect", effect), ("rule", rule)]).increment()
    }

    func jwtFailure(reason: String) {
        registry.makeCounter(descriptor: Self.jwtFailures, labels: [("reason", reason)]).increment()
    }

    func provisioned(ok: Bool, duration: Duration) {
        let outcome = ok ? "assigned" : "failed"
        registry.makeCounter(descriptor: Self.provisioning, labels: [("outcome", outcome)]).increment()
        registry.makeDurationHistogram(
            descriptor: Self.provisioningDuration, labels: [("outcome", outcome)], buckets: Self.provisioningBuckets
        ).record(duration)
    }

    func rulesReload(accepted: Bool) {
        registry.makeCounter(descriptor: Self.rulesReloads, labels: [("outcome", accepted ? "accepted" : "refused")])
            .increment()
    }

    // MARK: - Scrape

    /// Brings every metric up to date, then renders the exposition (text format 0.0.4). Reads
    /// SQLite (the outbox's lanes): call it off any event loop.
    public func scrape() -> [UInt8] {
        collect()
        return registry.emitToBuffer()
    }

    /// Moves the relay's counters into Prometheus's, and sets the gauges.
    func collect() {
        let (site, hub) = transports.withLock { $0 }
        if let sources = sources.withLock({ $0 }) {
            let snapshot = sources.telemetry.snapshot
            sync(Self.received, [("transport", site)], Double(snapshot.received))
            sync(Self.sent, [("transport", hub)], Double(snapshot.delivered))
            let drops: [(String, Int)] = [
                ("outbox_full", snapshot.droppedFull), ("max_age", snapshot.droppedAge), ("ttl", snapshot.expired),
                ("removed_device", snapshot.droppedRemoved), ("rule", snapshot.ruleDropped),
            ]
            for (reason, count) in drops { sync(Self.dropped, [("reason", reason)], Double(count)) }
            sync(Self.archived, [], Double(snapshot.archived))
            registry.makeGauge(descriptor: Self.outboxBytes).set(Double(snapshot.outboxBytes))
            registry.makeGauge(descriptor: Self.outboxMemory).set(Double(snapshot.memoryBytes))
            registry.makeGauge(descriptor: Self.outboxInflight).set(Double(snapshot.inflight))
            if let lanes = try? sources.store.outboxLanes() {
                let nowMS = TelemetryRelay.nowMS()
                for priority in OutboxPriority.descending {
                    let lane = lanes[priority] ?? (0, nil)
                    let labels = [("lane", "\(priority)")]
                    registry.makeGauge(descriptor: Self.outboxMessages, labels: labels).set(Double(lane.messages))
                    let age = lane.oldestEnqueuedMS.map { max(0, Double(nowMS - $0) / 1000) } ?? 0
                    registry.makeGauge(descriptor: Self.outboxOldest, labels: labels).set(age)
                }
            }
            if let devices = try? sources.store.devices() {
                var states = ["none": 0, "assigning": 0, "assigned": 0, "failed": 0]
                for device in devices where !device.isRemoved {
                    let state =
                        device.provisioning.isEmpty
                        ? "none" : device.provisioning.hasPrefix("failed") ? "failed" : device.provisioning
                    if states[state] != nil { states[state]! += 1 }
                }
                for (state, count) in states {
                    registry.makeGauge(descriptor: Self.provisioningDevices, labels: [("state", state)])
                        .set(Double(count))
                }
            }
            if let rules = sources.rules?() {
                registry.makeGauge(descriptor: Self.rulesGeneration).set(Double(rules.generation))
                registry.makeGauge(descriptor: Self.rulesCount, labels: [("kind", "command")])
                    .set(Double(rules.commandRules))
                registry.makeGauge(descriptor: Self.rulesCount, labels: [("kind", "telemetry")])
                    .set(Double(rules.telemetryRules))
                setRulesInfo(rules.sha256)
            }
            if let firewall = sources.firewall?() {
                registry.makeGauge(descriptor: Self.firewallApplied).set(Double(firewall.applied ? 1 : 0))
                for (reason, counts) in firewall.dropsByReason {
                    sync(Self.firewallDrops, [("reason", reason)], Double(counts.packets))
                    sync(Self.firewallDropBytes, [("reason", reason)], Double(counts.bytes))
                }
            }
        }
        let states = links.withLock { links in
            links.states.values.reduce(into: ["up": 0, "connecting": 0, "down": 0]) { $0[$1, default: 0] += 1 }
        }
        for (state, count) in states {
            registry.makeGauge(descriptor: Self.hubLinks, labels: [("state", state)]).set(Double(count))
        }
        registry.makeGauge(descriptor: Self.siteLink).set(Double(siteLinkUp.load(ordering: .relaxed)))
        if let process = ProcessFigures.read() {
            registry.makeGauge(descriptor: Self.processResident).set(Double(process.residentBytes))
            registry.makeGauge(descriptor: Self.processVirtual).set(Double(process.virtualBytes))
            registry.makeGauge(descriptor: Self.processFDs).set(Double(process.openFDs))
            sync(Self.processCPU, [], process.cpuSeconds)
        }
    }

    /// The live rule set's hash as a label: the series of a replaced hash is set to 0, so a
    /// query for `== 1` finds exactly one.
    private let rulesHash = Mutex<String?>(nil)
    private func setRulesInfo(_ sha256: String) {
        let previous = rulesHash.withLock { hash -> String? in
            defer { hash = sha256 }
            return hash
        }
        if let previous, previous != sha256 {
            registry.makeGauge(descriptor: Self.rulesInfo, labels: [("sha256", previous)]).set(Double(0))
        }
        registry.makeGauge(descriptor: Self.rulesInfo, labels: [("sha256", sha256)]).set(Double(1))
    }

    /// Raises a Prometheus counter to `total` (a counter kept elsewhere): by the difference since
    /// the last sync, never down.
    private func sync(_ descriptor: MetricNameDescriptor, _ labels: [(String, String)], _ total: Double) {
        let key = descriptor.name + labels.map { "|\($0.0)=\($0.1)" }.joined()
        let delta = synced.withLock { synced -> Double in
            let last = synced[key] ?? 0
            guard total > last else { return 0 }
            synced[key] = total
            return total - last
        }
        let counter =
            labels.isEmpty
            ? registry.makeCounter(descriptor: descriptor)
            : registry.makeCounter(descriptor: descriptor, labels: labels)
        if delta == delta.rounded() {
            counter.increment(by: Int64(delta))
        } else {
            counter.increment(by: delta)
        }
    }
}

/// The process's own figures, from /proc/self (Linux); nil elsewhere.
struct ProcessFigures {
    var residentBytes: Int
    var virtualBytes: Int
    var cpuSeconds: Double
    var openFDs: Int

    static func read() -> ProcessFigures? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // The fields after the command name (which may hold spaces) start at field 3 (state).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // utime 14, stime 15, vsize 23, rss 24 (man 5 proc), so index = field - 3.
        guard fields.count > 21, let utime = Double(fields[11]), let stime = Double(fields[12]),
            let vsize = Int(fields[20]), let rss = Int(fields[21])
        else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return ProcessFigures(
            residentBytes: rss * page, virtualBytes: vsize, cpuSeconds: (utime + stime) / max(ticks, 1), openFDs: fds)
    }
}
