import Foundation
import GatehouseCore
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import GatehouseTestSupport
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `gatehouse devices remove` as the daemon sees it: the registry marks the device removed and
/// SIGHUP calls `Relay.applyRegistry()`. Against the C loopback upstream across the real ABI —
/// in the `.serialized` relay suite, because the loopback plugin's test hooks are process-wide.
extension RelayTests {
    /// Signs anything and records what it was asked to forget.
    final class RecordingSigner: DeviceSigner {
        let forgotten = Mutex<[String]>([])
        func sign(deviceID: String, resource: String, expiry: Int64, policyName: String?) throws(SignerError)
            -> String
        { "SharedAccessSignature sr=\(resource)&sig=test&se=\(expiry)" }
        func forget(deviceID: String) { forgotten.withLock { $0.append(deviceID) } }
    }

    @Test("a removed device's key, identity and waiting telemetry go; added again, it is relayed again")
    func removeAndRestore() throws {
        let dir = TempDir()
        let path = try CFixturePlugin.path("loopback_upstream")
        let library = try PluginLibrary(path: path)
        let handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)!
        let store = try StateStore(path: dir.file("state.db"), durability: .normal)
        let logs = CapturedLogs()
        let signer = RecordingSigner()
        let relay = try HostRouter(
            store: store, policy: OutboxPolicy(), signer: signer,
            logger: Logger(label: "test") { _ in CapturingLogHandler(logs) })
        let outFile = dir.file("sent.txt")
        let upstream = try PluginInstance(
            library: library, role: .upstream, label: "hub",
            configJSON: Array(#"{"out":"\#(outFile)","hold":true}"#.utf8), delegate: relay)
        try upstream.start()
        try relay.start(upstream: upstream)
        defer {
            relay.drain(timeout: .milliseconds(200))
            upstream.stop(drainMilliseconds: 0)
            upstream.destroy()
        }
        typealias AckAll = @convention(c) (Int32) -> Void
        let ackAll = unsafeBitCast(dlsym(handle, "loopback_ack_all"), to: AckAll.self)
        func ingest(_ device: String, _ payloads: [String]) -> PluginStatus {
            relay.ingest(payloads.map { PluginMessage(deviceID: device, payload: Array($0.utf8)) }, from: "site")
        }
        func sent() -> [String] {
            ((try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        // Held in flight at the "hub": three of dev-a's, one of dev-b's.
        #expect(ingest("dev-a", ["a1", "a2", "a3"]) == .ok)
        #expect(ingest("dev-b", ["b1"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { sent().count == 4 })
        #expect(relay.telemetry.snapshot.outboxMessages == 4)

        #expect(try store.markRemoved(deviceID: "dev-a", atMS: 1))
        relay.applyRegistry()
        #expect(signer.forgotten.withLock { $0 } == ["dev-a"])
        #expect(logs.contains("device removed"))
        // Its waiting telemetry left the outbox; dev-b's stays.
        #expect(relay.telemetry.snapshot.outboxMessages == 1)
        #expect(relay.telemetry.snapshot.inflight == 1)
        #expect(relay.telemetry.snapshot.dropped == 3)
        // No token is signed for it any more (the hub plugin asks the host for every connect).
        if case .success = relay.signSAS(deviceID: "dev-a", resource: "h/devices/dev-a", expiry: 1) {
            Issue.record("signed for a removed device")
        }
        if case .failure = relay.signSAS(deviceID: "dev-b", resource: "h/devices/dev-b", expiry: 1) {
            Issue.record("refused to sign for an active device")
        }
        // New telemetry of it is acknowledged (the broker must not redeliver it) and dropped.
        #expect(ingest("dev-a", ["a4"]) == .ok)
        #expect(relay.telemetry.snapshot.dropped == 4)
        #expect(relay.telemetry.snapshot.outboxMessages == 1)
        // Late hub acknowledgements of its old messages change nothing; dev-b's is delivered.
        ackAll(0)
        #expect(
            waitUntil(timeout: .seconds(5)) {
                relay.telemetry.snapshot.outboxMessages == 0 && relay.telemetry.snapshot.inflight == 0
            })
        #expect(relay.telemetry.snapshot.delivered == 1)
        #expect(!sent().contains { $0.hasSuffix("a4") })

        // Added again (`gatehouse devices add` clears the mark, SIGHUP): relayed again.
        try store.recordSiteCredential(deviceID: "dev-a", atMS: 2)
        relay.applyRegistry()
        #expect(logs.contains("device added again"))
        #expect(ingest("dev-a", ["a5"]) == .ok)
        #expect(waitUntil(timeout: .seconds(5)) { sent().contains { $0.hasSuffix("\ta5") } })
        if case .failure = relay.signSAS(deviceID: "dev-a", resource: "h/devices/dev-a", expiry: 1) {
            Issue.record("refused to sign for a device added again")
        }
    }

    @Test("devices removed while the daemon was stopped are dropped at start")
    func removedAtStart() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"), durability: .normal)
        _ = try store.appendToOutbox([
            OutboxRecord(deviceID: "dev-a", payload: Array("a".utf8), createdMS: 1, enqueuedMS: 1),
            OutboxRecord(deviceID: "dev-b", payload: Array("b".utf8), createdMS: 1, enqueuedMS: 1),
        ])
        try store.markRemoved(deviceID: "dev-a", atMS: 2)
        let path = try CFixturePlugin.path("loopback_upstream")
        let library = try PluginLibrary(path: path)
        let logs = CapturedLogs()
        let relay = try HostRouter(
            store: store, policy: OutboxPolicy(), signer: RecordingSigner(),
            logger: Logger(label: "test") { _ in CapturingLogHandler(logs) })
        let outFile = dir.file("sent.txt")
        let upstream = try PluginInstance(
            library: library, role: .upstream, label: "hub", configJSON: Array(#"{"out":"\#(outFile)"}"#.utf8),
            delegate: relay)
        try upstream.start()
        try relay.start(upstream: upstream)
        defer {
            relay.drain(timeout: .milliseconds(200))
            upstream.stop(drainMilliseconds: 0)
            upstream.destroy()
        }
        // Generous: on a loaded 2-core machine the first dispatch pass can take seconds.
        #expect(
            waitUntil(timeout: .seconds(20)) {
                relay.telemetry.snapshot.delivered == 1 && relay.telemetry.snapshot.outboxMessages == 0
            })
        let sent = (try? String(contentsOfFile: outFile, encoding: .utf8)) ?? ""
        #expect(sent.hasPrefix("dev-b\t") && !sent.contains("dev-a"))
        #expect(logs.contains("device removed"))
    }
}
