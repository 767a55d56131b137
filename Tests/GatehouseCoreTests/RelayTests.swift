import Foundation
import GatehouseCore
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import GatehouseTestSupport
import Logging
import SQLiteDB
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The relay against a real plugin across the real ABI: the C loopback upstream, whose test
/// hooks (`loopback_*`) let a test hold acknowledgements and flip links.
@Suite("Relay: outbox to upstream", .serialized)
struct RelayTests {
    final class Harness: LoopbackHooks {
        let dir = TempDir()
        let store: StateStore
        let relay: HostRouter
        let upstream: PluginInstance
        let logs = CapturedLogs()
        let outFile: String
        private let library: PluginLibrary
        let handle: UnsafeMutableRawPointer

        init(policy: OutboxPolicy = OutboxPolicy(), hold: Bool = false, dbPath: String? = nil) throws {
            let path = try CFixturePlugin.path("loopback_upstream")
            library = try PluginLibrary(path: path)
            handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)!
            store = try StateStore(path: dbPath ?? dir.file("state.db"), durability: .normal)
            let logs = self.logs
            relay = try HostRouter(
                store: store, policy: policy, signer: NoSigner(),
                logger: Logger(label: "test") { _ in CapturingLogHandler(logs) })
            outFile = dir.file("sent.txt")
            let config = #"{"out":"\#(outFile)","hold":\#(hold)}"#
            upstream = try PluginInstance(
                library: library, role: .upstream, label: "hub", configJSON: Array(config.utf8), delegate: relay)
            try upstream.start()
            try relay.start(upstream: upstream)
        }

        func ingest(_ device: String, _ payloads: [String], properties: [PluginMessage.Property] = []) -> PluginStatus {
            relay.ingest(
                payloads.map { PluginMessage(deviceID: device, payload: Array($0.utf8), properties: properties) },
                from: "site")
        }

        /// Lines the plugin wrote: "device\tproperties\tpayload".
        var sent: [[String]] {
            ((try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "").split(separator: "\n")
                .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        }

        func payloads(of device: String) -> [String] { sent.filter { $0[0] == device }.map { $0[2] } }

        func stop() {
            relay.drain(timeout: .milliseconds(200))
            upstream.stop(drainMilliseconds: 0)
            upstream.destroy()
        }
    }

    @Test("ingested messages reach the upstream plugin in per-device order, with properties, and leave the outbox")
    func relays() throws {
        let h = try Harness()
        defer { h.stop() }
        #expect(h.ingest("a", ["a1", "a2"], properties: [.init("$.ct", "application/json")]) == .ok)
        #expect(h.ingest("b", ["b1"]) == .ok)
        #expect(h.ingest("a", ["a3"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { h.relay.telemetry.snapshot.outboxMessages == 0 && h.sent.count == 4 })
        #expect(h.payloads(of: "a") == ["a1", "a2", "a3"])
        #expect(h.payloads(of: "b") == ["b1"])
        #expect(h.sent.first { $0[2] == "a1" }?[1] == "$.ct=application/json")
        #expect(try h.store.outboxTotals().messages == 0)
        #expect(h.relay.telemetry.snapshot.delivered == 4)
    }

    @Test("a dead letter requeued while the daemon runs is sent after SIGHUP's applyRegistry, once")
    func requeuedDeadLetter() throws {
        let h = try Harness()
        defer { h.stop() }
        #expect(h.ingest("d", ["first"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { h.payloads(of: "d") == ["first"] })
        let kept = try h.store.addDeadLetters([
            DeadLetterRecord(
                timeMS: 1, deviceID: "d", source: .hub, size: 5, reason: DeadLetterReason.hubRefused,
                payload: Array("again".utf8))
        ])
        _ = try h.store.requeueDeadLetter(id: kept[0].id, nowMS: 2)  // what `gatehouse dead-letters requeue` does
        h.relay.applyRegistry()  // its SIGHUP
        #expect(waitUntil(timeout: .seconds(5)) { h.payloads(of: "d") == ["first", "again"] })
        #expect(waitUntil(timeout: .seconds(5)) { h.relay.telemetry.snapshot.outboxMessages == 0 })
        h.relay.applyRegistry()  // a second SIGHUP takes nothing in twice
        Thread.sleep(forTimeInterval: 0.2)
        #expect(h.payloads(of: "d") == ["first", "again"])
        #expect(h.relay.telemetry.snapshot.outboxMessages == 0)
    }

    @Test("the in-flight window bounds unacknowledged sends per device")
    func window() throws {
        var policy = OutboxPolicy()
        policy.inflightPerDevice = 4
        let h = try Harness(policy: policy, hold: true)
        defer { h.stop() }
        #expect(h.ingest("d", (1...10).map { "m\($0)" }) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 4 })
        Thread.sleep(forTimeInterval: 0.2)
        #expect(h.sentCount == 4)  // no more until acknowledged
        #expect(try h.store.outboxTotals().messages == 10)  // nothing leaves before the hub's ack
        h.ackAll()
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 8 })
        h.ackAll()
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 10 })
        h.ackAll()
        #expect(waitUntil(timeout: .seconds(5)) { (try? h.store.outboxTotals().messages) == 0 })
        #expect(h.payloads(of: "d") == (1...10).map { "m\($0)" })
    }

    @Test("a failed delivery is sent again, in order; a down link holds its device's messages")
    func redelivery() throws {
        var policy = OutboxPolicy()
        policy.inflightPerDevice = 2
        let h = try Harness(policy: policy, hold: true)
        defer { h.stop() }
        #expect(h.ingest("d", ["1", "2", "3"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 2 })
        h.setLink("d", up: false)
        h.ackAll(2)  // GH_ERR_UNAVAILABLE: the link dropped before the hub acknowledged
        Thread.sleep(forTimeInterval: 0.3)
        #expect(h.sentCount == 2)  // link down: nothing more is sent
        h.setLink("d", up: true)
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 4 })
        h.ackAll()
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 5 })
        h.ackAll()
        #expect(waitUntil(timeout: .seconds(5)) { h.relay.telemetry.snapshot.outboxMessages == 0 })
        #expect(h.payloads(of: "d") == ["1", "2", "1", "2", "3"])
    }

    @Test("a link change returns at once while the state database is locked; its row lands once it is free")
    func linkStateDoesNotBlock() throws {
        let h = try Harness()
        defer { h.stop() }
        // Another connection holds the database's write lock for 2 s, as a slow disk or a long
        // transaction of the CLI could: every write of the relay waits for it.
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)  // the relay writes its status meanwhile
        let locker = try DatabaseQueue(path: h.store.path, configuration: configuration)
        let locked = DispatchSemaphore(value: 0)
        let unlocked = DispatchSemaphore(value: 0)
        let lockError = Mutex<String?>(nil)
        Thread {
            do {
                try locker.writeWithoutTransaction { db in
                    try db.execute(sql: "BEGIN IMMEDIATE")
                    locked.signal()
                    Thread.sleep(forTimeInterval: 2)
                    try db.execute(sql: "COMMIT")
                }
            } catch {
                lockError.withLock { $0 = "\(error)" }
                locked.signal()
            }
            unlocked.signal()
        }.start()
        locked.wait()
        try #require(lockError.withLock { $0 } == nil, "cannot lock the database: \(lockError.withLock { $0 } ?? "")")

        // The plugin's thread (here the test's, through the loopback's hook) reports up, down,
        // up: each call only records and returns.
        let clock = ContinuousClock()
        var slowest = Duration.zero
        for up in [true, false, true] {
            slowest = max(slowest, clock.measure { h.setLink("pump-9", up: up) })
        }
        print("slowest link_state callback while the database was locked: \(slowest)")
        #expect(slowest < .milliseconds(500), "a link_state callback took \(slowest)")
        #expect(try h.store.devices().first { $0.id == "pump-9" } == nil, "written while the database was locked?")

        // Once the lock is gone the last state is written.
        unlocked.wait()
        #expect(
            try waitUntil(timeout: .seconds(5)) {
                try h.store.devices().first { $0.id == "pump-9" }?.linkState == "up"
            })
    }

    @Test("messages left in the outbox are sent first after a restart")
    func restart() throws {
        let dir = TempDir()
        let db = dir.file("state.db")
        do {
            let first = try Harness(hold: true, dbPath: db)
            #expect(first.ingest("d", ["old-1", "old-2"]) == .ok)
            #expect(waitUntil(timeout: .seconds(5)) { first.sentCount == 2 })
            first.relay.drain(timeout: .milliseconds(50))  // stop without acknowledgements
            first.upstream.stop(drainMilliseconds: 0)
            first.upstream.destroy()
        }
        let second = try Harness(dbPath: db)
        defer { second.stop() }
        #expect(second.logs.contains("outbox holds messages from before the restart"))
        #expect(second.ingest("d", ["new-1"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { second.relay.telemetry.snapshot.outboxMessages == 0 })
        #expect(second.payloads(of: "d") == ["old-1", "old-2", "new-1"])
    }

    @Test("past max_bytes, drop = oldest makes room and counts it; drop = newest keeps what waits")
    func limits() throws {
        for drop in OutboxPolicy.DropPolicy.allCases {
            var policy = OutboxPolicy()
            policy.maxBytes = 10 * 102  // ten 100-byte payloads plus device id "d" and empty properties
            policy.drop = drop
            policy.inflightPerDevice = 1  // one message in flight (never dropped); the hub never acknowledges
            let h = try Harness(policy: policy, hold: true)
            let payload = { (n: Int) in String(repeating: "\(n % 10)", count: 100) }
            #expect(h.ingest("d", (0..<10).map(payload)) == .ok)
            #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 1 })
            #expect(h.ingest("d", (10..<13).map(payload)) == .ok)
            let left = try h.store.outboxRecords(fromSeq: 0, limit: 100).map {
                String(decoding: $0.payload, as: UTF8.self)
            }
            #expect(left.count <= 10)
            #expect(h.relay.telemetry.snapshot.dropped == 3)
            if drop == .oldest {
                #expect(left.first == payload(0))  // in flight: kept
                #expect(left.last == payload(12))
                #expect(h.logs.contains("dropped oldest"))
            } else {
                #expect(left.last == payload(9))
                #expect(h.logs.contains("dropped newest"))
            }
            h.stop()
        }
    }

    @Test("messages older than max_age are dropped, counted and logged; what is in flight stays")
    func maxAge() throws {
        var policy = OutboxPolicy()
        policy.maxAge = .seconds(1)
        policy.inflightPerDevice = 1
        let h = try Harness(policy: policy, hold: true)
        defer { h.stop() }
        #expect(h.ingest("d", ["1", "2", "3"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { h.sentCount == 1 })
        // What the daemon's "outbox expiry" service does every second.
        #expect(
            waitUntil(timeout: .seconds(5)) {
                h.relay.telemetry.requestExpiry()
                return h.relay.telemetry.snapshot.dropped == 2
            })
        #expect(h.logs.contains("older than the outbox's max_age"))
        #expect(
            try h.store.outboxRecords(fromSeq: 0, limit: 10).map { String(decoding: $0.payload, as: UTF8.self) } == [
                "1"
            ])
    }

    @Test("until the command gate is configured, every command is refused with 403 and audited (fail closed)")
    func commandsRefused() async throws {
        let h = try Harness()
        defer { h.stop() }
        let answer = Mutex<(Int32, String)?>(nil)
        h.relay.command(
            PluginCommand(kind: .directMethod, deviceID: "pump-1", name: "reboot", payload: Array("{}".utf8))
        ) {
            status, body in answer.withLock { $0 = (status, String(decoding: body, as: UTF8.self)) }
        }
        // The answer comes from a `Task`: wait without holding one of the pool's (two) threads.
        let deadline = ContinuousClock.now + .seconds(5)
        while answer.withLock({ $0 }) == nil, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(answer.withLock { $0 } != nil)
        let result = answer.withLock { $0 }
        #expect(result?.0 == 403)
        #expect(result?.1.contains("the command gate is not running") == true)
        #expect(h.logs.contains("command denied"))
        let audit = try h.store.auditRecords()
        #expect(audit.count == 1)
        #expect(audit.first?.effect == "deny")
        #expect(audit.first?.deviceID == "pump-1")
        #expect(audit.first?.commandName == "reboot")
    }

    @Test("a plugin's config error names its key")
    func pluginConfigError() throws {
        let library = try PluginLibrary(path: try CFixturePlugin.path("loopback_upstream"))
        let dir = TempDir()
        let relay = try HostRouter(
            store: try StateStore(path: dir.file("s.db")), policy: OutboxPolicy(), signer: NoSigner(),
            logger: Logger(label: "t"))
        #expect {
            _ = try PluginInstance(
                library: library, role: .upstream, label: "hub", configJSON: Array(#"{"bogus":1}"#.utf8),
                delegate: relay)
        } throws: { error in
            (error as? PluginError)?.configKey == "bogus"
        }
    }
}

/// Log lines kept in memory, so tests can assert on what was logged.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    func contains(_ fragment: String) -> Bool { lines.withLock { $0.contains { $0.contains(fragment) } } }
}

struct CapturingLogHandler: LogHandler {
    let logs: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    init(_ logs: CapturedLogs) { self.logs = logs }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        logs.append("\(event.level) \(event.message) \(event.metadata ?? [:])")
    }
}
