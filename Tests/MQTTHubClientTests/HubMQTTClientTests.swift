import COpenSSL
import Foundation
import GatehouseTestSupport
import MQTTCodec
import MQTTHubClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The hub links' MQTT client (`HubMQTTClient`) against a real mosquitto serving TLS, driven on
/// the test's thread the way the transport's I/O loop drives it.
@Suite("The mqtt transport's hub connection", .enabled(if: MosquittoBroker.available, "needs mosquitto"))
struct HubMQTTClientTests {
    /// What the client reported, in order.
    final class Recorder {
        var connacks: [ConnAck.ReturnCode] = []
        var connectFailures: [String] = []
        var disconnects: [String?] = []
        var acknowledged: [UInt16] = []
        var messages: [(topic: String, payload: String)] = []
        var oversized: [(topic: String, bytes: Int)] = []

        func record(_ event: HubMQTTClient.Event) {
            switch event {
            case .connected(let code): connacks.append(code)
            case .connectFailed(let reason): connectFailures.append(reason)
            case .disconnected(let reason): disconnects.append(reason)
            case .acknowledged(let id): acknowledged.append(id)
            case .message(let topic, let payload): messages.append((topic, String(decoding: payload, as: UTF8.self)))
            case .oversized(let topic, let bytes): oversized.append((topic, bytes))
            }
        }
    }

    /// A client with its recorder, its TLS context trusting `hub`'s CA, connecting to it.
    final class Rig {
        let client = HubMQTTClient()
        let recorder = Recorder()
        let context: OpaquePointer

        init(hub: MosquittoBroker, clientID: String, keepAlive: UInt16 = 30) throws {
            var message = [CChar](repeating: 0, count: 256)
            guard let context = gh_tls_client_context(hub.tls?.caFile, "127.0.0.1", &message, message.count) else {
                throw FixtureError("no TLS context")
            }
            self.context = context
            client.handler = { [recorder] in recorder.record($0) }
            try client.connect(
                address: "127.0.0.1", port: hub.port, context: context, serverName: "127.0.0.1",
                credentials: .init(
                    clientID: clientID, username: "hub.example/\(clientID)/?api-version=2021-04-12",
                    password: "SharedAccessSignature sr=x&sig=y&se=1", keepAlive: keepAlive))
        }

        deinit {
            client.close()
            SSL_CTX_free(context)
        }

        /// Drives the client as `HubConnections.IOLoop` does until `done` holds or `limit` passes.
        @discardableResult
        func pump(for limit: Duration, until done: () -> Bool = { false }) -> Bool {
            let deadline = ContinuousClock.now + limit
            while ContinuousClock.now < deadline {
                if done() { return true }
                client.flush()
                if let events = client.pollEvents {
                    var watched = pollfd(fd: client.descriptor, events: events, revents: 0)
                    _ = poll(&watched, 1, client.hasBufferedInput ? 0 : 20)
                    if watched.revents != 0 || client.hasBufferedInput { client.handle(revents: watched.revents) }
                } else {
                    usleep(20_000)
                }
                client.tick()
            }
            return done()
        }

        func connected() throws {
            guard pump(for: .seconds(10), until: { !recorder.connacks.isEmpty }) else {
                throw FixtureError("no CONNACK: \(recorder.connectFailures)")
            }
            #expect(recorder.connacks == [.accepted])
        }
    }

    @Test("connects over TLS; 500 QoS 1 PUBLISHes in one write are all acknowledged, in order; QoS 1 messages arrive")
    func publishAndReceive() throws {
        let dir = TempDir()
        let hub = try MosquittoBroker(name: "hub", in: dir, tls: true)
        let rig = try Rig(hub: hub, clientID: "dev-1")
        try rig.connected()
        rig.client.subscribe("devices/dev-1/#", qos: .atLeastOnce)
        rig.pump(for: .milliseconds(300))

        var ids: [UInt16] = []
        for index in 0..<500 {
            ids.append(
                try rig.client.publish(
                    topic: "devices/dev-1/messages/events/", payload: Array("m\(index)".utf8), qos: .atLeastOnce))
        }
        #expect(Set(ids).count == 500 && !ids.contains(0))
        #expect(
            rig.pump(for: .seconds(15)) { rig.recorder.acknowledged.count == 500 && rig.recorder.messages.count == 500 }
        )
        #expect(rig.recorder.acknowledged == ids)
        #expect(rig.recorder.messages.map(\.payload) == (0..<500).map { "m\($0)" })
        #expect(hub.log.contains("as dev-1"))

        rig.client.disconnect()
        #expect(rig.recorder.disconnects.count == 1 && rig.recorder.disconnects.first == .some(nil))
        #expect(!rig.client.isOpen)
        #expect(throws: HubMQTTClient.PublishRefusal.notConnected) {
            try rig.client.publish(topic: "t", payload: [], qos: .atLeastOnce)
        }
    }

    @Test("a message from the hub over the limit is acknowledged and dropped; the next one arrives")
    func oversizedMessage() throws {
        let dir = TempDir()
        let hub = try MosquittoBroker(name: "hub", in: dir, tls: true)
        let rig = try Rig(hub: hub, clientID: "dev-2")
        try rig.connected()
        let topic = "devices/dev-2/messages/devicebound/"
        rig.client.subscribe(topic + "#", qos: .atLeastOnce)
        rig.pump(for: .milliseconds(300))

        let big = try dir.write("big.txt", String(repeating: "x", count: 300 * 1024))
        let publish = which("mosquitto_pub")!
        #expect(try Subprocess.run(publish, hub.clientArguments + ["-q", "1", "-t", topic + "big", "-f", big]).0 == 0)
        #expect(
            try Subprocess.run(publish, hub.clientArguments + ["-q", "1", "-t", topic + "small", "-m", "after"]).0 == 0)
        #expect(rig.pump(for: .seconds(10)) { rig.recorder.messages.count == 1 })
        #expect(rig.recorder.oversized.count == 1)
        #expect(rig.recorder.oversized.first?.bytes ?? 0 > HubMQTTClient.maxIncomingPacket)
        #expect(rig.recorder.messages.first?.payload == "after")
        #expect(rig.recorder.disconnects.isEmpty, "one oversized message must not cost the connection")
    }

    @Test("keepalive: pings keep a quiet connection up; a hub that stops answering is found out in two periods")
    func keepalive() throws {
        let dir = TempDir()
        let hub = try MosquittoBroker(name: "hub", in: dir, tls: true)
        let rig = try Rig(hub: hub, clientID: "dev-3", keepAlive: 1)
        try rig.connected()
        rig.pump(for: .seconds(3))
        #expect(rig.recorder.disconnects.isEmpty, "answered pings keep the connection")

        hub.signal(SIGSTOP)
        defer { hub.signal(SIGCONT) }
        let stopped = ContinuousClock.now
        #expect(rig.pump(for: .seconds(10)) { !rig.recorder.disconnects.isEmpty })
        let took = ContinuousClock.now - stopped
        #expect(took < .milliseconds(3_500), "found out after \(took)")
        #expect(rig.recorder.disconnects.first??.contains("keepalive") == true)
        #expect(!rig.client.isOpen)
    }

    @Test("a refused CONNACK is reported with its code and leaves no connection")
    func refused() throws {
        let dir = TempDir()
        let hub = try MosquittoBroker(name: "hub", in: dir, tls: true, allowAnonymous: false)
        let rig = try Rig(hub: hub, clientID: "dev-4")
        #expect(rig.pump(for: .seconds(10)) { !rig.recorder.connacks.isEmpty || !rig.recorder.connectFailures.isEmpty })
        #expect(rig.recorder.connacks.count == 1 && rig.recorder.connacks.first != .accepted)
        #expect(!rig.client.isOpen)
        #expect(rig.recorder.disconnects.isEmpty)
    }
}
