import Foundation
import GatehouseTestSupport
import MosquittoClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `MosquittoConnection` against a real mosquitto broker: the synchronous driver, descriptors
/// numbered past 1024, deadlines against a broker that never answers, and the shape the hub side
/// of the `mqtt` transport uses (many connections in one poll loop, events through a handler).
@Suite(
    "MosquittoConnection (real mosquitto)", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct MosquittoConnectionTests {
    /// Events until `done` holds for the ones collected, or the deadline passes.
    static func events(
        from client: MosquittoConnection, until deadline: ContinuousClock.Instant,
        done: ([MosquittoEvent]) -> Bool
    ) -> [MosquittoEvent] {
        var seen: [MosquittoEvent] = []
        while !done(seen), let event = client.next(until: deadline) { seen.append(event) }
        return seen
    }

    /// Connects, subscribes to `mc/+/up`, publishes one QoS 1 message to itself and expects it
    /// back, byte for byte, with its PUBACK; then disconnects cleanly.
    /// `lowestSocket`: the number the client's socket must have at least.
    static func roundTrip(_ client: MosquittoConnection, port: Int, lowestSocket: Int32 = 0) throws {
        try client.connect(host: "127.0.0.1", port: port, keepAlive: 30)
        #expect(client.socket >= lowestSocket, "the client's socket is \(client.socket)")
        let deadline = ContinuousClock.now + .seconds(10)
        #expect(client.next(until: deadline) == .connected(code: 0))
        let subscription = try client.subscribe("mc/+/up", qos: 1)
        #expect(client.next(until: deadline) == .subscribed(mid: subscription, granted: [1]))

        let payload = Array("héllo".utf8) + [0, 255, 10]
        let sent = try client.publish(topic: "mc/a/up", payload: payload, qos: 1)
        let seen = events(from: client, until: deadline) { seen in
            seen.contains(.published(mid: sent)) && seen.contains { if case .message = $0 { true } else { false } }
        }
        #expect(seen.contains(.published(mid: sent)), "no PUBACK: \(seen)")
        #expect(seen.contains(.message(MosquittoMessage(topic: "mc/a/up", payload: payload, qos: 1))), "\(seen)")

        client.disconnect()
        #expect(client.next(until: ContinuousClock.now + .seconds(2)) == .disconnected(code: 0))
        #expect(client.socket == -1)
    }

    @Test("connect, subscribe, publish and receive, driven on the caller's thread")
    func synchronousRoundTrip() throws {
        let dir = TempDir("gatehouse-mosquitto-client")
        let broker = try MosquittoBroker(name: "round-trip", in: dir)
        let client = try MosquittoConnection(clientID: "mc-round-trip", cleanSession: true)
        try Self.roundTrip(client, port: broker.port)
    }

    @Test("a refused login is a CONNACK code, with libmosquitto's text for it")
    func refusedLogin() throws {
        let dir = TempDir("gatehouse-mosquitto-client")
        let broker = try MosquittoBroker(name: "refusing", in: dir, allowAnonymous: false)
        let client = try MosquittoConnection(clientID: "mc-refused", cleanSession: true)
        try client.setCredentials(username: "nobody", password: "not-a-secret-anyone-knows")
        try client.connect(host: "127.0.0.1", port: broker.port, keepAlive: 30)
        let event = client.next(until: ContinuousClock.now + .seconds(10))
        #expect(event == .connected(code: 5))
        #expect(Mosquitto.connackText(5).contains("not authorised"))
    }

    /// The hard RLIMIT_NOFILE, and whether it leaves room for 1,100 descriptors and more.
    static let descriptorRoom: (limit: rlim_t, enough: Bool) = {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let enough = limit.rlim_max >= 1200  // RLIM_INFINITY is rlim_t.max
        if !enough {
            print(
                "MosquittoConnectionTests: SKIPPING the descriptor ≥ 1024 test: the hard RLIMIT_NOFILE is "
                    + "\(limit.rlim_max), below the 1200 it needs (raise it, e.g. ulimit -Hn 4096, as root)")
        }
        return (limit.rlim_max, enough)
    }()

    @Test(
        "the driver works when the client's socket is numbered 1024 or more (select(2) could not watch it)",
        .enabled(
            "needs a hard RLIMIT_NOFILE of 1200 or more (the reason is printed when it is lower)",
            { Self.descriptorRoom.enough }))
    func highDescriptor() throws {
        let dir = TempDir("gatehouse-mosquitto-client")
        let broker = try MosquittoBroker(name: "high-fd", in: dir)
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
        var raised = saved
        raised.rlim_cur = saved.rlim_max
        #expect(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0, "\(String(cString: strerror(errno)))")
        // Every descriptor up to 1100 taken, so the client's socket is numbered above them. Held
        // briefly: other suites in this process may open descriptors meanwhile.
        var held: [Int32] = []
        defer {
            for fd in held { close(fd) }
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
        }
        while (held.last ?? -1) < 1100 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                Issue.record("cannot open descriptor \(held.count + 1): \(String(cString: strerror(errno)))")
                return
            }
            held.append(fd)
        }
        let client = try MosquittoConnection(clientID: "mc-high-fd", cleanSession: true)
        try Self.roundTrip(client, port: broker.port, lowestSocket: 1024)
    }

    /// A TCP listener on 127.0.0.1 that accepts nothing: connections complete in its backlog and
    /// then hear nothing, like a broker that hangs.
    final class SilentListener {
        let fd: Int32
        let port: Int

        init() throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.fd = fd
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, $0, &length) == 0
                }
            }
            guard bound else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw FixtureError("cannot listen: \(reason)")
            }
            port = Int(UInt16(bigEndian: address.sin_port))
        }

        deinit { close(fd) }
    }

    @Test("next(until:) returns nil at the deadline when the broker never answers (plain MQTT and TLS)")
    func silentBroker() throws {
        let dir = TempDir("gatehouse-mosquitto-client")
        let listener = try SilentListener()
        let ca = try Certificates.make(in: dir).caFile
        for tls in [false, true] {
            let client = try MosquittoConnection(clientID: "mc-silent", cleanSession: true)
            if tls { try client.setTLS(caFile: ca, caPath: nil) }
            try client.connect(host: "127.0.0.1", port: listener.port, keepAlive: 30)
            let start = ContinuousClock.now
            let event = client.next(until: start + .milliseconds(1500))
            let elapsed = ContinuousClock.now - start
            #expect(event == nil, "TLS \(tls): \(String(describing: event))")
            #expect(elapsed >= .milliseconds(1500), "TLS \(tls): returned after \(elapsed)")
            #expect(elapsed < .milliseconds(1900), "TLS \(tls): returned after \(elapsed), past the deadline")
        }
    }

    @Test("a broker port that nothing listens on fails at connect, at once")
    func refusedPort() throws {
        let client = try MosquittoConnection(clientID: "mc-refused-port", cleanSession: true)
        let start = ContinuousClock.now
        let error = #expect(throws: MosquittoError.self) {
            try client.connect(host: "127.0.0.1", port: freePort(), keepAlive: 30)
        }
        #expect(error?.description.contains("refused") == true, "\(String(describing: error))")
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(client.next(until: ContinuousClock.now + .milliseconds(200)) == nil)
    }

    @Test("many connections in one poll loop, events through handlers (the hub side's shape)")
    func sharedPollLoop() throws {
        let dir = TempDir("gatehouse-mosquitto-client")
        let broker = try MosquittoBroker(name: "shared-loop", in: dir)
        var events: [String: [MosquittoEvent]] = [:]
        var clients: [String: MosquittoConnection] = [:]
        for name in ["sub", "pub"] {
            let client = try MosquittoConnection(clientID: "mc-loop-\(name)", cleanSession: true)
            client.handler = { event in events[name, default: []].append(event) }
            // A non-blocking connect: nothing waits for TCP here.
            try client.connectAsync(host: "127.0.0.1", port: broker.port, keepAlive: 30)
            clients[name] = client
        }
        let subscriber = clients["sub"]!, publisher = clients["pub"]!
        var subscribed = false, published = false
        var lastMisc = ContinuousClock.now
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline,
            !(events["sub"] ?? []).contains(where: { if case .message = $0 { true } else { false } })
        {
            let order = Array(clients.values)
            var fds = order.compactMap { $0.pollDescriptor(writable: true) }
            // Every client has a socket from its connect on; none is lost in this test.
            #expect(fds.count == order.count)
            _ = poll(&fds, nfds_t(fds.count), 50)
            for (client, watched) in zip(order, fds) { client.handle(revents: watched.revents) }
            if ContinuousClock.now - lastMisc >= .milliseconds(200) {
                lastMisc = .now
                for client in order { client.loopMisc() }
            }
            if !subscribed, events["sub"]?.contains(.connected(code: 0)) == true {
                subscribed = true
                try subscriber.subscribe("mc/loop", qos: 1)
            }
            if !published, subscribed, events["pub"]?.contains(.connected(code: 0)) == true,
                events["sub"]?.contains(where: { if case .subscribed = $0 { true } else { false } }) == true
            {
                published = true
                try publisher.publish(topic: "mc/loop", payload: Array("across".utf8), qos: 1)
            }
        }
        #expect(
            events["sub"]?.contains(.message(MosquittoMessage(topic: "mc/loop", payload: Array("across".utf8), qos: 1)))
                == true, "\(events)")
        // Handlers take every event; nothing queues for next(until:).
        #expect(subscriber.next(until: .now) == nil)
    }
}
