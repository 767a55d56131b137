import Foundation
import GatehousePluginHost
import GatehousePluginKit
import GatehouseTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The site subscriber stops promptly whatever its socket is doing: here it is inside a TCP
/// connect to a broker whose packets are dropped (the kernel would retry the SYN for about two
/// minutes). The broker's address lives in a network namespace the test makes, reached over a
/// veth pair from the test's own namespace; nftables in that namespace drops (and counts) every
/// TCP packet to the broker's port. The host's own firewall is never touched.
@Suite(
    "Site subscriber: stop while the broker's packets are dropped", .serialized,
    .enabled(if: DropLab.available, "\(DropLab.unavailableReason)"))
struct SiteStopTests {
    @Test("stop returns within 2 s while a connect to the site broker hangs")
    func stopDuringHangingConnect() throws {
        let lab = try DropLab()
        defer { lab.tearDown() }
        let host = SilentHost()
        let library = try PluginLibrary(path: Paths.binDir.appendingPathComponent("libgatehouse-mqtt.so").path)
        let config = #"{"host":"\#(DropLab.brokerAddress)","port":\#(DropLab.brokerPort),"client_id":"gh-stop"}"#
        let site = try PluginInstance(
            library: library, role: .downstream, label: "site", configJSON: Array(config.utf8), delegate: host)
        try site.start()

        // The SYN went out and was dropped: the subscriber is inside its connect now.
        #expect(waitUntil(timeout: .seconds(5)) { lab.droppedPackets() >= 1 }, "no SYN reached the namespace")
        Thread.sleep(forTimeInterval: 0.3)

        let stopped = DispatchSemaphore(value: 0)
        let elapsed = Mutex<Duration?>(nil)
        let stopper = Thread {
            let clock = ContinuousClock()
            let took = clock.measure { site.stop(drainMilliseconds: 0) }
            elapsed.withLock { $0 = took }
            stopped.signal()
        }
        stopper.start()
        let inTime = stopped.wait(timeout: .now() + .seconds(10)) == .success
        if !inTime {
            // Let the connect fail so the plugin can be freed: without the DROP rule the
            // namespace answers the next SYN retransmission with a reset.
            lab.allow()
            stopped.wait()
        }
        let took = elapsed.withLock { $0 } ?? .zero
        print("site subscriber stop during a dropped connect took \(took)")
        #expect(inTime && took < .seconds(2), "stop took \(took)")
        site.destroy()
        #expect(!host.ingested.withLock { $0 })
    }
}

/// A host that accepts everything and records nothing but whether anything was ingested.
final class SilentHost: PluginHostDelegate {
    let ingested = Mutex(false)

    func ingest(_ messages: [PluginMessage], from plugin: String) -> PluginStatus {
        ingested.withLock { $0 = true }
        return .ok
    }
    func delivered(token: UInt64, status: PluginStatus) {}
    func linkStateChanged(deviceID: String, state: LinkState, reason: String, plugin: String) {}
    func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError> {
        .failure(PluginStatusError(.refused))
    }
    func command(_ command: PluginCommand, respond: @escaping @Sendable (_ status: Int32, _ body: [UInt8]) -> Void) {
        respond(501, [])
    }
    func deliverResult(token: UInt64, status: Int32, body: [UInt8], plugin: String) {}
    func log(level: PluginLogLevel, message: String, plugin: String) {}
}

/// One network namespace at the end of a veth pair whose other end stays in the test's namespace;
/// nftables in it drops TCP to the broker port. Made by the test and removed after it.
final class DropLab: @unchecked Sendable {
    // @unchecked: used from one test at a time; immutable after init.
    static let ip = "/usr/sbin/ip"
    static let nft = "/usr/sbin/nft"
    static let localAddress = "10.233.0.1"
    static let brokerAddress = "10.233.0.2"
    static let brokerPort = 1883

    static var unavailableReason: String {
        if getuid() != 0 { return "network namespaces need root" }
        for tool in [ip, nft] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing: run scripts/setup (iproute2, nftables)"
        }
        return "cannot create a network namespace here"
    }

    static let available: Bool = {
        guard getuid() == 0, [ip, nft].allSatisfy(FileManager.default.isExecutableFile) else { return false }
        let probe = "gh-probe-\(getpid())"
        guard let (code, _) = try? Subprocess.run(ip, ["netns", "add", probe]), code == 0 else { return false }
        _ = try? Subprocess.run(ip, ["netns", "del", probe])
        return true
    }()

    let namespace: String
    let localLink: String

    init() throws {
        let tag = "\(getpid() % 10_000)x\(Int.random(in: 0..<100))"
        namespace = "gh-drop-\(tag)"
        localLink = "ghd\(tag)"
        let steps: [(String, [String])] = [
            (Self.ip, ["netns", "add", namespace]),
            (Self.ip, ["link", "add", localLink, "type", "veth", "peer", "name", "ghd-broker", "netns", namespace]),
            (Self.ip, ["addr", "add", "\(Self.localAddress)/30", "dev", localLink]),
            (Self.ip, ["link", "set", localLink, "up"]),
            (Self.ip, ["-n", namespace, "addr", "add", "\(Self.brokerAddress)/30", "dev", "ghd-broker"]),
            (Self.ip, ["-n", namespace, "link", "set", "ghd-broker", "up"]),
            (Self.ip, ["-n", namespace, "link", "set", "lo", "up"]),
            (Self.ip, ["netns", "exec", namespace, Self.nft, "add", "table", "inet", "ghstop"]),
            (
                Self.ip,
                [
                    "netns", "exec", namespace, Self.nft, "add", "chain", "inet", "ghstop", "input",
                    "{ type filter hook input priority 0; policy accept; }",
                ]
            ),
            (
                Self.ip,
                [
                    "netns", "exec", namespace, Self.nft, "add", "rule", "inet", "ghstop", "input", "tcp", "dport",
                    "\(Self.brokerPort)", "counter", "drop", "comment", "\"broker\"",
                ]
            ),
        ]
        for (tool, arguments) in steps {
            let (code, output) = try Subprocess.run(tool, arguments)
            guard code == 0 else {
                tearDown()
                throw FixtureError("\(tool) \(arguments.joined(separator: " ")): \(output)")
            }
        }
    }

    /// Packets the DROP rule has dropped so far.
    func droppedPackets() -> Int {
        guard
            let (code, output) = try? Subprocess.run(
                Self.ip, ["netns", "exec", namespace, Self.nft, "list", "chain", "inet", "ghstop", "input"]),
            code == 0,
            let range = output.range(of: #"counter packets (\d+)"#, options: .regularExpression)
        else { return 0 }
        return Int(output[range].split(separator: " ").last ?? "") ?? 0
    }

    /// Removes the DROP rule: the namespace then answers with a reset (nothing listens there).
    func allow() {
        _ = try? Subprocess.run(
            Self.ip, ["netns", "exec", namespace, Self.nft, "flush", "chain", "inet", "ghstop", "input"])
    }

    func tearDown() {
        _ = try? Subprocess.run(Self.ip, ["link", "del", localLink])
        _ = try? Subprocess.run(Self.ip, ["netns", "del", namespace])
    }
}
