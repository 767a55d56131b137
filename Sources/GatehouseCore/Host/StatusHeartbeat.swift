import FoundationEssentials
import GatehouseStore
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon's row in the state database, which `gatehouse status` reads: the counters of the
/// relay and the command path, written every second ("status heartbeat" service) and once
/// more, with the stop time, after the relay has drained. The telemetry rules' counters
/// (`gatehouse rules stats`) are written beside it when they changed, at most every 5 s.
final class StatusHeartbeat: Sendable {
    let store: StateStore
    let telemetry: TelemetryRelay
    let commands: CommandPath
    let logger: Logger
    let startedMS: Int64

    init(store: StateStore, telemetry: TelemetryRelay, commands: CommandPath, logger: Logger) {
        self.store = store
        self.telemetry = telemetry
        self.commands = commands
        self.logger = logger
        startedMS = TelemetryRelay.nowMS()
    }

    func beat(stopped: Bool = false) {
        let snapshot = telemetry.snapshot
        let now = TelemetryRelay.nowMS()
        let status = DaemonStatus(
            pid: getpid(), version: GatehouseVersion.current, startedMS: startedMS, heartbeatMS: now,
            stoppedMS: stopped ? now : nil, outboxMessages: snapshot.outboxMessages,
            outboxBytes: snapshot.outboxBytes, ingestedTotal: snapshot.ingested, deliveredTotal: snapshot.delivered,
            droppedTotal: snapshot.dropped, commandsRefusedTotal: commands.refused.load(ordering: .relaxed))
        // The watchdog's proof that this loop turns (docs/operations.md, "systemd"): beaten
        // whether or not the write succeeded — a full disk is logged, not a reason to restart;
        // a write that never returns is.
        defer { telemetry.metrics.liveness.beat(.heartbeat) }
        do {
            try store.writeStatus(status)
        } catch {
            logger.error("cannot write the daemon status", metadata: ["error": "\(error)"])
        }
        writeRuleStats(force: stopped)
    }

    /// The generation of the telemetry rules' counters last written (nil: none yet — the first
    /// beat writes them even if empty, which clears the previous run's), and when.
    private let written = Mutex<(generation: Int?, at: ContinuousClock.Instant)>((nil, .now))

    /// The telemetry rules' counters (`gatehouse rules stats`), when they changed, at most every
    /// 5 s (and at the stop): one more write transaction a second would only add to the
    /// ingest's tail latency.
    private func writeRuleStats(force: Bool) {
        let generation = telemetry.ruleStatsGeneration
        let (last, at) = written.withLock { $0 }
        guard last != generation, force || last == nil || ContinuousClock.now - at >= .seconds(5) else { return }
        do {
            try store.writeTelemetryRuleStats(telemetry.ruleStats)
            written.withLock { $0 = (generation, .now) }
        } catch {
            logger.error("cannot write the telemetry rules' counters", metadata: ["error": "\(error)"])
        }
    }
}
