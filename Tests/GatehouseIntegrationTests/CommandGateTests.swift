import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The command gate end to end: DevHub (the cloud side) invokes methods and sends C2D messages
/// carrying tokens minted by PyJWT (`scripts/mint-token`); gatehoused verifies them, runs the
/// rules and delivers to a leaf device on the real site broker (`scripts/leaf-device`, paho-mqtt),
/// whose answer travels back to DevHub. Every decision lands in the audit log.
@Suite(
    "Command gate end to end", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"),
    .enabled(if: PythonTools.ready, "python3 with pyjwt[crypto] and paho-mqtt is missing: run scripts/setup"))
struct CommandGateTests {
    static let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

    static func script(_ name: String) -> String { Paths.packageRoot.appendingPathComponent("scripts/\(name)").path }

    /// The rules most command-gate tests run under.
    static let rules = """
        let operator = "Gateway.Operator" in token.roles
        let viewer = "Gateway.Viewer" in token.roles

        allow command "reboot" as "operators reboot"
          when operator and token.tid == gateway.tenant
          because "operators may restart devices"

        deny command "reboot" as "viewers cannot reboot"
          when viewer and not operator
          because "viewers may only read"

        allow command "status.read" when viewer or operator
        """

    /// DevHub + site broker + gatehoused with `[auth]`, the test's rules and one leaf device.
    /// Shared by every end-to-end suite of the command gate.
    final class Fixture: @unchecked Sendable {
        let dir = TempDir("gatehouse-gate-it")
        let devhub: DevHubRelayTests.DevHub
        let rig: GatewayRig
        let keysDir: String
        var leaf: Subprocess?

        /// `rulesText`: the rule set; `authExtra`: more `[auth]` keys; `moreConfig`: more sections.
        init(
            device: String = "pump-1", rulesText: String = CommandGateTests.rules, authExtra: String = "",
            moreConfig: String = ""
        ) throws {
            devhub = try DevHubRelayTests.DevHub(in: dir)
            keysDir = dir.file("idp")
            let (code, output) = try Subprocess.run(CommandGateTests.script("mint-token"), ["keys", keysDir])
            guard code == 0 else { throw FixtureError("mint-token keys: \(output)") }
            let rules = dir.file("rules")
            try FileManager.default.createDirectory(atPath: rules, withIntermediateDirectories: true)
            try dir.write("rules/10-commands.rules", rulesText)
            rig = try GatewayRig(
                extraConfig: """
                    [auth]
                    audiences = ["api://gatehouse"]
                    tenants = ["\(CommandGateTests.tenant)"]
                    jwks_file = "\(keysDir)/jwks.json"
                    jwks_cache = "\(dir.file("jwks-cache.json"))"
                    \(authExtra)

                    \(moreConfig)
                    """,
                hubSection:
                    "hostname = \"localhost\"\nport = \(devhub.mqttPort)\nca_file = \"\(devhub.caFile)\"",
                in: dir)
            try rig.setRulesDir(rules)
            try rig.addGatewayKeys("tenant = \"\(CommandGateTests.tenant)\"\nid = \"gw-test\"")
            try devhub.run([
                "device", "create", device, "--key", DevHubRelayTests.derivedKey(group: rig.groupKey, device: device),
            ])
            try rig.startGateway()
            let leaf = try Subprocess(
                "/usr/bin/env",
                [
                    "python3", CommandGateTests.script("leaf-device"), device, "--port", "\(rig.site.port)",
                    "--messages", "1",
                ],
                in: dir, name: "leaf-\(device)")
            self.leaf = leaf
            // The device's telemetry opens its hub identity; DevHub then routes commands to gatehouse.
            guard waitUntil(timeout: .seconds(30), { ((try? devhub.telemetry()) ?? []).count >= 1 }) else {
                throw FixtureError("no telemetry reached DevHub: \(rig.gatewayLogs.suffix(2000)) \(leaf.stderr)")
            }
        }

        func token(_ arguments: [String]) throws -> String {
            let (code, output) = try Subprocess.run(
                CommandGateTests.script("mint-token"), ["token", keysDir] + arguments)
            guard code == 0 else { throw FixtureError("mint-token: \(output)") }
            return output.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        /// Invokes a direct method through DevHub; returns (status, payload).
        func method(_ device: String, _ name: String, _ payload: [String: Any]) throws -> (Int, [String: Any]) {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: payload), as: UTF8.self)
            let output = try devhub.run(["method", device, name, body, "--timeout", "15"])
            guard let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] else {
                throw FixtureError("not JSON: \(output)")
            }
            return (json["status"] as? Int ?? -1, json["payload"] as? [String: Any] ?? [:])
        }

        /// The leaf device's events of one kind.
        func leafEvents(_ kind: String) -> [[String: Any]] {
            (leaf?.stdout ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }.filter { $0["event"] as? String == kind }
        }

        /// `gatehouse audit` as it prints (table or JSON).
        func auditOutput(_ arguments: [String] = []) throws -> String {
            let (code, output) = try Subprocess.run(
                Paths.gatehouseCLI, ["audit", "--limit", "1000", "-c", rig.configPath] + arguments)
            guard code == 0 else { throw FixtureError("gatehouse audit: \(output)") }
            return output
        }

        func audit() throws -> [[String: Any]] {
            let output = try auditOutput(["--json"])
            guard let rows = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] else {
                throw FixtureError("gatehouse audit --json: \(output)")
            }
            return rows
        }

        /// Kills gatehoused (no graceful stop: what was acknowledged must already be on disk) and
        /// starts it again over the same state database.
        func crashAndRestart() throws {
            guard let gateway = rig.gateway else { throw FixtureError("gatehoused is not running") }
            gateway.signal(SIGKILL)
            _ = gateway.wait(timeout: .seconds(10))
            try rig.startGateway()
        }

        deinit { leaf?.stop() }
    }

    @Test("an operator's reboot reaches the device and its answer comes back; a viewer's is denied by the rule named")
    func operatorAllowedViewerDenied() throws {
        let fixture = try Fixture()
        let operatorToken = try fixture.token(["--role", "Gateway.Operator", "--subject", "op-1"])
        let (status, payload) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(operatorToken)", "command_id": "cmd-1", "delay": 5])
        #expect(status == 200, "\(payload) \(fixture.rig.gatewayLogs.suffix(2000))")
        #expect(payload["device"] as? String == "pump-1")
        let methods = fixture.leafEvents("method")
        #expect(methods.count == 1)
        // The device got the arguments, never the token or the command id.
        let delivered = methods.first?["payload"] as? String ?? ""
        #expect(delivered.contains("\"delay\""))
        #expect(
            !delivered.contains("authorization") && !delivered.contains(operatorToken) && !delivered.contains("cmd-1"))

        let viewerToken = try fixture.token(["--role", "Gateway.Viewer", "--subject", "viewer-1"])
        let (denied, reason) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(viewerToken)", "command_id": "cmd-2"])
        #expect(denied == 403)
        #expect(reason["reason"] as? String == "viewers may only read")
        #expect((reason["rules"] as? [String])?.first?.hasPrefix("viewers cannot reboot (") == true)
        #expect(fixture.leafEvents("method").count == 1)  // nothing more reached the device

        // The same command id again: a replay, denied even with a valid token.
        let (replayed, replayReason) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(operatorToken)", "command_id": "cmd-1"])
        #expect(replayed == 403)
        #expect((replayReason["reason"] as? String)?.hasPrefix("replayed command") == true)

        let audit = try fixture.audit()
        let allow = audit.first { $0["effect"] as? String == "allow" }
        #expect(allow?["deviceID"] as? String == "pump-1")
        #expect(allow?["commandName"] as? String == "reboot")
        #expect(allow?["caller"] as? String == "op-1")
        #expect(allow?["tenant"] as? String == Self.tenant)
        #expect((allow?["rules"] as? String)?.hasPrefix("operators reboot (") == true)
        let deny = audit.first { $0["caller"] as? String == "viewer-1" }
        #expect(deny?["effect"] as? String == "deny")
        #expect((deny?["rules"] as? String)?.hasPrefix("viewers cannot reboot (") == true)
        #expect(audit.count == 3)
        // One log line a decision, and no token in the logs.
        #expect(fixture.rig.gatewayLogs.contains("command allowed"))
        #expect(fixture.rig.gatewayLogs.contains("command denied"))
        #expect(!fixture.rig.gatewayLogs.contains(operatorToken) && !fixture.rig.gatewayLogs.contains(viewerToken))
    }

    @Test("a C2D message with an operator's token reaches the device without the token; one without is refused")
    func cloudToDeviceMessages() throws {
        let fixture = try Fixture()
        let operatorToken = try fixture.token(["--role", "Gateway.Operator"])
        try fixture.devhub.run([
            "c2d", "pump-1", "restart now", "--property", "authorization=Bearer \(operatorToken)", "--property",
            "command=reboot", "--property", "zone=A",
        ])
        try fixture.devhub.run(["c2d", "pump-1", "no token", "--property", "command=reboot"])
        #expect(
            waitUntil(timeout: .seconds(20)) { fixture.leafEvents("c2d").count >= 1 },
            "\(fixture.rig.gatewayLogs.suffix(2000))")
        #expect(waitUntil(timeout: .seconds(10)) { ((try? fixture.audit()) ?? []).count == 2 })
        let received = fixture.leafEvents("c2d")
        #expect(received.count == 1)
        #expect(received.first?["payload"] as? String == "restart now")
        let properties = received.first?["properties"] as? [String: String] ?? [:]
        #expect(properties["command"] == "reboot" && properties["zone"] == "A")
        #expect(properties["$.mid"]?.isEmpty == false)
        #expect(properties["authorization"] == nil)
        let refused = try fixture.audit().first { $0["effect"] as? String == "deny" }
        #expect((refused?["reason"] as? String)?.hasPrefix("no caller token") == true)
    }

    @Test("JWKS rotation: a new key is accepted after SIGHUP refreshes the keys; the removed key's tokens are refused")
    func keyRotation() throws {
        let fixture = try Fixture()
        let oldToken = try fixture.token(["--role", "Gateway.Operator"])
        #expect(
            try fixture.method("pump-1", "reboot", ["authorization": "Bearer \(oldToken)", "command_id": "k-1"]).0
                == 200)

        // A second identity-provider key, not yet published: its tokens name an unknown kid.
        let rotated = fixture.dir.file("idp-2")
        let (code, output) = try Subprocess.run(
            CommandGateTests.script("mint-token"), ["keys", rotated, "--kid", "demo-2"])
        #expect(code == 0, "\(output)")
        let (_, newTokenOutput) = try Subprocess.run(
            CommandGateTests.script("mint-token"), ["token", rotated, "--role", "Gateway.Operator"])
        let newToken = newTokenOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        let (unknown, unknownReason) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(newToken)", "command_id": "k-2"])
        #expect(unknown == 403)
        #expect((unknownReason["reason"] as? String)?.hasPrefix("token refused: auth.unknown-key") == true)

        // Rotate: the published set now holds only the new key; SIGHUP refreshes it.
        try FileManager.default.removeItem(atPath: fixture.keysDir + "/jwks.json")
        try FileManager.default.copyItem(atPath: rotated + "/jwks.json", toPath: fixture.keysDir + "/jwks.json")
        fixture.rig.gateway?.signal(SIGHUP)
        #expect(
            waitUntil(timeout: .seconds(10)) { fixture.rig.gatewayLogs.contains("kids=demo-2") },
            "\(fixture.rig.gatewayLogs.suffix(1500))")
        #expect(
            try fixture.method("pump-1", "reboot", ["authorization": "Bearer \(newToken)", "command_id": "k-3"]).0
                == 200)
        let (old, oldReason) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(oldToken)", "command_id": "k-4"])
        #expect(old == 403)
        #expect((oldReason["reason"] as? String)?.hasPrefix("token refused: auth.unknown-key") == true)
    }

    @Test("forged, expired and misdirected tokens are denied with their reason; the daemon keeps running")
    func attacksThroughTheDaemon() throws {
        let fixture = try Fixture()
        let good = try fixture.token(["--role", "Gateway.Operator"])
        let parts = good.split(separator: ".").map(String.init)
        let noneHeader = Data(#"{"alg":"none","typ":"JWT"}"#.utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "")
        var tampered = Data(base64URL: parts[1]) ?? Data()
        tampered = Data(
            String(decoding: tampered, as: UTF8.self).replacingOccurrences(
                of: "Gateway.Operator", with: "Gateway.Operatox"
            ).utf8)
        let cases: [(String, String, String)] = [
            ("alg none", "\(noneHeader).\(parts[1]).", "auth.algorithm-not-allowed"),
            ("tampered payload", "\(parts[0]).\(tampered.base64URLEncoded).\(parts[2])", "auth.bad-signature"),
            ("expired", try fixture.token(["--role", "Gateway.Operator", "--ttl", "-600"]), "auth.expired"),
            (
                "not yet valid", try fixture.token(["--role", "Gateway.Operator", "--not-before", "900"]),
                "auth.not-yet-valid"
            ),
            (
                "wrong audience", try fixture.token(["--role", "Gateway.Operator", "--audience", "api://other"]),
                "auth.wrong-audience"
            ),
            (
                "wrong tenant",
                try fixture.token(["--role", "Gateway.Operator", "--tenant", "9188040d-6c67-4c5b-b112-36a304b66dad"]),
                "auth.wrong-"
            ),
            ("garbage", "not.a.jwt", "auth.malformed"),
            ("oversize", String(repeating: "a", count: 9000) + ".b.c", "auth.too-large"),
        ]
        for (index, (name, token, code)) in cases.enumerated() {
            let (status, payload) = try fixture.method(
                "pump-1", "reboot", ["authorization": "Bearer \(token)", "command_id": "attack-\(index)"])
            #expect(status == 403, "\(name)")
            let reason = payload["reason"] as? String ?? ""
            #expect(reason.hasPrefix("token refused: \(code)"), "\(name): \(reason)")
            #expect(!reason.contains(token), "\(name): the reason repeats the token")
        }
        #expect(fixture.rig.gateway?.isRunning == true)
        #expect(fixture.leafEvents("method").isEmpty)
        // And the good one still works.
        let (status, _) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(good)", "command_id": "after-attacks"])
        #expect(status == 200)
    }
}

/// The project's Python helpers (scripts/mint-token, scripts/leaf-device) can run.
enum PythonTools {
    static let ready: Bool = {
        guard let python = which("python3"),
            let (code, _) = try? Subprocess.run(python, ["-c", "import jwt, cryptography, paho.mqtt"])
        else { return false }
        return code == 0
    }()
}

extension Data {
    init?(base64URL text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }

    var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
