import DevHubKit
import Foundation
import GatehouseTestSupport
import StrictJSON
import Testing

/// The real `gatehouse-devhub` binary on free loopback ports, with its control API.
final class DevHubProcess: @unchecked Sendable {
    // @unchecked: immutable after init; `child` is used through its thread-safe API.
    let dir: TempDir
    let child: Subprocess
    let mqttPort: Int
    let control: ControlClient
    let caFile: String
    let hubName = "127.0.0.1"

    static var binary: String { Paths.binDir.appendingPathComponent("gatehouse-devhub").path }

    init(dir: TempDir = TempDir("devhub-test")) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw FixtureError(
                "gatehouse-devhub is not built at \(Self.binary): run `swift build --product gatehouse-devhub`"
            )
        }
        self.dir = dir
        let data = dir.file("data")
        try? FileManager.default.removeItem(atPath: data + "/devhub.json")
        let child = try Subprocess(
            Self.binary,
            [
                "serve", "--data", data, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level",
                "debug",
            ],
            in: dir, name: "devhub-\(UUID().uuidString.prefix(6))")
        self.child = child
        var info: JSONValue?
        _ = waitUntil(timeout: .seconds(30)) {
            if let bytes = FileManager.default.contents(atPath: data + "/devhub.json"),
                let json = try? JSONValue(parsing: Array(bytes)), json["pid"]?.intValue == Int(child.pid)
            {
                info = json
                return true
            }
            return !child.isRunning
        }
        guard let info, let port = info["mqtt"]?["port"]?.intValue,
            let control = (info["control"]?.stringValue).flatMap(ControlClient.init(url:)),
            let caFile = info["caFile"]?.stringValue
        else {
            child.stop()
            throw FixtureError("gatehouse-devhub did not start:\n\(child.stderr)")
        }
        mqttPort = port
        self.control = control
        self.caFile = caFile
    }

    deinit { child.stop() }

    var log: String { child.stderr }

    func stop() { child.stop() }

    @discardableResult
    func api(_ method: ControlClient.Method, _ path: String, _ body: JSONValue? = nil) throws
        -> ControlClient.Response
    {
        try control.request(method, path, body: body, timeout: .seconds(30))
    }

    /// Creates a device with a known key; returns the key bytes.
    @discardableResult
    func createDevice(_ id: String, keyByte: UInt8 = 0x11) throws -> [UInt8] {
        let key = Array(repeating: keyByte, count: 32)
        let response = try api(
            .post, "/api/devices",
            .object(["deviceId": .string(id), "primaryKey": .string(SymmetricKeyText(bytes: key).base64)])
        )
        guard response.status == 201 else {
            throw FixtureError("cannot create \(id): \(response.body)")
        }
        return key
    }

    /// mosquitto_pub/mosquitto_sub arguments for a connection as device `id`.
    func deviceArguments(
        _ id: String, key: [UInt8], expiry: Int64? = nil, username: String? = nil,
        clientID: String? = nil
    )
        -> [String]
    {
        let token = SASVerifier.makeToken(
            resource: "\(hubName)/devices/\(id)", key: key,
            expiry: expiry ?? Int64(Date().timeIntervalSince1970) + 3600)
        return [
            "-h", "127.0.0.1", "-p", String(mqttPort), "--cafile", caFile, "-V", "mqttv311", "-i",
            clientID ?? id, "-u",
            username ?? "\(hubName)/\(id)/?api-version=2021-04-12", "-P", token,
        ]
    }

    func cli(_ arguments: [String]) throws -> (Int32, String) {
        try Subprocess.run(
            Self.binary, arguments + ["--url", "http://\(control.host):\(control.port)"],
            timeout: .seconds(60))
    }
}

func mosquitto(_ tool: String, _ arguments: [String], timeout: Duration = .seconds(20)) throws -> (
    Int32, String
) {
    guard let path = which(tool) else {
        throw FixtureError("\(tool) is not installed (scripts/setup installs mosquitto-clients)")
    }
    return try Subprocess.run(path, arguments, timeout: timeout)
}

/// DevHub refusals and happy paths with an independent client: mosquitto_pub / mosquitto_sub.
@Suite(.serialized) struct DevHubProcessTests {
    @Test func refusesBadUsernamesSignaturesExpiredTokensAndForeignTopics() throws {
        let devhub = try DevHubProcess()
        let key = try devhub.createDevice("dev-1")
        try devhub.createDevice("dev-2", keyByte: 0x22)
        let publish = ["-t", "devices/dev-1/messages/events/", "-m", "hello", "-q", "1"]

        // Bad username format: CONNACK 4.
        var (status, output) = try mosquitto(
            "mosquitto_pub", devhub.deviceArguments("dev-1", key: key, username: "dev-1") + publish)
        #expect(status == 4, "\(output)")
        #expect(output.contains("bad user name or password"))

        // A signature made with another key: CONNACK 5.
        (status, output) = try mosquitto(
            "mosquitto_pub",
            devhub.deviceArguments("dev-1", key: Array(repeating: 0x99, count: 32)) + publish)
        #expect(status == 5, "\(output)")
        #expect(output.contains("not authorised"))

        // An expired token: CONNACK 5.
        (status, output) = try mosquitto(
            "mosquitto_pub",
            devhub.deviceArguments("dev-1", key: key, expiry: Int64(Date().timeIntervalSince1970) - 5)
                + publish)
        #expect(status == 5, "\(output)")

        // dev-2's own valid token, presented as dev-1: wrong resource, CONNACK 5.
        let foreign = devhub.deviceArguments("dev-2", key: Array(repeating: 0x22, count: 32))
        var asDev1 = devhub.deviceArguments("dev-1", key: key)
        asDev1[asDev1.count - 1] = foreign[foreign.count - 1]
        (status, output) = try mosquitto("mosquitto_pub", asDev1 + publish)
        #expect(status == 5, "\(output)")

        // The client id must be the device id: CONNACK 2.
        (status, output) = try mosquitto(
            "mosquitto_pub", devhub.deviceArguments("dev-1", key: key, clientID: "dev-2") + publish)
        #expect(status == 2, "\(output)")

        let log = devhub.log
        #expect(log.contains("is neither {hub}/{deviceId}/?api-version"))
        #expect(log.contains("signature does not match the identity's keys"))
        #expect(log.contains("token expired at"))
        #expect(log.contains("token is for resource \"127.0.0.1/devices/dev-2\""))
        #expect(log.contains("is not the device id in the username"))
        #expect(!log.contains("sig="))

        // Subscribing to another device's C2D topic: SUBACK 0x80.
        (status, output) = try mosquitto(
            "mosquitto_sub",
            devhub.deviceArguments("dev-1", key: key) + [
                "-t", "devices/dev-2/messages/devicebound/#", "-q", "1", "-W", "5",
            ])
        #expect(output.contains("All subscription requests were denied"), "\(output)")
        #expect(devhub.log.contains("refused subscription to \"devices/dev-2/messages/devicebound/#\""))

        // Publishing to another device's telemetry topic: the connection is closed, nothing recorded.
        (status, output) = try mosquitto(
            "mosquitto_pub",
            devhub.deviceArguments("dev-1", key: key) + [
                "-t", "devices/dev-2/messages/events/", "-m", "spoof", "-q", "1",
            ])
        #expect(
            devhub.log.contains(
                "published to \"devices/dev-2/messages/events/\", not one of its own topics"))
        let telemetry = try devhub.api(.get, "/api/telemetry")
        #expect(telemetry.body["messages"] == .array([]))
    }

    @Test func dpsRefusesAWrongGroupKey() throws {
        let devhub = try DevHubProcess()
        let groupKey = SymmetricKeyText(bytes: Array(repeating: 0x33, count: 32))
        try devhub.api(
            .post, "/api/enrollment-groups",
            .object(["name": .string("g"), "primaryKey": .string(groupKey.base64)]))
        func register(with key: [UInt8]) throws -> (Int32, String) {
            let token = SASVerifier.makeToken(
                resource: "0ne00DEVHUB/registrations/reg-1", key: key,
                expiry: Int64(Date().timeIntervalSince1970) + 600,
                keyName: "registration")
            return try mosquitto(
                "mosquitto_pub",
                [
                    "-h", "127.0.0.1", "-p", String(devhub.mqttPort), "--cafile", devhub.caFile, "-V",
                    "mqttv311", "-i", "reg-1",
                    "-u", "0ne00DEVHUB/registrations/reg-1/api-version=2019-03-31", "-P", token, "-t",
                    "$dps/registrations/PUT/iotdps-register/?$rid=1", "-m", #"{"registrationId":"reg-1"}"#,
                    "-q", "1",
                ])
        }
        let good = SASVerifier.deriveDeviceKey(groupKey: groupKey.bytes, registrationID: "reg-1")
        var (status, output) = try register(with: good)
        #expect(status == 0, "\(output)\n\(devhub.log)")
        (status, output) = try register(
            with: SASVerifier.deriveDeviceKey(groupKey: [1, 2, 3], registrationID: "reg-1"))
        #expect(status == 5, "\(output)")
        #expect(devhub.log.contains("signature matches no enrollment"))
        // The good registration created the hub device with the derived key.
        let device = try devhub.api(.get, "/api/devices/reg-1")
        #expect(device.body["primaryKey"] == .string(SymmetricKeyText(bytes: good).base64))
    }

    @Test func telemetryC2DAndOneConnectionPerDevice() throws {
        let devhub = try DevHubProcess()
        let key = try devhub.createDevice("dev-1")

        // Telemetry with a property bag, recorded exactly and in order.
        var (status, output) = try mosquitto(
            "mosquitto_pub",
            devhub.deviceArguments("dev-1", key: key) + [
                "-t", "devices/dev-1/messages/events/%24.ct=application%2Fjson&zeta=1&alpha=a%20b%26c&flag",
                "-m", #"{"t":1}"#,
                "-q", "1",
            ])
        #expect(status == 0, "\(output)")
        let messages = try devhub.api(.get, "/api/telemetry?device=dev-1").body["messages"]
        guard case .array(let list)? = messages, let first = list.first else {
            Issue.record("no telemetry: \(String(describing: messages))")
            return
        }
        #expect(
            first["properties"]?.description
                == #"[["$.ct","application/json"],["zeta","1"],["alpha","a b&c"],["flag",null]]"#)
        #expect(first["payload"] == .string(#"{"t":1}"#))

        // C2D to a persistent-session subscriber, sent through the CLI.
        let subscriber = try Subprocess(
            which("mosquitto_sub")!,
            devhub.deviceArguments("dev-1", key: key) + [
                "-c", "-q", "1", "-v", "-t", "devices/dev-1/messages/devicebound/#",
            ], in: devhub.dir, name: "c2d-sub")
        defer { subscriber.stop() }
        #expect(
            waitUntil(timeout: .seconds(10)) {
                devhub.log.contains("device dev-1 connected (clean session false")
            })
        let (cliStatus, cliOutput) = try devhub.cli([
            "c2d", "dev-1", "--property", "cmd=open/valve", "--property", "n=1", "go",
        ])
        #expect(cliStatus == 0, "\(cliOutput)")
        #expect(
            waitUntil(timeout: .seconds(10)) { subscriber.stdout.contains(" go") },
            "\(subscriber.stdout)\n\(devhub.log)")
        let line =
            subscriber.stdout.split(separator: "\n").first { $0.hasSuffix(" go") }.map(String.init) ?? ""
        #expect(line.hasPrefix("devices/dev-1/messages/devicebound/$.mid="))
        #expect(line.contains("&cmd=open%2Fvalve&n=1 go"))

        let (devicesStatus, devices) = try devhub.cli(["devices"])
        #expect(devicesStatus == 0)
        #expect(devices.contains("dev-1\tconnected since"))

        // A second connection for dev-1 replaces the first.
        (status, output) = try mosquitto(
            "mosquitto_pub",
            devhub.deviceArguments("dev-1", key: key) + [
                "-t", "devices/dev-1/messages/events/", "-m", "x",
            ])
        #expect(status == 0, "\(output)")
        #expect(devhub.log.contains("a new connection for device dev-1 replaced this one"))
    }

    @Test func stateSurvivesARestart() throws {
        let dir = TempDir("devhub-restart")
        var devhub: DevHubProcess? = try DevHubProcess(dir: dir)
        let key = try devhub!.createDevice("dev-1")
        let ca = try String(contentsOfFile: devhub!.caFile, encoding: .utf8)
        var (status, output) = try mosquitto(
            "mosquitto_pub",
            devhub!.deviceArguments("dev-1", key: key) + [
                "-t", "devices/dev-1/messages/events/k=v", "-m", "before", "-q", "1",
            ])
        #expect(status == 0, "\(output)")
        try devhub!.api(
            .post, "/api/devices/dev-1/c2d", .object(["payload": .string("queued while offline")]))
        try devhub!.api(.patch, "/api/devices/dev-1/twin/desired", .object(["interval": .int(5)]))
        devhub!.stop()
        devhub = nil

        let again = try DevHubProcess(dir: dir)
        #expect(try String(contentsOfFile: again.caFile, encoding: .utf8) == ca)
        let telemetry = try again.api(.get, "/api/telemetry?device=dev-1").body
        #expect(telemetry.description.contains("\"before\""))
        let twin = try again.api(.get, "/api/devices/dev-1/twin").body
        #expect(twin["properties"]?["desired"]?["interval"] == .int(5))
        // The same key still works, and the queued C2D message arrives.
        (status, output) = try mosquitto(
            "mosquitto_sub",
            again.deviceArguments("dev-1", key: key) + [
                "-q", "1", "-C", "1", "-W", "10", "-t", "devices/dev-1/messages/devicebound/#",
            ])
        #expect(status == 0, "\(output)\n\(again.log)")
        #expect(output.contains("queued while offline"))
    }

    @Test func cliReportsControlAPIErrors() throws {
        let devhub = try DevHubProcess()
        try devhub.createDevice("dev-1")
        var (status, output) = try devhub.cli(["method", "dev-1", "reboot", "{}", "--timeout", "2"])
        #expect(status == 2, "\(output)")
        #expect(output.contains("device dev-1 is not connected"))
        (status, output) = try devhub.cli(["twin", "patch-desired", "dev-1", #"{"mode":"eco"}"#])
        #expect(status == 0, "\(output)")
        #expect(output.contains("\"mode\": \"eco\""))
        (status, output) = try devhub.cli(["twin", "get", "nobody"])
        #expect(status == 2)
        #expect(output.contains("no device nobody"))
    }
}
