import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The relay end to end with real mosquitto brokers and the real gatehoused binary.
@Suite(
    "Relay end to end (mosquitto + gatehoused)", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct RelayIntegrationTests {
    @Test("telemetry arrives upstream under the device's own identity, topic and properties")
    func identityTopicProperties() throws {
        let rig = try GatewayRig()
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()
        #expect(
            try publishLines(
                ["{\"t\":21}", "{\"t\":22}"],
                topic: "devices/pump-1/messages/events/$.ct=application%2Fjson&alarm=high", broker: rig.site,
                in: rig.dir) == 0)
        #expect(try publishLines(["v1"], topic: "devices/valve-7/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { collector.lines.count >= 3 })
        let lines = collector.lines
        #expect(lines.contains("devices/pump-1/messages/events/$.ct=application%2Fjson&alarm=high {\"t\":21}"))
        #expect(lines.contains("devices/pump-1/messages/events/$.ct=application%2Fjson&alarm=high {\"t\":22}"))
        #expect(lines.contains("devices/valve-7/messages/events/ v1"))
        // The hub saw one connection per device, with IoT Hub's client id and username.
        let hubLog = rig.hub.log
        #expect(hubLog.contains("as pump-1 (p2, c0, k60, u'localhost/pump-1/?api-version=2021-04-12')"))
        #expect(hubLog.contains("as valve-7 (p2, c0, k60, u'localhost/valve-7/?api-version=2021-04-12')"))
        // No SAS token in gatehoused's logs.
        rig.gateway?.stop()
        #expect(!rig.gatewayLogs.contains("SharedAccessSignature"))
        #expect(!rig.gatewayLogs.contains("sig="))
    }

    @Test("with the hub down, messages wait in the outbox and arrive in order when it is back")
    func hubDownThenBack() throws {
        let rig = try GatewayRig()
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()
        #expect(try publishLines(["0"], topic: "devices/meter-1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { collector.lines.count == 1 })

        collector.stop()  // its persistent session stays on the hub broker, saved across the restart
        rig.hub.stop()
        let messages = (1...300).map(String.init)
        #expect(
            try publishLines(messages, topic: "devices/meter-1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { rig.daemonCounter("ingestedTotal") == 301 })
        let waiting = rig.daemonCounter("outboxMessages")
        #expect(waiting >= 250, "the outbox should hold what the hub could not take (it holds \(waiting))")

        try rig.hub.start()
        // The same subscriber identity resumes its session and gets what was queued for it.
        let resumed = try Collector(
            broker: rig.hub, topics: ["devices/#"], in: rig.dir, name: "collector", file: "collector-2")
        #expect(waitUntil(timeout: .seconds(60)) { rig.daemonCounter("outboxMessages") == 0 })
        let all = {
            (payloadsByDevice(collector.lines)["meter-1"] ?? []) + (payloadsByDevice(resumed.lines)["meter-1"] ?? [])
        }
        #expect(waitUntil(timeout: .seconds(15)) { Set(all()).count == 301 })
        // In order: the first arrival of each message follows the outbox's order.
        var seen = Set<String>()
        let firstArrivals = all().filter { seen.insert($0).inserted }
        #expect(firstArrivals == ["0"] + messages)
    }

    @Test("kill -9 in the middle of 10,000 QoS 1 messages loses none that the site broker acknowledged")
    func killNineLosesNothing() throws {
        let rig = try GatewayRig()
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        let gateway = try rig.startGateway()
        let devices = ["d1", "d2", "d3", "d4"]
        let perDevice = 2500
        // Four leaf devices publish concurrently; each mosquitto_pub exits 0 only once the site
        // broker acknowledged every message.
        let publishers = try devices.map { device in
            let input = try rig.dir.write(
                "\(device).txt", (1...perDevice).map { "\(device)-\($0)" }.joined(separator: "\n") + "\n")
            return try Subprocess(
                which("mosquitto_pub")!,
                rig.site.clientArguments + ["-q", "1", "-l", "-t", "devices/\(device)/messages/events/"],
                in: rig.dir, name: "pub-\(device)", stdin: FileHandle(forReadingAtPath: input))
        }
        // Kill once about a third has gone through.
        #expect(waitUntil(timeout: .seconds(60)) { collector.lines.count >= 3000 })
        gateway.signal(SIGKILL)
        #expect(gateway.wait(timeout: .seconds(5)) != nil)
        let atKill = collector.lines.count
        for publisher in publishers { #expect(publisher.wait(timeout: .seconds(120)) == 0) }

        try rig.startGateway()
        let expected = devices.count * perDevice
        let arrived = waitUntil(timeout: .seconds(120)) {
            payloadsByDevice(collector.lines).values.reduce(0) { $0 + Set($1).count } == expected
        }
        let byDevice = payloadsByDevice(collector.lines)
        let total = byDevice.values.reduce(0) { $0 + $1.count }
        let unique = byDevice.values.reduce(0) { $0 + Set($1).count }
        print(
            "kill -9 test: killed after \(atKill) arrivals; \(unique) of \(expected) unique arrived, \(total - unique) duplicate(s)"
        )
        #expect(arrived, "only \(unique) of \(expected) arrived")
        for device in devices {
            var seen = Set<String>()
            let first = (byDevice[device] ?? []).filter { seen.insert($0).inserted }
            #expect(first == (1...perDevice).map { "\(device)-\($0)" }, "per-device order of \(device)")
        }
    }

    @Test("a site broker restart loses nothing it acknowledged: the persistent session resumes")
    func siteBrokerRestart() throws {
        let rig = try GatewayRig()
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()
        #expect(try publishLines(["before"], topic: "devices/s1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { collector.lines.count == 1 })
        rig.site.stop()
        try rig.site.start()
        // Published while gatehoused is still reconnecting: the broker queues them for its session.
        #expect(
            try publishLines(
                (1...100).map { "after-\($0)" }, topic: "devices/s1/messages/events/", broker: rig.site, in: rig.dir)
                == 0)
        #expect(
            waitUntil(timeout: .seconds(60)) { Set(payloadsByDevice(collector.lines)["s1"] ?? []).count == 101 },
            "arrived: \(Set(payloadsByDevice(collector.lines)["s1"] ?? []).count); site broker: \(rig.site.log.suffix(1500)); gatehoused: \(rig.gatewayLogs.suffix(1500))"
        )
        #expect(rig.gatewayLogs.contains("reconnecting in"))
    }

    @Test("SAS tokens are renewed before they expire, and telemetry keeps flowing")
    func sasRenewal() throws {
        let rig = try GatewayRig(hubExtra: "sas_ttl = 10")
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()
        #expect(try publishLines(["t0"], topic: "devices/r1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        // 80 % of 10 s: the link reconnects with a fresh token at about 8 s.
        #expect(waitUntil(timeout: .seconds(20)) { rig.gatewayLogs.contains("renewing the SAS token of device r1") })
        #expect(waitUntil(timeout: .seconds(10)) { rig.hub.log.components(separatedBy: "as r1 (").count - 1 >= 2 })
        #expect(try publishLines(["t1"], topic: "devices/r1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { payloadsByDevice(collector.lines)["r1"] == ["t0", "t1"] })
    }

    @Test("SIGTERM drains and exits 0; status then says not running")
    func gracefulStop() throws {
        let rig = try GatewayRig()
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        let gateway = try rig.startGateway()
        #expect(
            try publishLines(
                (1...50).map(String.init), topic: "devices/x/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { collector.lines.count == 50 })
        gateway.signal(SIGTERM)
        #expect(gateway.wait(timeout: .seconds(15)) == 0)
        #expect(rig.gatewayLogs.contains("gatehoused stopped"))
        let status = try rig.status()
        #expect(status["running"] as? Bool == false)
        #expect((status["daemon"] as? [String: Any])?["outboxMessages"] as? Int == 0)
        let devices = status["devices"] as? [[String: Any]] ?? []
        #expect(devices.first?["id"] as? String == "x")
        #expect(devices.first?["messagesOut"] as? Int == 50)
    }

    @Test("SIGHUP with a broken file keeps the running configuration")
    func reloadRefused() throws {
        let rig = try GatewayRig()
        let gateway = try rig.startGateway()
        let original = try String(contentsOfFile: rig.configPath, encoding: .utf8)
        try (original + "\n[outbox]\nmax_bytes = \"lots\"\n").write(
            toFile: rig.configPath, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        #expect(waitUntil(timeout: .seconds(10)) { rig.gatewayLogs.contains("reload refused") })
        #expect(rig.gatewayLogs.contains("max_bytes"))
        #expect(gateway.isRunning)
        try original.write(toFile: rig.configPath, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        #expect(waitUntil(timeout: .seconds(10)) { rig.gatewayLogs.contains("configuration reloaded") })
    }
}

@Suite("Hub TLS", .serialized, .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct HubTLSTests {
    @Test("a hub whose certificate names another host is refused; nothing is sent to it")
    func hostNameChecked() throws {
        let rig = try GatewayRig()
        // Re-issue the hub's certificate, from the trusted CA, for "otherhost" only.
        let dir = rig.dir
        let openssl = which("openssl") ?? "/usr/bin/openssl"
        let ext = try dir.write("other.ext", "subjectAltName=DNS:otherhost\n")
        for arguments in [
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir.file("server.key"), "-out",
                dir.file("other.csr"), "-subj", "/CN=otherhost",
            ],
            [
                "x509", "-req", "-in", dir.file("other.csr"), "-CA", dir.file("ca.crt"), "-CAkey", dir.file("ca.key"),
                "-CAcreateserial",
                "-out", dir.file("server.crt"), "-days", "2", "-extfile", ext,
            ],
        ] {
            #expect(try Subprocess.run(openssl, arguments).0 == 0)
        }
        rig.hub.stop()
        try rig.hub.start()
        try rig.startGateway()
        #expect(
            try publishLines(
                ["secret telemetry"], topic: "devices/tls-1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(10)) { rig.gatewayLogs.contains("certificate verify failed") })
        Thread.sleep(forTimeInterval: 1)
        #expect(!rig.hub.log.contains("as tls-1 "), "the hub must never see a CONNECT")
        #expect(rig.daemonCounter("outboxMessages") == 1)
    }
}
