import Crypto
import Foundation
import GatehouseTestSupport
import Testing

/// The relay against DevHub, which verifies every device's SAS token the way IoT Hub does:
/// an independent check of gatehouse's signer, identities and topics.
@Suite(
    "Relay to DevHub", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct DevHubRelayTests {
    /// A running gatehouse-devhub on free loopback ports.
    final class DevHub: @unchecked Sendable {
        // @unchecked: immutable after init; the child is used through its thread-safe API.
        let dir: TempDir
        let mqttPort = freePort()
        let controlPort = freePort()
        let child: Subprocess

        init(in dir: TempDir) throws {
            self.dir = dir
            child = try Subprocess(
                Paths.binDir.appendingPathComponent("gatehouse-devhub").path,
                [
                    "serve", "--data", dir.file("devhub"), "--mqtt", "127.0.0.1:\(mqttPort)", "--http",
                    "127.0.0.1:\(controlPort)", "--hub-name", "localhost",
                ], in: dir, name: "devhub")
            guard
                waitUntil(
                    timeout: .seconds(20),
                    { MosquittoBroker.listening(controlPort) && MosquittoBroker.listening(mqttPort) })
            else { throw FixtureError("DevHub did not start: \(child.stderr)") }
        }

        var caFile: String { dir.file("devhub/ca.pem") }

        @discardableResult
        func run(_ arguments: [String]) throws -> String {
            let (status, output) = try Subprocess.run(
                Paths.binDir.appendingPathComponent("gatehouse-devhub").path,
                arguments + ["--url", "http://127.0.0.1:\(controlPort)"])
            guard status == 0 else {
                throw FixtureError("gatehouse-devhub \(arguments.joined(separator: " ")): \(output)")
            }
            return output
        }

        /// Received telemetry as (device, topic, payload).
        func telemetry() throws -> [(device: String, topic: String, payload: String)] {
            let json = try run(["telemetry", "--json", "--limit", "100000"])
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8))
            let messages =
                (object as? [String: Any])?["messages"] as? [[String: Any]] ?? (object as? [[String: Any]] ?? [])
            return messages.map {
                ($0["deviceId"] as? String ?? "", $0["topic"] as? String ?? "", $0["payload"] as? String ?? "")
            }
        }
    }

    static func derivedKey(group: [UInt8], device: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Data(device.utf8), using: SymmetricKey(data: group)))
            .base64EncodedString()
    }

    func rig(devhub: DevHub, dir: TempDir) throws -> GatewayRig {
        try GatewayRig(
            hubPlugin: "mqtt",
            hubSection: "hostname = \"localhost\"\nport = \(devhub.mqttPort)\nca_file = \"\(devhub.caFile)\"", in: dir)
    }

    @Test("telemetry reaches DevHub under SAS-verified device identities, with its property bag")
    func verifiedIdentities() throws {
        let dir = TempDir("gatehouse-devhub-it")
        let devhub = try DevHub(in: dir)
        let rig = try rig(devhub: devhub, dir: dir)
        for device in ["pump-1", "valve-7"] {
            try devhub.run(["device", "create", device, "--key", Self.derivedKey(group: rig.groupKey, device: device)])
        }
        try rig.startGateway()
        #expect(
            try publishLines(
                ["a", "b"], topic: "devices/pump-1/messages/events/$.ct=text%2Fplain&zone=A", broker: rig.site,
                in: rig.dir) == 0)
        #expect(try publishLines(["c"], topic: "devices/valve-7/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(20)) { ((try? devhub.telemetry()) ?? []).count == 3 })
        let received = try devhub.telemetry()
        #expect(received.filter { $0.device == "pump-1" }.map(\.payload) == ["a", "b"])
        #expect(
            received.first { $0.device == "pump-1" }?.topic == "devices/pump-1/messages/events/$.ct=text%2Fplain&zone=A"
        )
        #expect(received.filter { $0.device == "valve-7" }.map(\.payload) == ["c"])
    }

    @Test("new leaf devices in the allow-list are registered with DPS on their behalf, then relayed; others wait")
    func provisionedThroughDPS() throws {
        let dir = TempDir("gatehouse-devhub-it")
        let devhub = try DevHub(in: dir)
        let rig = try GatewayRig(
            extraConfig: """
                [provisioning]
                id_scope = "0ne00DEVHUB"
                endpoint = "localhost"
                port = \(devhub.mqttPort)
                ca_file = "\(devhub.caFile)"
                allow = ["prov-*"]
                """,
            hubSection: "hostname = \"localhost\"\nport = \(devhub.mqttPort)\nca_file = \"\(devhub.caFile)\"", in: dir)
        // Only the enrollment group exists on the hub side: the devices do not, until DPS makes them.
        try devhub.run(["group", "create", "site-a", "--key", Data(rig.groupKey).base64EncodedString()])
        try rig.startGateway()
        for device in ["prov-1", "prov-2", "stranger"] {
            #expect(
                try publishLines(
                    ["hello from \(device)"], topic: "devices/\(device)/messages/events/", broker: rig.site, in: rig.dir
                ) == 0)
        }
        #expect(
            waitUntil(timeout: .seconds(30)) { ((try? devhub.telemetry()) ?? []).count == 2 },
            "\(rig.gatewayLogs.suffix(3000))")
        #expect(Set(try devhub.telemetry().map(\.device)) == ["prov-1", "prov-2"])
        #expect(rig.gatewayLogs.contains("device registered with DPS"))
        let devices = (try rig.status()["devices"] as? [[String: Any]]) ?? []
        let states = Dictionary(
            uniqueKeysWithValues: devices.map { ($0["id"] as? String ?? "", $0["provisioning"] as? String ?? "") })
        #expect(states["prov-1"] == "assigned")
        #expect(states["stranger"]?.hasPrefix("failed: not in [provisioning] allow") == true)
        // the stranger's message waits
        #expect(waitUntil(timeout: .seconds(5)) { rig.daemonCounter("outboxMessages") == 1 })
    }

    @Test("a device the hub knows with another key is refused; its messages wait in the outbox")
    func wrongKeyRefused() throws {
        let dir = TempDir("gatehouse-devhub-it")
        let devhub = try DevHub(in: dir)
        let rig = try rig(devhub: devhub, dir: dir)
        try devhub.run([
            "device", "create", "intruder", "--key",
            Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString(),
        ])
        try rig.startGateway()
        #expect(try publishLines(["x"], topic: "devices/intruder/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { rig.gatewayLogs.contains("hub refused the connection") })
        #expect(try devhub.telemetry().isEmpty)
        // The status heartbeat is written every second.
        #expect(waitUntil(timeout: .seconds(5)) { rig.daemonCounter("outboxMessages") == 1 })
    }
}

/// The group key inside a software TPM: imported once by the CLI, then every device's key is
/// derived in the TPM and DevHub verifies the tokens signed with it.
@Suite(
    "Relay to DevHub with the group key in a TPM", .serialized,
    .enabled(if: MosquittoBroker.available && which("swtpm") != nil, "needs mosquitto and swtpm: run scripts/setup"))
struct TPMRelayTests {
    @Test("devices' SAS keys derived inside swtpm are accepted by DevHub; no key material is left in plaintext")
    func tpmSigner() throws {
        let dir = TempDir("gatehouse-tpm-it")
        // A fresh software TPM on a Unix socket (its control channel is the path + ".ctrl").
        let state = dir.file("swtpm-state")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let socket = dir.file("swtpm.sock")
        let swtpm = try Subprocess(
            which("swtpm")!,
            [
                "socket", "--tpm2", "--tpmstate", "dir=\(state)", "--server", "type=unixio,path=\(socket)", "--ctrl",
                "type=unixio,path=\(socket).ctrl", "--flags", "not-need-init,startup-clear",
            ], in: dir, name: "swtpm")
        defer { swtpm.stop() }
        #expect(waitUntil(timeout: .seconds(10)) { FileManager.default.fileExists(atPath: socket) })

        let devhub = try DevHubRelayTests.DevHub(in: dir)
        let rig = try GatewayRig(
            hubSection: "hostname = \"localhost\"\nport = \(devhub.mqttPort)\nca_file = \"\(devhub.caFile)\"", in: dir)
        // Replace the plaintext key file with the TPM.
        let groupKeyText = Data(rig.groupKey).base64EncodedString()
        var config = try String(contentsOfFile: rig.configPath, encoding: .utf8)
        config = config.replacingOccurrences(
            of: "group_key_file = \"\(dir.file("group.key"))\"",
            with: "tpm = \"swtpm:path=\(socket)\"\ngroup_key_blob = \"\(dir.file("tpm/group-key.blob"))\"")
        try config.write(toFile: rig.configPath, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: dir.file("group.key"))

        let keyInput = try dir.write("key-input", groupKeyText + "\n")
        let importer = try Subprocess(
            Paths.gatehouseCLI, ["tpm", "import-group-key", "-c", rig.configPath], in: dir, name: "import",
            stdin: FileHandle(forReadingAtPath: keyInput))
        #expect(importer.wait(timeout: .seconds(30)) == 0, "\(importer.stderr)")
        try FileManager.default.removeItem(atPath: keyInput)
        #expect(importer.stdout.contains("imported into the TPM"))

        let derivedKeys = ["t-1", "t-2"].map { DevHubRelayTests.derivedKey(group: rig.groupKey, device: $0) }
        for (device, key) in zip(["t-1", "t-2"], derivedKeys) {
            try devhub.run(["device", "create", device, "--key", key])
        }
        try rig.startGateway()
        #expect(try publishLines(["one"], topic: "devices/t-1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(try publishLines(["two"], topic: "devices/t-2/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(
            waitUntil(timeout: .seconds(20)) { ((try? devhub.telemetry()) ?? []).count == 2 },
            "\(rig.gatewayLogs.suffix(2000))")
        rig.gateway?.stop()

        // Nothing on disk or in the logs holds the group key, a derived key or a signature:
        // scan every file gatehouse wrote (state, logs, the wrapped blob), not DevHub's own data.
        let secrets = [groupKeyText] + derivedKeys
        let files = try FileManager.default.subpathsOfDirectory(atPath: dir.path).filter {
            !$0.hasPrefix("devhub") && !$0.hasPrefix("swtpm") && !$0.hasPrefix("cmd")
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: dir.file(file)) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            for secret in secrets { #expect(!text.contains(secret), "\(file) holds key material") }
            #expect(!text.contains("SharedAccessSignature"), "\(file) holds a SAS token")
            #expect(data.range(of: Data(rig.groupKey)) == nil, "\(file) holds the raw group key bytes")
        }
        #expect(files.contains("tpm/group-key.blob"))
    }
}
