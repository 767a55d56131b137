import Foundation
import GateRules
import GatehouseAuth
import GatehouseCore
import GatehousePluginKit
import GatehouseStore
import GatehouseTestSupport
import Logging
import Synchronization
import Testing

/// Tokens for the gate's tests, signed by PyJWT through `scripts/mint-token` (not by gatehouse).
final class TokenMint: Sendable {
    let dir = TempDir("gatehouse-mint")
    static let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    var script: String { Paths.packageRoot.appendingPathComponent("scripts/mint-token").path }
    var jwksFile: String { dir.file("jwks.json") }

    init() throws {
        let (code, output) = try Subprocess.run(script, ["keys", dir.path])
        guard code == 0 else { throw FixtureError("mint-token keys: \(output)") }
    }

    func token(_ arguments: [String]) throws -> String {
        let (code, output) = try Subprocess.run(script, ["token", dir.path] + arguments)
        guard code == 0 else { throw FixtureError("mint-token: \(output)") }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func verifier() async throws -> TokenVerifier {
        let cache = try await JWKSCache(sources: [FileJWKSSource(path: jwksFile)])
        await cache.refresh()
        return try await TokenVerifier(
            configuration: .init(audiences: ["api://gatehouse"], tenants: [Self.tenant]), keys: cache)
    }

    static let pythonReady: Bool = {
        guard let python = which("python3"),
            let (code, _) = try? Subprocess.run(python, ["-c", "import jwt, cryptography"])
        else { return false }
        return code == 0
    }()
}

@Suite(
    "Command gate", .serialized,
    .enabled(if: TokenMint.pythonReady, "python3 with pyjwt[crypto] is missing: run scripts/setup"))
struct CommandGateUnitTests {
    /// A token mint and a state database, fresh for each test.
    final class Fixture: Sendable {
        let mint: TokenMint
        let dir = TempDir("gatehouse-gate")
        let store: StateStore

        init() throws {
            mint = try TokenMint()
            store = try StateStore(path: dir.file("state.db"), durability: .normal)
        }
    }

    func gate(_ fixture: Fixture, rules: PolicyHandle?, auth: Bool = true, verifier: TokenVerifier?) -> CommandGate {
        var gateway = GatewayConfig.Gateway()
        gateway.tenant = TokenMint.tenant
        return CommandGate(
            verifier: verifier, rules: rules, settings: auth ? GatewayConfig.Auth(audiences: ["api://gatehouse"]) : nil,
            gateway: gateway, store: fixture.store, logger: Logger(label: "test"))
    }

    func policy(_ text: String) throws -> PolicyHandle {
        let (policy, diagnostics) = Policy.compile(files: [SourceFile(name: "test.rules", text: text)])
        guard let policy else { throw FixtureError("rules do not check: \(diagnostics)") }
        return PolicyHandle(policy)
    }

    static func method(_ name: String, token: String?, id: String?, extra: String = "") -> PluginCommand {
        var fields: [String] = []
        if let token { fields.append(#""authorization":"Bearer \#(token)""#) }
        if let id { fields.append(#""command_id":"\#(id)""#) }
        if !extra.isEmpty { fields.append(extra) }
        return PluginCommand(
            kind: .directMethod, deviceID: "pump-1", name: name,
            payload: Array("{\(fields.joined(separator: ","))}".utf8))
    }

    @Test("without [auth] or without rules, every command is denied (fail closed)")
    func failClosed() async throws {
        let fixture = try Fixture()
        let mint = fixture.mint
        let token = try mint.token(["--role", "Gateway.Operator"])
        let rules = try policy(#"allow command "*""#)
        let verifier = try await mint.verifier()
        let noAuth = await gate(fixture, rules: rules, auth: false, verifier: verifier).decide(
            Self.method("reboot", token: token, id: "1"))
        #expect(noAuth.effect == .deny && noAuth.reason.hasPrefix("no [auth] section"))
        let noRules = await gate(fixture, rules: nil, verifier: verifier).decide(
            Self.method("reboot", token: token, id: "2"))
        #expect(noRules.effect == .deny && noRules.reason.hasPrefix("no rules are loaded"))
        let allowed = await gate(fixture, rules: rules, verifier: verifier).decide(
            Self.method("reboot", token: token, id: "3"))
        #expect(allowed.effect == .allow)
    }

    @Test("token and id leave the payload; args, kind and device tags reach the rules")
    func parsingAndInputs() async throws {
        let fixture = try Fixture()
        let mint = fixture.mint
        let token = try mint.token(["--role", "Gateway.Operator", "--claim", "site=A"])
        try fixture.store.setDeviceMetadata(
            "pump-1", DeviceMetadata(model: "pump-3000", tags: ["site": .string("A"), "locked": .bool(false)]), atMS: 0)
        let rules = try policy(
            """
            allow command "valve.set" as "site operators"
              when token.site == device.tags.site and device.tags.locked == false and device.model startswith "pump-" and command.kind == "method"
                and command.args.percent <= 50
            """)
        let gate = gate(fixture, rules: rules, verifier: try await mint.verifier())
        let outcome = await gate.decide(Self.method("valve.set", token: token, id: "a", extra: #""percent":40"#))
        #expect(outcome.effect == .allow, "\(outcome.reason)")
        #expect(outcome.rules.first?.hasPrefix("site operators (test.rules:") == true)
        let delivered = String(decoding: outcome.deliverable?.payload ?? [], as: UTF8.self)
        #expect(delivered == #"{"percent":40}"#)
        let tooMuch = await gate.decide(Self.method("valve.set", token: token, id: "b", extra: #""percent":90"#))
        #expect(tooMuch.effect == .deny && tooMuch.reason == #"no rule allows command "valve.set""#)
        #expect(tooMuch.deliverable == nil)

        for (payload, reason) in [
            ("not json", "the method payload is not valid JSON"), ("[1]", "the method payload is not a JSON object"),
            (#"{"authorization":"Basic abc","command_id":"c"}"#, "the caller token is not of the form"),
            (#"{"command_id":"c"}"#, "no caller token"),
            (#"{"authorization":"Bearer \#(token)"}"#, "no command id"),
        ] {
            let refused = await gate.decide(
                PluginCommand(kind: .directMethod, deviceID: "pump-1", name: "valve.set", payload: Array(payload.utf8)))
            #expect(refused.effect == .deny && refused.reason.hasPrefix(reason), "\(payload): \(refused.reason)")
            #expect(!refused.reason.contains(token))
        }
    }

    @Test("a device removed with `gatehouse devices remove` takes no command")
    func removedDevice() async throws {
        let fixture = try Fixture()
        let token = try fixture.mint.token(["--role", "Gateway.Operator"])
        let gate = gate(fixture, rules: try policy(#"allow command "*""#), verifier: try await fixture.mint.verifier())
        #expect(await gate.decide(Self.method("reboot", token: token, id: "r-1")).effect == .allow)
        try fixture.store.setDeviceMetadata("pump-1", DeviceMetadata(), atMS: 0)
        #expect(try fixture.store.markRemoved(deviceID: "pump-1", atMS: 1))
        try await Task.sleep(for: .milliseconds(1100))  // past the gate's one-second registry cache
        let refused = await gate.decide(Self.method("reboot", token: token, id: "r-2"))
        #expect(refused.effect == .deny && refused.reason.hasPrefix("device pump-1 was removed"), "\(refused.reason)")
    }

    @Test("a C2D message: the token property is removed, the name and id come from properties")
    func cloudToDevice() async throws {
        let fixture = try Fixture()
        let mint = fixture.mint
        let token = try mint.token(["--role", "Gateway.Operator"])
        let gate = gate(
            fixture, rules: try policy(#"allow command "reboot" when command.kind == "c2d""#),
            verifier: try await mint.verifier())
        let command = PluginCommand(
            kind: .c2dMessage, deviceID: "pump-1", name: "", payload: Array("now".utf8),
            properties: [.init("Authorization", "Bearer \(token)"), .init("command", "reboot"), .init("$.mid", "m-1")])
        let outcome = await gate.decide(command)
        #expect(outcome.effect == .allow, "\(outcome.reason)")
        #expect(outcome.deliverable?.properties.map(\.key) == ["command", "$.mid"])
        let replay = await gate.decide(command)
        #expect(replay.effect == .deny && replay.reason.hasPrefix("replayed command: id m-1"))
    }

    /// 10,000 commands while the rules are reloaded 100 times (every fifth reload invalid): each
    /// decision names the rules of exactly one complete policy; none errs; invalid reloads keep
    /// the running one.
    @Test("hot reload under load: every decision is made by one complete policy")
    func hotReloadUnderLoad() async throws {
        let fixture = try Fixture()
        let mint = fixture.mint
        let dir = fixture.dir
        let rulesDir = dir.file("rules")
        try FileManager.default.createDirectory(atPath: rulesDir, withIntermediateDirectories: true)
        let version: @Sendable (String) -> String = { name in
            """
            allow command "reboot" as "\(name)-1" when "Gateway.Operator" in token.roles
            allow command "reboot" as "\(name)-2" when token.tid == gateway.tenant
            """
        }
        // One file, replaced atomically (rename), so a reload never reads half of one version.
        let temporary = dir.file("next.rules")
        let install: @Sendable (String) throws -> Void = { text in
            try text.write(toFile: temporary, atomically: false, encoding: .utf8)
            guard rename(temporary, rulesDir + "/policy.rules") == 0 else { throw FixtureError("rename failed") }
        }
        try install(version("a"))
        let (initial, _, _) = Policy.compile(directory: rulesDir)
        let handle = PolicyHandle(try #require(initial))
        let gate = gate(fixture, rules: handle, verifier: try await mint.verifier())
        let token = try mint.token(["--role", "Gateway.Operator"])

        final class Tally: Sendable {
            let seen = Mutex<[String: Int]>([:])
            let failures = Mutex<[String]>([])
            let reloads = Mutex<(accepted: Int, refused: Int)>((0, 0))
            let decided = Atomic<Int>(0)
        }
        let tally = Tally()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for index in 0..<100 {
                    // Paced by the decisions (one reload every ~90), so reloads and decisions
                    // interleave however loaded the machine is.
                    while tally.decided.load(ordering: .relaxed) < index * 90 { await Task.yield() }
                    let text = index % 5 == 4 ? "allow command \"reboot\" when (" : version(index % 2 == 0 ? "b" : "a")
                    try? install(text)
                    let result = handle.reload(directory: rulesDir)
                    tally.reloads.withLock { result.accepted ? ($0.accepted += 1) : ($0.refused += 1) }
                }
            }
            for worker in 0..<8 {
                group.addTask {
                    for index in 0..<1250 {
                        let outcome = await gate.decide(Self.method("reboot", token: token, id: "\(worker)-\(index)"))
                        let key = outcome.rules.map { $0.prefix { $0 != " " } }.joined(separator: ",")
                        if outcome.effect != .allow || !(key == "a-1,a-2" || key == "b-1,b-2") {
                            tally.failures.withLock { $0.append("\(outcome.effect) \(key) \(outcome.reason)") }
                        }
                        tally.seen.withLock { $0[key, default: 0] += 1 }
                        tally.decided.add(1, ordering: .relaxed)
                        // In the daemon each command is its own task; here one task runs many, so
                        // let the reloading task in between (the verifier's fast path never suspends).
                        await Task.yield()
                    }
                }
            }
        }
        #expect(tally.failures.withLock { $0 }.isEmpty, "\(tally.failures.withLock { $0.prefix(5) })")
        #expect(tally.seen.withLock { $0.values.reduce(0, +) } == 10_000)
        #expect(tally.seen.withLock { Set($0.keys) } == ["a-1,a-2", "b-1,b-2"], "both versions decided some commands")
        #expect(tally.reloads.withLock { $0.refused } == 20)
        #expect(tally.reloads.withLock { $0.accepted } == 80)
        // The last reload was valid ("b", index 98 → refused 99 keeps it).
        let last = await gate.decide(Self.method("reboot", token: token, id: "last"))
        #expect(last.rules.first?.hasPrefix("b-1") == true)
    }
}
