import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// gatehoused with the `amqp` upstream transport through DevHub's AMQP endpoint (SASL MSSBCBS as
/// Azure's C SDK, CBS put-tokens verified per device), with the real site broker.
@Suite(
    "Relay over AMQP to DevHub", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct AMQPRelayTests {
    func rig(_ devhub: AMQPDevHub, dir: TempDir, hubExtra: String = "") throws -> GatewayRig {
        try GatewayRig(hubPlugin: "amqp", hubSection: devhub.hubSection + "\n" + hubExtra, in: dir)
    }

    @Test(
        "1,000 leaf devices: 995 on one connection, the rest on a second; each message under its own device, in order")
    func thousandDevices() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let devhub = try AMQPDevHub(in: dir)
        let rig = try rig(devhub, dir: dir)
        try devhub.createDevices(1000, prefix: "leaf-", groupKey: rig.groupKey)
        try rig.startGateway()
        try leafLoad(["publish", "\(rig.site.port)", "1000", "3", "leaf-"], in: dir)
        #expect(
            waitUntil(timeout: .seconds(120)) { ((try? devhub.telemetry()) ?? []).count >= 3000 },
            "\(rig.gatewayLogs.suffix(3000))")
        let telemetry = try devhub.telemetry()
        var byDevice: [String: [String]] = [:]
        for message in telemetry { byDevice[message.device, default: []].append(message.payload) }
        #expect(byDevice.count == 1000)
        #expect(byDevice.values.allSatisfy { $0 == ["0", "1", "2"] })
        let connections = try devhub.connections()
        #expect(connections.map(\.devices).sorted() == [5, 995], "\(connections)")
        #expect(connections.allSatisfy { $0.authentication == "SASL MSSBCBS" })
        rig.gateway?.stop()
        #expect(!rig.gatewayLogs.contains("SharedAccessSignature"))
        #expect(!rig.gatewayLogs.contains("sig="))
    }

    @Test("a device whose token is refused leaves the others on its connection flowing; its messages wait")
    func refusedTokenIsolated() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let devhub = try AMQPDevHub(in: dir)
        let rig = try rig(devhub, dir: dir)
        try devhub.createDevices(3, prefix: "good-", groupKey: rig.groupKey)
        try rig.startGateway()
        #expect(try publishLines(["x"], topic: "devices/intruder/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(
            waitUntil(timeout: .seconds(15)) { rig.gatewayLogs.contains("the hub refused the device's token (401") })
        try leafLoad(["publish", "\(rig.site.port)", "3", "20", "good-"], in: dir)
        #expect(
            waitUntil(timeout: .seconds(20)) { ((try? devhub.telemetry()) ?? []).count == 60 },
            "\(rig.gatewayLogs.suffix(2000))")
        #expect(try devhub.telemetry().allSatisfy { $0.device.hasPrefix("good-") })
        #expect(waitUntil(timeout: .seconds(5)) { rig.daemonCounter("outboxMessages") == 1 })
        #expect(try devhub.connections().map(\.devices) == [3])
    }

    @Test("kill -9 of gatehoused, then a DevHub restart, mid-stream: no acknowledged message lost, order kept")
    func killNineAndHubRestart() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let devhub = try AMQPDevHub(in: dir)
        let rig = try rig(devhub, dir: dir)
        try devhub.createDevices(10, prefix: "meter-", groupKey: rig.groupKey)
        let gateway = try rig.startGateway()
        let publisher = try Subprocess(
            "/usr/bin/env",
            ["python3", AMQPDevHub.fixture("leaf-load.py"), "publish", "\(rig.site.port)", "10", "600", "meter-"],
            in: dir, name: "publisher")
        #expect(waitUntil(timeout: .seconds(60)) { ((try? devhub.telemetry()) ?? []).count >= 500 })
        gateway.signal(SIGKILL)
        _ = gateway.wait(timeout: .seconds(5))
        try rig.startGateway()
        #expect(
            waitUntil(timeout: .seconds(60)) {
                devhub.restartIfCrashed()
                return ((try? devhub.telemetry()) ?? []).count >= 2500
            })
        try devhub.restart()
        #expect(publisher.wait(timeout: .seconds(120)) == 0)
        #expect(
            waitUntil(timeout: .seconds(90)) {
                devhub.restartIfCrashed()
                return Set(((try? devhub.telemetry()) ?? []).map { "\($0.device) \($0.payload)" }).count == 6000
            },
            "\(rig.gatewayLogs.suffix(3000))")
        // At least once: a message in flight at the kill may arrive twice; first arrivals keep the order.
        var firstArrivals: [String: [Int]] = [:]
        var seen = Set<String>()
        for message in try devhub.telemetry() where seen.insert("\(message.device) \(message.payload)").inserted {
            firstArrivals[message.device, default: []].append(Int(message.payload) ?? -1)
        }
        #expect(firstArrivals.count == 10)
        #expect(firstArrivals.values.allSatisfy { $0 == Array(0..<600) })
    }

    @Test("a C2D message the gate refuses arrives at DevHub as rejected; a method gets 403")
    func refusedCommands() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let devhub = try AMQPDevHub(in: dir)
        let rig = try rig(devhub, dir: dir)
        try devhub.createDevices(1, prefix: "pump-", groupKey: rig.groupKey)
        try rig.startGateway()
        #expect(try publishLines(["hi"], topic: "devices/pump-0/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(20)) { ((try? devhub.telemetry()) ?? []).count == 1 })
        try devhub.run(["c2d", "pump-0", "reboot now", "--property", "command=reboot"])
        #expect(
            waitUntil(timeout: .seconds(20)) { (try? devhub.c2d("pump-0").first?["outcome"] as? String) == "rejected" },
            "\(rig.gatewayLogs.suffix(2000))")
        let output = try devhub.run(["method", "pump-0", "reboot", "{}", "--timeout", "10"])
        let answer = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        #expect(answer?["status"] as? Int == 403)
    }

    @Test("`methods` as device-ID patterns: only matching devices attach method links; C2D reaches every device")
    func methodLinksByPattern() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let devhub = try AMQPDevHub(in: dir)
        let rig = try rig(devhub, dir: dir, hubExtra: #"methods = ["pump-*"]"#)
        try devhub.createDevices(1, prefix: "pump-", groupKey: rig.groupKey)
        try devhub.createDevices(1, prefix: "sensor-", groupKey: rig.groupKey)
        try rig.startGateway()
        for device in ["pump-0", "sensor-0"] {
            #expect(
                try publishLines(["hi"], topic: "devices/\(device)/messages/events/", broker: rig.site, in: rig.dir)
                    == 0)
        }
        #expect(waitUntil(timeout: .seconds(20)) { ((try? devhub.telemetry()) ?? []).count == 2 })
        // The pump's method reaches the gate (which refuses it: no token); the sensor has no
        // method link, so the hub answers 404 itself.
        let output = try devhub.run(["method", "pump-0", "reboot", "{}", "--timeout", "10"])
        let answer = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any]
        #expect(answer?["status"] as? Int == 403)
        #expect {
            try devhub.run(["method", "sensor-0", "reboot", "{}", "--timeout", "10"])
        } throws: { error in
            "\(error)".contains("has not subscribed to direct methods")
        }
        // C2D needs no method link: the sensor's command reaches the gate and is refused upstream.
        try devhub.run(["c2d", "sensor-0", "reboot now", "--property", "command=reboot"])
        #expect(
            waitUntil(timeout: .seconds(20)) {
                (try? devhub.c2d("sensor-0").first?["outcome"] as? String) == "rejected"
            },
            "\(rig.gatewayLogs.suffix(2000))")
    }

    @Test("tokens are renewed on a short lifetime while traffic flows; DevHub never closes the links")
    func renewal() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let devhub = try AMQPDevHub(in: dir)
        let rig = try rig(devhub, dir: dir, hubExtra: "sas_ttl = 10")
        try devhub.createDevices(2, prefix: "renew-", groupKey: rig.groupKey)
        try rig.startGateway()
        for _ in 0..<16 {
            try leafLoad(["publish", "\(rig.site.port)", "2", "1", "renew-"], in: dir)
            Thread.sleep(forTimeInterval: 1)
        }
        #expect(waitUntil(timeout: .seconds(10)) { ((try? devhub.telemetry()) ?? []).count == 32 })
        #expect(!rig.gatewayLogs.contains("detached"), "\(rig.gatewayLogs.suffix(2000))")
        #expect(!rig.gatewayLogs.contains("the hub refused"))
    }

    func leafLoad(_ arguments: [String], in dir: TempDir) throws {
        let (status, output) = try Subprocess.run(
            "/usr/bin/env", ["python3", AMQPDevHub.fixture("leaf-load.py")] + arguments, timeout: .seconds(120))
        guard status == 0 else { throw FixtureError("leaf-load.py \(arguments.joined(separator: " ")): \(output)") }
    }
}

/// gatehouse-devhub with its AMQP endpoint on free loopback ports, hub name `devhub.local`.
final class AMQPDevHub: @unchecked Sendable {
    // @unchecked: used from one test at a time.
    let dir: TempDir
    let amqpPort = freePort()
    let mqttPort = freePort()
    let controlPort = freePort()
    private(set) var child: Subprocess
    private var runs = 0

    static func fixture(_ name: String) -> String {
        Paths.packageRoot.appendingPathComponent("Tests/Fixtures/\(name)").path
    }

    init(in dir: TempDir) throws {
        self.dir = dir
        child = try Self.start(dir: dir, amqp: amqpPort, mqtt: mqttPort, control: controlPort, run: 1)
        runs = 1
    }

    private static func start(dir: TempDir, amqp: Int, mqtt: Int, control: Int, run: Int) throws -> Subprocess {
        let child = try Subprocess(
            Paths.binDir.appendingPathComponent("gatehouse-devhub").path,
            [
                "serve", "--data", dir.file("devhub"), "--mqtt", "127.0.0.1:\(mqtt)", "--http", "127.0.0.1:\(control)",
                "--hub-name", "devhub.local", "--amqp", "127.0.0.1:\(amqp)",
            ], in: dir, name: "devhub-\(run)")
        guard
            waitUntil(timeout: .seconds(20), { MosquittoBroker.listening(control) && MosquittoBroker.listening(amqp) })
        else { throw FixtureError("DevHub did not start: \(child.stderr)") }
        return child
    }

    /// Stops DevHub (SIGTERM) and starts it again on the same ports and data.
    func restart() throws {
        child.stop()
        runs += 1
        child = try Self.start(dir: dir, amqp: amqpPort, mqtt: mqttPort, control: controlPort, run: runs)
    }

    var caFile: String { dir.file("devhub/ca.pem") }

    var isRunning: Bool { child.isRunning }

    /// DevHub (up to 380f5b1) sometimes crashes (SIGSEGV in libqpid-proton on an event loop
    /// thread) when an AMQP client vanishes with deliveries in flight: a DevHub bug, reported.
    /// Until it is fixed the test records it as a known issue and starts DevHub again, so that
    /// gatehouse's own guarantee (nothing acknowledged is lost) is still checked.
    func restartIfCrashed() {
        guard !child.isRunning else { return }
        withKnownIssue("DevHub crashed after an AMQP client was killed mid-stream") { #expect(child.isRunning) }
        try? restart()
    }

    /// The `[hub]` keys of the amqp transport for this DevHub: its name, its address, its CA.
    var hubSection: String {
        "hostname = \"devhub.local\"\naddress = \"127.0.0.1\"\nport = \(amqpPort)\nca_file = \"\(caFile)\""
    }

    var url: String { "http://127.0.0.1:\(controlPort)" }

    func createDevices(_ count: Int, prefix: String, groupKey: [UInt8]) throws {
        let (status, output) = try Subprocess.run(
            "/usr/bin/env",
            [
                "python3", Self.fixture("leaf-load.py"), "create", url, "\(count)", prefix,
                Data(groupKey).base64EncodedString(),
            ],
            timeout: .seconds(120))
        guard status == 0 else { throw FixtureError("creating DevHub devices: \(output)") }
    }

    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        let (status, output) = try Subprocess.run(
            Paths.binDir.appendingPathComponent("gatehouse-devhub").path, arguments + ["--url", url])
        guard status == 0 else { throw FixtureError("gatehouse-devhub \(arguments.joined(separator: " ")): \(output)") }
        return output
    }

    /// Received telemetry in arrival order.
    func telemetry() throws -> [(device: String, payload: String)] {
        let json = try run(["telemetry", "--json", "--limit", "100000"])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8))
        let messages =
            (object as? [String: Any])?["messages"] as? [[String: Any]] ?? (object as? [[String: Any]] ?? [])
        return messages.map { ($0["deviceId"] as? String ?? "", $0["payload"] as? String ?? "") }
    }

    func get(_ path: String) throws -> Any {
        let (status, output) = try Subprocess.run("/usr/bin/curl", ["-sf", url + path])
        guard status == 0 else { throw FixtureError("GET \(path): \(output)") }
        return try JSONSerialization.jsonObject(with: Data(output.utf8))
    }

    /// `GET /api/connections`: each network connection, its authentication and device count.
    func connections() throws -> [(devices: Int, authentication: String)] {
        ((try get("/api/connections")) as? [[String: Any]] ?? []).filter { $0["transport"] as? String == "amqp" }.map {
            ($0["deviceCount"] as? Int ?? -1, $0["authentication"] as? String ?? "")
        }
    }

    func c2d(_ device: String) throws -> [[String: Any]] {
        (try get("/api/devices/\(device)/c2d")) as? [[String: Any]] ?? []
    }

    deinit { child.stop() }
}

/// Against a hub that is not DevHub: Debian's python-proton (`Tests/Fixtures/amqp-hub.py`), SASL
/// ANONYMOUS, its own check of every put-token's signature.
@Suite(
    "Relay over AMQP (python-proton hub)", .serialized,
    .enabled(
        if: MosquittoBroker.available && PythonAMQPHub.available,
        "needs mosquitto and python3-qpid-proton: run scripts/setup"))
struct AMQPIndependentHubTests {
    @Test("devices on one connection, tokens verified by python-proton's hub, properties carried, order kept")
    func independentHub() throws {
        let dir = TempDir("gatehouse-amqp-it")
        let hub = try PythonAMQPHub(in: dir)
        let rig = try GatewayRig(hubPlugin: "amqp", hubSection: hub.hubSection, in: dir)
        try rig.startGateway()
        for device in ["pump-1", "valve-7"] {
            #expect(
                try publishLines(
                    (0..<5).map { "\(device) #\($0)" },
                    topic: "devices/\(device)/messages/events/$.ct=text%2Fplain&zone=A",
                    broker: rig.site, in: rig.dir) == 0)
        }
        #expect(
            waitUntil(timeout: .seconds(30)) { hub.events("telemetry").count >= 10 },
            "\(rig.gatewayLogs.suffix(3000))\n\(hub.log.suffix(2000))")
        let telemetry = hub.events("telemetry")
        for device in ["pump-1", "valve-7"] {
            let bodies = telemetry.filter { $0["device"] as? String == device }.compactMap { $0["body"] as? String }
            #expect(bodies == (0..<5).map { "\(device) #\($0)" })
        }
        #expect(telemetry.first?["content_type"] as? String == "text/plain")
        #expect((telemetry.first?["properties"] as? [String: Any])?["zone"] as? String == "A")
        // A put-token for each of the two devices at least, every one accepted.
        let tokens = hub.events("token")
        #expect(tokens.count >= 2 && tokens.allSatisfy { $0["status"] as? Int == 200 }, "\(tokens)")
    }
}

/// `Tests/Fixtures/amqp-hub.py` on a free port with a throwaway CA, verifying tokens with the
/// rig's enrollment-group key.
final class PythonAMQPHub: @unchecked Sendable {
    // @unchecked: immutable after init; the child is used through its thread-safe API.
    static let python = "/usr/bin/python3"
    static var available: Bool {
        (try? Subprocess.run(python, ["-c", "import proton"]).0) == 0
    }

    let dir: TempDir
    let port = freePort()
    let tls: MosquittoBroker.TLSFiles
    let child: Subprocess
    var eventsFile: String { dir.file("amqp-hub-events.jsonl") }
    var controlDir: String { dir.file("amqp-hub-control") }

    init(in dir: TempDir, groupKey: [UInt8] = (0..<32).map { UInt8($0) }, extra: [String] = []) throws {
        self.dir = dir
        tls = try Certificates.make(in: dir)
        let keyFile = try dir.write("amqp-hub-group.key", Data(groupKey).base64EncodedString())
        child = try Subprocess(
            Self.python,
            [
                Paths.packageRoot.appendingPathComponent("Tests/Fixtures/amqp-hub.py").path, "--port", "\(port)",
                "--cert", tls.certFile, "--key", tls.keyFile, "--group-key-file", keyFile, "--out",
                dir.file("amqp-hub-events.jsonl"), "--control", dir.file("amqp-hub-control"), "--sasl", "anonymous",
            ] + extra, in: dir, name: "amqp-hub")
        guard waitUntil(timeout: .seconds(10), { MosquittoBroker.listening(port) }) else {
            throw FixtureError("the AMQP test hub did not start: \(child.stderr)")
        }
    }

    /// The `[hub]` keys that point gatehoused's amqp transport at it.
    var hubSection: String {
        "hostname = \"localhost\"\nport = \(port)\nca_file = \"\(tls.caFile)\"\nsasl = \"anonymous\""
    }

    var log: String { child.stderr }

    func events(_ kind: String) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: eventsFile, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }.filter { $0["kind"] as? String == kind }
    }

    func control(_ request: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: request)
        let name = "\(controlDir)/\(UUID().uuidString)"
        try data.write(to: URL(fileURLWithPath: name + ".tmp"))
        rename(name + ".tmp", name + ".json")
    }

    deinit { child.stop() }
}
