import Foundation
import GatehouseTestSupport
import Logging
import NIOCore
import Synchronization
import Testing

@testable import GatehouseCore

#if canImport(Glibc)
    import Glibc
#endif

/// systemd's notification protocol against a real datagram socket, the metrics configuration,
/// and the metrics endpoint over real HTTP (docs/operations.md).
@Suite("Operations: sd_notify, [metrics], /metrics")
struct OperationsTests {
    /// A bound AF_UNIX datagram socket standing in for systemd's notify socket.
    final class NotifySocket {
        let fd: Int32
        let path: String

        init(path: String) throws {
            self.path = path
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { throw FixtureError("socket: errno \(errno)") }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard bound == 0 else { throw FixtureError("bind \(path): errno \(errno)") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        /// The next datagram, or nil after `seconds`.
        func receive(seconds: Int = 5) -> String? {
            var timeout = timeval(tv_sec: seconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 0 else { return nil }
            return String(decoding: buffer[..<count], as: UTF8.self)
        }

        /// `receive` for async tests: polls without blocking, so it never holds one of the
        /// cooperative pool's threads (two on a 2-core machine) that the service under test needs.
        func next(seconds: Int = 5) async -> String? {
            let deadline = ContinuousClock.now + .seconds(seconds)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while ContinuousClock.now < deadline {
                let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if count >= 0 { return String(decoding: buffer[..<count], as: UTF8.self) }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return nil
        }

        deinit {
            close(fd)
            unlink(path)
        }
    }

    @Test("READY=1 and WATCHDOG=1 arrive as datagrams on $NOTIFY_SOCKET")
    func notifyDatagrams() throws {
        let dir = TempDir()
        let socket = try NotifySocket(path: dir.file("notify"))
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.path])
        #expect(notifier.isActive)
        #expect(notifier.notify("READY=1\nSTATUS=up"))
        #expect(socket.receive() == "READY=1\nSTATUS=up")
        #expect(notifier.notify("WATCHDOG=1"))
        #expect(socket.receive() == "WATCHDOG=1")
    }

    @Test("an abstract socket name (@…) is reached without its '@'")
    func abstractSocket() throws {
        let name = "gatehouse-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = [0] + Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size + bytes.count))
            }
        }
        try #require(bound == 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name]).notify("READY=1"))
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = recv(fd, &buffer, buffer.count, 0)
        #expect(count == 7 && String(decoding: buffer[..<max(count, 0)], as: UTF8.self) == "READY=1")
    }

    @Test("no $NOTIFY_SOCKET: nothing is sent; WATCHDOG_USEC counts only for our pid")
    func environment() {
        #expect(!SystemdNotifier(environment: [:]).isActive)
        #expect(!SystemdNotifier(environment: [:]).notify("READY=1"))
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/path"]).isActive)
        let ours = SystemdNotifier(
            environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"], pid: 42)
        #expect(ours.watchdogInterval == .seconds(30))
        let theirs = SystemdNotifier(
            environment: ["NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"], pid: 42)
        #expect(theirs.watchdogInterval == nil)
    }

    @Test("the watchdog service pings while the loops beat and stops when one stalls")
    func watchdogStopsOnStall() async throws {
        let dir = TempDir()
        let socket = try NotifySocket(path: dir.file("notify"))
        let liveness = Liveness()
        let notifier = SystemdNotifier(
            environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "600000"], pid: getpid())
        let service = SystemdService(
            notifier: notifier, liveness: liveness, siteLinkUp: { true }, logger: Logger(label: "test"))
        // Both loops beat from a thread of their own (not the cooperative pool, which other
        // suites may keep busy) until the heartbeat is told to stop.
        let heartbeatStops = Atomic<Bool>(false)
        let done = Atomic<Bool>(false)
        let beater = Thread {
            while !done.load(ordering: .relaxed) {
                liveness.beat(.relay)
                if !heartbeatStops.load(ordering: .relaxed) { liveness.beat(.heartbeat) }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        beater.start()
        let running = Task { try await service.run() }
        defer {
            done.store(true, ordering: .relaxed)
            running.cancel()
        }
        // Generous waits: other suites may keep the cooperative pool busy meanwhile.
        #expect(await socket.next(seconds: 30)?.hasPrefix("READY=1") == true)
        #expect(await socket.next(seconds: 30) == "WATCHDOG=1")
        // The heartbeat stalls now; pings stop once it is 0.6 s (the interval) old. `receive`
        // waits up to 5 s: the loop ends only on that silence (or another message, which fails).
        heartbeatStops.store(true, ordering: .relaxed)
        let stopped = ContinuousClock.now
        var late: [Duration] = []
        var other: String?
        while let message = await socket.next() {
            guard message == "WATCHDOG=1" else {
                other = message
                break
            }
            late.append(ContinuousClock.now - stopped)
        }
        #expect(other == nil)
        // A ping decided just before the stall may still arrive; none long after it.
        #expect(late.allSatisfy { $0 < .seconds(3) }, "pings after the stall: \(late)")
        #expect(liveness.stalled(within: .milliseconds(600)) == [.heartbeat])
    }

    @Test("journald's native protocol: fields as NAME=value, a multi-line value with its length")
    func journalEntry() throws {
        let dir = TempDir()
        let socket = try NotifySocket(path: dir.file("journal"))
        let datagram = JournalWriter.entry(
            level: .notice, message: "command denied", label: "gatehoused",
            metadata: [("decision", "00ab"), ("device", "pump-7"), ("rules", "a\nb")])
        #expect(JournalWriter(socketPath: socket.path).send(datagram))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(socket.fd, &buffer, buffer.count, 0)
        let received = Array(buffer[..<max(count, 0)])
        #expect(received == datagram)
        let text =
            "MESSAGE=command denied\nPRIORITY=5\nSYSLOG_IDENTIFIER=gatehoused\nGATEHOUSE_LABEL=gatehoused\n"
            + "GATEHOUSE_DECISION=00ab\nGATEHOUSE_DEVICE=pump-7\nGATEHOUSE_RULES\n"
        var expected = Array(text.utf8)
        expected += [3, 0, 0, 0, 0, 0, 0, 0] + Array("a\nb\n".utf8)
        #expect(received == expected)
        #expect(JournalWriter.fieldName("assigned-hub") == "GATEHOUSE_ASSIGNED_HUB")
        // Not the journal: no $JOURNAL_STREAM, or one that is not fd 2.
        #expect(JournalWriter.forStandardError(environment: [:]) == nil)
        #expect(JournalWriter.forStandardError(environment: ["JOURNAL_STREAM": "1:1"]) == nil)
    }

    @Test("[metrics]: listen parses IP literals and ports; enabled = false turns it off")
    func metricsConfig() throws {
        #expect(GatewayConfig.Metrics.parse(listen: "127.0.0.1:9600")! == ("127.0.0.1", 9600))
        #expect(GatewayConfig.Metrics.parse(listen: "[::1]:9700")! == ("::1", 9700))
        for bad in ["localhost:9600", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", ":9600", "[::1:9600"] {
            #expect(GatewayConfig.Metrics.parse(listen: bad) == nil, "\(bad)")
        }
        let base = "[site]\nplugin = \"mqtt\"\n[hub]\nplugin = \"mqtt\"\nhostname = \"h\"\n"
        #expect(try GatewayConfig.parse(base, path: "t.toml").metrics == nil)
        #expect(try GatewayConfig.parse(base + "[metrics]\n", path: "t.toml").metrics == GatewayConfig.Metrics())
        #expect(try GatewayConfig.parse(base + "[metrics]\nenabled = false\n", path: "t.toml").metrics == nil)
        #expect(throws: ConfigError.self) {
            try GatewayConfig.parse(base + "[metrics]\nlisten = \"example.com:9600\"\n", path: "t.toml")
        }
        #expect(throws: ConfigError.self) { try GatewayConfig.parse(base + "[metrics]\nport = 1\n", path: "t.toml") }
    }

    @Test("/metrics serves the exposition with HELP and TYPE; other paths are 404")
    func endpoint() async throws {
        let metrics = GatewayMetrics()
        metrics.decision(effect: "deny", rule: "none")
        metrics.jwtFailure(reason: "token.expired")
        metrics.hubLink("dev-1", state: "up")
        metrics.hubLink("dev-1", state: "down")
        metrics.hubLink("dev-1", state: "up")
        var settings = GatewayConfig.Metrics()
        settings.port = freePort()
        let endpoint = MetricsEndpoint(metrics: metrics, settings: settings, logger: Logger(label: "test"))
        let channel = try await endpoint.bind()
        defer { channel.close(promise: nil) }
        let (status, body) = try Self.get("http://127.0.0.1:\(settings.port)/metrics")
        #expect(status == 200)
        #expect(body.contains("# TYPE gatehouse_command_decisions_total counter"))
        #expect(body.contains(#"gatehouse_command_decisions_total{effect="deny",rule="none"} 1"#))
        #expect(body.contains(#"gatehouse_jwt_failures_total{reason="token.expired"} 1"#))
        #expect(body.contains("gatehouse_hub_link_reconnects_total 1"))
        #expect(body.contains(#"gatehouse_hub_links{state="down"} 0"#))
        #expect(body.contains(#"gatehouse_hub_links{state="up"} 1"#))
        #expect(body.contains("# HELP process_resident_memory_bytes"))
        let notFound = try Self.get("http://127.0.0.1:\(settings.port)/")
        #expect(notFound.status == 404)
    }

    /// A blocking GET through curl (an independent HTTP client).
    static func get(_ url: String) throws -> (status: Int, body: String) {
        let (code, output) = try Subprocess.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", url])
        guard code == 0, let newline = output.lastIndex(of: "\n") else { throw FixtureError("curl \(url): \(output)") }
        return (Int(output[output.index(after: newline)...]) ?? 0, String(output[..<newline]))
    }
}
