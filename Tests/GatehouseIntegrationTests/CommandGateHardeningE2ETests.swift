import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The command gate cannot be tricked, end to end (DevHub + site broker + gatehoused + a paho-mqtt
/// leaf device, tokens minted by PyJWT — the harness of `CommandGateTests`): replays are refused
/// across a restart of gatehoused, one caller flooding its share of the replay ledger does not
/// stop the others, a command name full of terminal controls shows escaped in the daemon's log and
/// in `gatehouse audit`, and a token field spelled `Authorization` never reaches the device.
@Suite(
    "Command gate hardening end to end", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"),
    .enabled(if: PythonTools.ready, "python3 with pyjwt[crypto] and paho-mqtt is missing: run scripts/setup"))
struct CommandGateHardeningE2ETests {
    static let tenant = CommandGateTests.tenant

    /// Only operators may reboot; everything else is denied.
    static let rules = """
        let operator = "Gateway.Operator" in token.roles

        allow command "reboot" as "operators reboot"
          when operator and token.tid == gateway.tenant
          because "operators may restart devices"
        """

    /// The command gate's end-to-end harness under this suite's rules.
    static func fixture(authExtra: String = "") throws -> CommandGateTests.Fixture {
        try CommandGateTests.Fixture(rulesText: rules, authExtra: authExtra)
    }

    @Test("a command id used before gatehoused was killed and restarted is still refused")
    func replayAfterRestart() throws {
        let fixture = try Self.fixture()
        let token = try fixture.token(["--role", "Gateway.Operator", "--subject", "op-1"])
        let (status, payload) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(token)", "command_id": "r-1", "delay": 1])
        #expect(status == 200, "\(payload) \(fixture.rig.gatewayLogs.suffix(2000))")
        #expect(fixture.leafEvents("method").count == 1)

        try fixture.crashAndRestart()
        // The restarted daemon takes commands (a fresh id passes) …
        var fresh = -1
        _ = waitUntil(timeout: .seconds(30)) {
            fresh =
                (try? fixture.method(
                    "pump-1", "reboot", ["authorization": "Bearer \(token)", "command_id": "r-2", "delay": 1]))?.0 ?? -1
            return fresh != 404 && fresh != 504 && fresh != -1
        }
        #expect(fresh == 200, "\(fixture.rig.gatewayLogs.suffix(2000))")
        // … but not the id used before the restart, nor the one just used.
        for id in ["r-1", "r-2"] {
            let (replayed, reason) = try fixture.method(
                "pump-1", "reboot", ["authorization": "Bearer \(token)", "command_id": id])
            #expect(replayed == 403, "\(id)")
            #expect((reason["reason"] as? String)?.hasPrefix("replayed command: id \(id)") == true, "\(reason)")
        }
        #expect(fixture.leafEvents("method").count == 2)
    }

    @Test("one caller flooding past its share (commands the rules deny) is refused; another caller's commands pass")
    func floodingCallerOnly() throws {
        let fixture = try Self.fixture(authExtra: "replay_max_per_caller = 5")
        let flooder = try fixture.token(["--role", "Gateway.Viewer", "--subject", "flooder"])
        let operatorToken = try fixture.token(["--role", "Gateway.Operator", "--subject", "op-2"])
        var reasons: [String] = []
        for index in 0..<8 {
            let (status, payload) = try fixture.method(
                "pump-1", "reboot", ["authorization": "Bearer \(flooder)", "command_id": "flood-\(index)"])
            #expect(status == 403)
            reasons.append(payload["reason"] as? String ?? "")
        }
        #expect(reasons.prefix(5).allSatisfy { $0.hasPrefix("no rule allows") }, "\(reasons)")
        #expect(reasons.suffix(3).allSatisfy { $0.hasPrefix("replay.caller-quota") }, "\(reasons)")
        // Another caller is not affected …
        for index in 0..<3 {
            let (status, payload) = try fixture.method(
                "pump-1", "reboot", ["authorization": "Bearer \(operatorToken)", "command_id": "op-\(index)"])
            #expect(status == 200, "\(payload)")
        }
        #expect(fixture.leafEvents("method").count == 3)
        // … and the flooder's share is still full after a restart (the ledger is on disk).
        try fixture.crashAndRestart()
        var status = -1
        var reason = ""
        _ = waitUntil(timeout: .seconds(30)) {
            guard
                let (code, payload) = try? fixture.method(
                    "pump-1", "reboot", ["authorization": "Bearer \(flooder)", "command_id": "flood-after"])
            else { return false }
            (status, reason) = (code, payload["reason"] as? String ?? "")
            return code == 403
        }
        #expect(status == 403 && reason.hasPrefix("replay.caller-quota"), "\(reason)")
        let audit = try fixture.audit()
        #expect(audit.filter { ($0["reason"] as? String)?.hasPrefix("replay.caller-quota") == true }.count == 4)
    }

    @Test("a command name with ESC, CR and U+202E shows escaped in the daemon's log and in gatehouse audit")
    func escapedInLogAndAudit() throws {
        let fixture = try Self.fixture()
        let token = try fixture.token(["--role", "Gateway.Operator", "--subject", "op-3"])
        let name = "x\u{1B}[2J\r\u{202E}exe.reboot"
        try fixture.devhub.run([
            "c2d", "pump-1", "now", "--property", "authorization=Bearer \(token)", "--property", "command=\(name)",
        ])
        #expect(
            waitUntil(timeout: .seconds(20)) { fixture.rig.gatewayLogs.contains("command denied") },
            "\(fixture.rig.gatewayLogs.suffix(2000))")
        let escaped = #"x\u{1B}[2J\r\u{202E}exe.reboot"#
        let logs = fixture.rig.gatewayLogs
        let line = logs.split(separator: "\n").first { $0.contains("command denied") }.map(String.init) ?? ""
        #expect(line.contains("command=\"\(escaped)\""), "\(line)")
        for raw in ["\u{1B}", "\r", "\u{202E}"] {
            #expect(!logs.contains(raw), "a raw \(Array(raw.unicodeScalars)) in the daemon's log")
        }

        let table = try fixture.auditOutput()
        #expect(table.contains(escaped), "\(table)")
        let json = try fixture.auditOutput(["--json"])
        for output in [table, json] {
            #expect(!output.unicodeScalars.contains { $0 == "\u{1B}" || $0 == "\r" || $0 == "\u{202E}" })
        }
        // The JSON still reads back as the original name.
        let rows = try fixture.audit()
        #expect(rows.first?["commandName"] as? String == name)
        #expect(!logs.contains(token) && !table.contains(token) && !json.contains(token))
    }

    @Test("a token field spelled Authorization (payload or property) does not reach the leaf device")
    func tokenFieldAnyCase() throws {
        let fixture = try Self.fixture()
        let token = try fixture.token(["--role", "Gateway.Operator", "--subject", "op-4"])
        let (status, payload) = try fixture.method(
            "pump-1", "reboot", ["Authorization": "Bearer \(token)", "command_id": "a-1", "delay": 2])
        #expect(status == 200, "\(payload) \(fixture.rig.gatewayLogs.suffix(2000))")
        let delivered = fixture.leafEvents("method").first?["payload"] as? String ?? ""
        #expect(delivered.contains("\"delay\""))
        #expect(!delivered.lowercased().contains("authorization") && !delivered.contains(token), "\(delivered)")

        // Two spellings: refused, nothing delivered.
        let (ambiguous, reason) = try fixture.method(
            "pump-1", "reboot",
            ["authorization": "Bearer \(token)", "AUTHORIZATION": "Bearer \(token)", "command_id": "a-2"])
        #expect(ambiguous == 403)
        #expect((reason["reason"] as? String)?.hasPrefix("ambiguous caller token") == true, "\(reason)")
        #expect(fixture.leafEvents("method").count == 1)

        // The C2D property form.
        try fixture.devhub.run([
            "c2d", "pump-1", "restart", "--property", "AUTHORIZATION=Bearer \(token)", "--property", "command=reboot",
        ])
        #expect(
            waitUntil(timeout: .seconds(20)) { fixture.leafEvents("c2d").count >= 1 },
            "\(fixture.rig.gatewayLogs.suffix(2000))")
        let properties = fixture.leafEvents("c2d").first?["properties"] as? [String: String] ?? [:]
        #expect(properties["command"] == "reboot")
        #expect(!properties.keys.contains { $0.lowercased() == "authorization" }, "\(properties)")
        let everything = fixture.leaf?.stdout ?? ""
        #expect(!everything.isEmpty && !everything.contains(token))
    }
}
