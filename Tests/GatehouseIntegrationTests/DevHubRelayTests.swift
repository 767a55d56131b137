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
