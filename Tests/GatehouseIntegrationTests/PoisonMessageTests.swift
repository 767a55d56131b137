import Foundation
import GatehousePluginHost
import GatehousePluginKit
import GatehouseTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Poison messages never wedge anything (issue #15), at the plugin boundary: the real `mqtt`
/// plugin (`libgatehouse-mqtt.so`) against real mosquitto brokers, with a host that records
/// every callback.
@Suite(
    "Poison messages: the mqtt plugin", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct PoisonMessageTests {
    static var library: PluginLibrary {
        get throws { try PluginLibrary(path: Paths.binDir.appendingPathComponent("libgatehouse-mqtt.so").path) }
    }

    @Test("site: a 2 MB message among 10 devices' streams is consumed, acknowledged and kept; every other arrives")
    func siteOversized() throws {
        let dir = TempDir("gatehouse-poison")
        // The broker takes the 2 MB message (no message_size_limit); the gateway's limit is 1 MiB.
        let site = try MosquittoBroker(name: "site", in: dir, extraConfig: "max_inflight_messages 500")
        let host = RecordingHost()
        let config = #"{"port":\#(site.port),"client_id":"gh-poison","max_message_bytes":"1 MiB"}"#
        var plugin = try PluginInstance(
            library: try Self.library, role: .downstream, label: "site", configJSON: Array(config.utf8), delegate: host)
        try plugin.start()
        #expect(waitUntil(timeout: .seconds(10)) { host.logged("subscribed to") })

        let devices = (0..<10).map { "dev-\($0)" }
        func stream(_ range: ClosedRange<Int>) throws {
            let publishers = try devices.map { device in
                let input = try dir.write(
                    "\(device)-\(range.lowerBound).txt", range.map { "\(device)-\($0)" }.joined(separator: "\n") + "\n")
                return try Subprocess(
                    which("mosquitto_pub")!,
                    site.clientArguments + ["-q", "1", "-l", "-t", "devices/\(device)/messages/events/n=1"],
                    in: dir, name: "pub-\(device)-\(range.lowerBound)", stdin: FileHandle(forReadingAtPath: input))
            }
            for publisher in publishers { #expect(publisher.wait(timeout: .seconds(60)) == 0) }
        }
        try stream(1...5)
        // The poison: 2 MB from dev-3, its payload recognisable.
        let big = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        #expect(FileManager.default.createFile(atPath: dir.file("big.bin"), contents: Data(big)))
        let bigTopic = "devices/dev-3/messages/events/kind=blob"
        let (status, output) = try Subprocess.run(
            which("mosquitto_pub")!, site.clientArguments + ["-q", "1", "-t", bigTopic, "-f", dir.file("big.bin")])
        #expect(status == 0, "\(output)")
        try stream(6...10)

        #expect(
            waitUntil(timeout: .seconds(20)) { host.messageCount == 100 },
            "\(host.messageCount) of 100 arrived; \(host.logs.suffix(10))")
        let byDevice = host.payloadsByDevice
        for device in devices {
            #expect(byDevice[device] == (1...10).map { "\(device)-\($0)" }, "\(device), in order")
        }
        let letters = host.deadLetters
        #expect(letters.count == 1)
        let letter = try #require(letters.first)
        #expect(letter.deviceID == "dev-3")
        #expect(letter.topic == bigTopic)
        #expect(letter.size == big.count)
        #expect(letter.reason == .tooLarge)
        #expect(letter.detail.contains("max_message_bytes (1048576)"))
        #expect(letter.head == Array(big.prefix(PluginDeadLetter.headLimit)))
        // The connection never dropped for it, and no payload byte reached a log line.
        #expect(!host.logged("reconnecting"), "\(host.logs)")
        #expect(host.logged("dead letter (too-large): device dev-3"))

        // It was acknowledged: a fresh subscriber with the same persistent session is not sent it
        // again, and takes the next message.
        plugin.stop(drainMilliseconds: 0)
        plugin.destroy()
        let again = RecordingHost()
        plugin = try PluginInstance(
            library: try Self.library, role: .downstream, label: "site", configJSON: Array(config.utf8),
            delegate: again)
        try plugin.start()
        #expect(waitUntil(timeout: .seconds(10)) { again.logged("subscribed to") })
        #expect(try publishLines(["after"], topic: "devices/dev-3/messages/events/", broker: site, in: dir) == 0)
        #expect(waitUntil(timeout: .seconds(10)) { again.messageCount == 1 })
        Thread.sleep(forTimeInterval: 0.5)
        #expect(again.deadLetters.isEmpty)
        #expect(again.payloadsByDevice["dev-3"] == ["after"])
        plugin.stop(drainMilliseconds: 0)
        plugin.destroy()
    }

    @Test("site: a message whose topic names no device is a dead letter too, not a silent drop")
    func siteNoDevice() throws {
        let dir = TempDir("gatehouse-poison")
        let site = try MosquittoBroker(name: "site", in: dir)
        let host = RecordingHost()
        let plugin = try PluginInstance(
            library: try Self.library, role: .downstream, label: "site",
            configJSON: Array(#"{"port":\#(site.port),"client_id":"gh-nodev"}"#.utf8), delegate: host)
        try plugin.start()
        defer {
            plugin.stop(drainMilliseconds: 0)
            plugin.destroy()
        }
        #expect(waitUntil(timeout: .seconds(10)) { host.logged("subscribed to") })
        #expect(try publishLines(["orphan"], topic: "devices//messages/events/", broker: site, in: dir) == 0)
        #expect(try publishLines(["fine"], topic: "devices/d/messages/events/", broker: site, in: dir) == 0)
        #expect(waitUntil(timeout: .seconds(10)) { host.messageCount == 1 && host.deadLetters.count == 1 })
        let letter = try #require(host.deadLetters.first)
        #expect(letter.reason == .noDevice)
        #expect(letter.deviceID.isEmpty)
        #expect(letter.head == Array("orphan".utf8))
        #expect(letter.size == 6)
    }

    /// A hub stand-in that drops the connection of a client sending a packet over 150,000 bytes:
    /// for a message under IoT Hub's 256 KiB, "the hub keeps refusing it".
    static func refusingHub(in dir: TempDir) throws -> MosquittoBroker {
        try MosquittoBroker(name: "hub", in: dir, tls: true, extraConfig: "max_packet_size 150000")
    }

    static func hubConfig(_ hub: MosquittoBroker) -> [UInt8] {
        Array(
            #"{"hostname":"localhost","port":\#(hub.port),"ca_file":"\#(hub.tls!.caFile)","max_delivery_attempts":3}"#
                .utf8)
    }

    static func message(_ device: String, _ text: String) -> PluginMessage {
        PluginMessage(deviceID: device, payload: Array(text.utf8), properties: [.init("n", text)])
    }

    @Test("hub: over IoT Hub's limit is refused at send; the one the hub keeps dropping is refused after 3 tries")
    func hubRefusals() throws {
        let dir = TempDir("gatehouse-poison")
        let hub = try Self.refusingHub(in: dir)
        let collector = try Collector(broker: hub, topics: ["devices/#"], in: dir)
        let host = RecordingHost()
        let plugin = try PluginInstance(
            library: try Self.library, role: .upstream, label: "hub", configJSON: Self.hubConfig(hub), delegate: host)
        try plugin.start()
        defer {
            plugin.stop(drainMilliseconds: 0)
            plugin.destroy()
        }
        #expect(plugin.openIdentity("pz-1") == .ok)
        #expect(waitUntil(timeout: .seconds(10)) { host.linkUp("pz-1") })

        // 300 KB: over 256 KiB with its properties — refused at once, link or not, never sent.
        let huge = PluginMessage(deviceID: "pz-1", payload: [UInt8](repeating: 0x42, count: 300_000))
        #expect(plugin.send(huge, token: 99) == .invalid)
        // Just over 256 KiB only because of its properties: refused too.
        let withProperties = PluginMessage(
            deviceID: "pz-1", payload: [UInt8](repeating: 1, count: 256 * 1024 - 4), properties: [.init("ab", "cde")])
        #expect(plugin.send(withProperties, token: 98) == .invalid)
        // A topic over MQTT's 65,535 bytes.
        let longBag = PluginMessage(
            deviceID: "pz-1", payload: [1], properties: [.init("k", String(repeating: "v", count: 70_000))])
        #expect(plugin.send(longBag, token: 97) == .invalid)

        #expect(plugin.send(Self.message("pz-1", "m1"), token: 1) == .ok)
        #expect(waitUntil(timeout: .seconds(10)) { host.status(of: 1) == .ok })
        // 200,000 bytes: within IoT Hub's limit, over this hub's packet limit.
        let poison = PluginMessage(deviceID: "pz-1", payload: [UInt8](repeating: 0x50, count: 200_000))
        let started = ContinuousClock.now
        // As the relay sends: in order, again while the link is not up.
        for (token, message) in [(UInt64(2), poison), (3, Self.message("pz-1", "m3")), (4, Self.message("pz-1", "m4"))]
        {
            #expect(waitUntil(timeout: .seconds(30)) { plugin.send(message, token: token) == .ok })
        }

        #expect(
            waitUntil(timeout: .seconds(60)) { host.status(of: 2) != nil },
            "no verdict on the poison; \(host.logs.suffix(12))")
        #expect(host.status(of: 2) == .refused)
        let took = ContinuousClock.now - started
        #expect(waitUntil(timeout: .seconds(15)) { host.status(of: 3) == .ok && host.status(of: 4) == .ok })
        #expect(waitUntil(timeout: .seconds(10)) { payloadsByDevice(collector.lines)["pz-1"] == ["m1", "m3", "m4"] })
        #expect(!collector.lines.contains { $0.contains("PPPP") })
        #expect(host.status(of: 99) == nil && host.status(of: 98) == nil && host.status(of: 97) == nil)
        #expect(host.logged("reporting it refused"))
        // Exactly once per token.
        #expect(host.deliveries.filter { $0 == 2 }.count == 1)
        // The backoff grew: a connection the hub accepted and dropped at its first message did
        // not reset it (otherwise every retry would be at most 500 ms).
        let retries = host.retryDelaysMS("pz-1")
        #expect((retries.max() ?? 0) >= 1000, "retries \(retries) over \(took)")
        print("hub refusal: verdict after \(took), \(retries.count) reconnect(s): \(retries) ms")
    }

    @Test("hub: after a refusal, a next message the hub drops too waits — the hub may be refusing everything")
    func hubRefusingEverything() throws {
        let dir = TempDir("gatehouse-poison")
        let hub = try Self.refusingHub(in: dir)
        let host = RecordingHost()
        let plugin = try PluginInstance(
            library: try Self.library, role: .upstream, label: "hub", configJSON: Self.hubConfig(hub), delegate: host)
        try plugin.start()
        defer {
            plugin.stop(drainMilliseconds: 0)
            plugin.destroy()
        }
        #expect(plugin.openIdentity("pz-2") == .ok)
        #expect(waitUntil(timeout: .seconds(10)) { host.linkUp("pz-2") })
        // Two messages this hub drops, back to back, and a good one behind them; each sent as the
        // relay sends, again while the link is not up.
        let poison = PluginMessage(deviceID: "pz-2", payload: [UInt8](repeating: 0x50, count: 200_000))
        for (token, message) in [(UInt64(1), poison), (2, poison)] {
            #expect(waitUntil(timeout: .seconds(30)) { plugin.send(message, token: token) == .ok })
        }
        // The good one is taken only while the link is up; once the hub drops the second poison
        // at each reconnect, the link is up for milliseconds between growing delays, and a test
        // thread descheduled on a loaded machine can miss every one. Either way it must never
        // be sent nor refused.
        let behindTaken = waitUntil(timeout: .seconds(10)) {
            plugin.send(Self.message("pz-2", "behind"), token: 3) == .ok
        }
        #expect(waitUntil(timeout: .seconds(60)) { host.status(of: 1) != nil }, "\(host.logs.suffix(10))")
        #expect(host.status(of: 1) == .refused)
        // The second is dropped as often, and more, but no PUBACK came since the first refusal.
        #expect(
            waitUntil(timeout: .seconds(60)) { host.logged("the hub may be refusing everything") },
            "\(host.logs.suffix(10))")
        #expect(host.status(of: 2) == nil && host.status(of: 3) == nil)
        // Closing the identity gives both back to the host, unsent: the outbox keeps them.
        #expect(plugin.closeIdentity("pz-2") == .ok)
        #expect(
            waitUntil(timeout: .seconds(10)) {
                host.status(of: 2) == .unavailable && host.status(of: 3) == (behindTaken ? .unavailable : nil)
            })
        #expect(host.refusedCount == 1)
    }

    @Test("hub: a link that is down never refuses anything; its messages wait and arrive")
    func hubDownNeverRefuses() throws {
        let dir = TempDir("gatehouse-poison")
        let hub = try MosquittoBroker(name: "hub", in: dir, tls: true)
        let host = RecordingHost()
        let plugin = try PluginInstance(
            library: try Self.library, role: .upstream, label: "hub", configJSON: Self.hubConfig(hub), delegate: host)
        try plugin.start()
        defer {
            plugin.stop(drainMilliseconds: 0)
            plugin.destroy()
        }
        #expect(plugin.openIdentity("dn-1") == .ok)
        #expect(waitUntil(timeout: .seconds(10)) { host.linkUp("dn-1") })
        // Messages in flight when the hub goes away, and the hub away for a while.
        for token in UInt64(1)...20 { _ = plugin.send(Self.message("dn-1", "x\(token)"), token: token) }
        hub.stop()
        Thread.sleep(forTimeInterval: 6)
        #expect(host.refusedCount == 0)
        try hub.start()
        #expect(
            waitUntil(timeout: .seconds(60)) { (UInt64(1)...20).allSatisfy { host.status(of: $0) == .ok } },
            "\(host.logs.suffix(10))")
        #expect(host.refusedCount == 0)
    }
}

/// A host that records every callback a plugin makes.
final class RecordingHost: PluginHostDelegate {
    struct Link {
        var device: String
        var state: LinkState
        var reason: String
    }

    private struct State {
        var messages: [PluginMessage] = []
        var deadLetters: [PluginDeadLetter] = []
        var delivered: [UInt64: PluginStatus] = [:]
        var deliveries: [UInt64] = []
        var links: [Link] = []
        var logs: [String] = []
    }

    private let state = Mutex(State())

    var messageCount: Int { state.withLock { $0.messages.count } }
    var deadLetters: [PluginDeadLetter] { state.withLock { $0.deadLetters } }
    var logs: [String] { state.withLock { $0.logs } }
    var deliveries: [UInt64] { state.withLock { $0.deliveries } }
    func status(of token: UInt64) -> PluginStatus? { state.withLock { $0.delivered[token] } }
    var refusedCount: Int { state.withLock { $0.delivered.values.filter { $0 == .refused }.count } }
    func logged(_ fragment: String) -> Bool { state.withLock { $0.logs.contains { $0.contains(fragment) } } }

    var payloadsByDevice: [String: [String]] {
        state.withLock { state in
            Dictionary(grouping: state.messages, by: \.deviceID).mapValues {
                $0.map { String(decoding: $0.payload, as: UTF8.self) }
            }
        }
    }

    func linkUp(_ device: String) -> Bool {
        state.withLock { $0.links.last { $0.device == device }?.state == .up }
    }

    /// The "retry in N ms" of every down report of `device`.
    func retryDelaysMS(_ device: String) -> [Int] {
        state.withLock { state in
            state.links.filter { $0.device == device && $0.state == .down }.compactMap { link in
                guard let range = link.reason.range(of: "retry in ") else { return nil }
                return Int(link.reason[range.upperBound...].prefix { $0.isNumber })
            }
        }
    }

    func ingest(_ messages: [PluginMessage], from plugin: String) -> PluginStatus {
        state.withLock { $0.messages += messages }
        return .ok
    }

    func delivered(token: UInt64, status: PluginStatus) {
        state.withLock {
            $0.delivered[token] = status
            $0.deliveries.append(token)
        }
    }

    func linkStateChanged(deviceID: String, state newState: LinkState, reason: String, plugin: String) {
        state.withLock { $0.links.append(Link(device: deviceID, state: newState, reason: reason)) }
    }

    func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError> {
        // The stand-in hub takes any password; a token's shape is all that matters here.
        .success("SharedAccessSignature sr=\(resource)&sig=test&se=\(expiry)")
    }

    func command(_ command: PluginCommand, respond: @escaping @Sendable (_ status: Int32, _ body: [UInt8]) -> Void) {
        respond(501, [])
    }

    func deliverResult(token: UInt64, status: Int32, body: [UInt8], plugin: String) {}

    func log(level: PluginLogLevel, message: String, plugin: String) {
        state.withLock { $0.logs.append(message) }
    }

    func deadLetter(_ letter: PluginDeadLetter, plugin: String) -> PluginStatus {
        state.withLock { $0.deadLetters.append(letter) }
        return .ok
    }
}
