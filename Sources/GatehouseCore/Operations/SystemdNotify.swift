import FoundationEssentials
import Logging
import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// systemd's notification protocol (sd_notify(3)): one datagram of `KEY=value` lines to the
/// AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
/// `@`). Written by hand rather than linking libsystemd: the protocol is this one `sendto`, and
/// gatehoused should not need libsystemd to run outside systemd (docs/operations.md, "systemd").
///
/// Without `$NOTIFY_SOCKET` (not under systemd, or `Type=simple`) every call does nothing.
public struct SystemdNotifier: Sendable {
    /// The socket address, as sd_notify reads it; nil: not under a notify-type unit.
    public let socketPath: String?
    /// `$WATCHDOG_USEC` when it is meant for this process (`$WATCHDOG_PID` unset or ours).
    public let watchdogInterval: Duration?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment, pid: Int32 = getpid()) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path.flatMap { $0.hasPrefix("/") || $0.hasPrefix("@") ? $0 : nil }
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
            environment["WATCHDOG_PID"].map({ Int32($0) == pid }) ?? true
        {
            watchdogInterval = .microseconds(Int64(clamping: usec))
        } else {
            watchdogInterval = nil
        }
    }

    public var isActive: Bool { socketPath != nil }

    /// Sends `state` ("READY=1", "WATCHDOG=1", "STATUS=…", "STOPPING=1", newline-separated).
    /// Returns false when there is no socket or the datagram could not be sent.
    @discardableResult
    public func notify(_ state: String) -> Bool {
        guard let socketPath else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(socketPath.utf8)
        // An abstract socket: a NUL first byte instead of the '@', and no terminating NUL.
        let abstract = pathBytes.first == UInt8(ascii: "@")
        if abstract { pathBytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: pathBytes)
            if !abstract { raw[pathBytes.count] = 0 }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (abstract ? 0 : 1))
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(state.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                bytes.withUnsafeBytes { buffer in
                    sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), socketAddress, length)
                }
            }
        }
        return sent == bytes.count
    }
}

/// The loops whose progress proves the daemon is not wedged (docs/operations.md, "systemd"):
/// each stamps its beat; the watchdog pings systemd only while every one beat recently.
public final class Liveness: Sendable {
    public enum Loop: Int, CaseIterable, Sendable, CustomStringConvertible {
        /// The relay's dispatcher thread (it wakes at least every 20 ms).
        case relay
        /// The status heartbeat: a SQLite write a second, on the Swift concurrency pool.
        case heartbeat

        public var description: String {
            switch self {
            case .relay: "relay dispatcher"
            case .heartbeat: "status heartbeat"
            }
        }
    }

    private let relay: Atomic<Int64>
    private let heartbeat: Atomic<Int64>

    public init() {
        let now = Self.nowNS()
        relay = Atomic(now)
        heartbeat = Atomic(now)
    }

    public func beat(_ loop: Loop) {
        switch loop {
        case .relay: relay.store(Self.nowNS(), ordering: .relaxed)
        case .heartbeat: heartbeat.store(Self.nowNS(), ordering: .relaxed)
        }
    }

    func lastBeatNS(_ loop: Loop) -> Int64 {
        switch loop {
        case .relay: relay.load(ordering: .relaxed)
        case .heartbeat: heartbeat.load(ordering: .relaxed)
        }
    }

    /// The loops that have not beaten within `within`.
    public func stalled(within: Duration) -> [Loop] {
        let limit =
            Self.nowNS() - within.components.seconds * 1_000_000_000 - within.components.attoseconds / 1_000_000_000
        return Loop.allCases.filter { lastBeatNS($0) < limit }
    }

    static func nowNS() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }
}

/// Tells systemd when gatehoused is ready and that it is alive (docs/operations.md):
/// - `READY=1` once the outbox is open, the command gate is configured (both before this
///   service runs) and the site transport reports its link to the site broker up;
/// - then, with `WatchdogSec`, `WATCHDOG=1` every half interval, only while every loop in
///   `Liveness` beat within the interval: a wedged loop stops the pings and systemd restarts
///   the daemon (`Restart=on-watchdog` is covered by the unit's `Restart=on-failure`).
/// - `STOPPING=1` at graceful shutdown.
public struct SystemdService: Service {
    let notifier: SystemdNotifier
    let liveness: Liveness
    let siteLinkUp: @Sendable () -> Bool
    let logger: Logger

    public init(
        notifier: SystemdNotifier, liveness: Liveness, siteLinkUp: @escaping @Sendable () -> Bool, logger: Logger
    ) {
        self.notifier = notifier
        self.liveness = liveness
        self.siteLinkUp = siteLinkUp
        self.logger = logger
    }

    public func run() async throws {
        guard notifier.isActive else {
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown { await notifyLoop() }
        notifier.notify("STOPPING=1")
    }

    /// READY once, then the watchdog pings, until cancelled.
    private func notifyLoop() async {
        let interval = notifier.watchdogInterval
        let tick: Duration = interval.map { max(.milliseconds(100), min($0 / 4, .seconds(1))) } ?? .milliseconds(200)
        var ready = false
        var lastPing = ContinuousClock.now - .seconds(3600)
        var lastStalled: [Liveness.Loop] = []
        do {
            while !Task.isCancelled {
                if !ready, siteLinkUp() {
                    ready = true
                    notifier.notify("READY=1\nSTATUS=relaying: outbox open, site link up, command gate running")
                    logger.info("told systemd: ready")
                }
                if let interval {
                    let stalled = liveness.stalled(within: interval)
                    if stalled.isEmpty {
                        if ContinuousClock.now - lastPing >= interval / 2 {
                            notifier.notify("WATCHDOG=1")
                            lastPing = .now
                        }
                    } else if stalled != lastStalled {
                        // Logged once a change; systemd restarts the daemon when the interval passes.
                        logger.critical(
                            "a loop is stalled: no watchdog ping until it beats again",
                            metadata: ["loops": "\(stalled.map(\.description).joined(separator: ", "))"])
                    }
                    lastStalled = stalled
                }
                try await Task.sleep(for: tick)
            }
        } catch {
            // Cancelled: the graceful shutdown.
        }
    }
}
