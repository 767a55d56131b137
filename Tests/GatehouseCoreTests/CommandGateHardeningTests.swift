import Foundation
import GateRules
import GatehouseAuth
import GatehousePluginKit
import GatehouseStore
import GatehouseTestSupport
import Logging
import Synchronization
import Testing

@testable import GatehouseCore

/// Control and format characters never reach a log line or a terminal as they are.
@Suite("Control escaping")
struct ControlEscapingTests {
    /// input → what every log line and `gatehouse audit` shows.
    static let table: [(String, String)] = [
        ("reboot", "reboot"),
        ("", ""),
        ("valve.set percent=40", "valve.set percent=40"),
        ("héllo wörld ✓ 日本", "héllo wörld ✓ 日本"),
        ("a\rb", #"a\rb"#),
        ("a\nb", #"a\nb"#),
        ("a\r\nb", #"a\r\nb"#),  // one grapheme cluster, two escapes
        ("a\tb", #"a\tb"#),
        ("\u{1B}[2J\u{1B}[31mred", #"\u{1B}[2J\u{1B}[31mred"#),
        ("nul\u{0}", #"nul\u{0}"#),
        ("bell\u{7}", #"bell\u{7}"#),
        ("del\u{7F}", #"del\u{7F}"#),
        ("c1\u{85}\u{9B}", #"c1\u{85}\u{9B}"#),
        ("line\u{2028}para\u{2029}", #"line\u{2028}para\u{2029}"#),
        ("\u{202E}txt.exe", #"\u{202E}txt.exe"#),
        ("\u{200E}\u{200F}", #"\u{200E}\u{200F}"#),
        ("\u{202A}\u{202B}\u{202C}\u{202D}", #"\u{202A}\u{202B}\u{202C}\u{202D}"#),
        ("\u{2066}\u{2067}\u{2068}\u{2069}", #"\u{2066}\u{2067}\u{2068}\u{2069}"#),
        ("zero\u{200B}width\u{FEFF}", #"zero\u{200B}width\u{FEFF}"#),  // Cf
        ("soft\u{AD}hyphen", #"soft\u{AD}hyphen"#),  // Cf
        ("tag\u{E0001}", #"tag\u{E0001}"#),  // Cf beyond the BMP
        ("\u{1B}\u{301}", #"\u{1B}"# + "\u{301}"),  // a control inside a grapheme cluster
        (#"back\slash"#, #"back\\slash"#),
        (#"fake \u{1B}"#, #"fake \\u{1B}"#),  // a literal escape stays distinguishable
    ]

    @Test("a table of inputs: controls, separators and format characters escaped, the rest kept")
    func escapingTable() {
        for (input, expected) in Self.table {
            let escaped = ControlEscaping.escape(input)
            #expect(escaped == expected, "\(Array(input.unicodeScalars))")
            #expect(!escaped.unicodeScalars.contains { ControlEscaping.mustEscape($0) })
        }
    }

    @Test("logfmt: one field per value, quoted when it must be, escapes inside")
    func logfmtQuoting() {
        let cases: [(String, String)] = [
            ("plain", "plain"),
            ("", #""""#),
            ("two words", #""two words""#),
            ("a=b", #""a=b""#),
            (#"say "hi""#, #""say \"hi\"""#),
            ("a\rb", #""a\rb""#),
            ("x\n level=error msg=forged", #""x\n level=error msg=forged""#),
            ("\u{1B}]0;title\u{7}", #""\u{1B}]0;title\u{7}""#),
            ("\u{202E}", #""\u{202E}""#),
            ("nbsp\u{A0}here", "\"nbsp\u{A0}here\""),
            ("\"\u{301} injected=1", "\"\\\"\u{301} injected=1\""),  // a quote hidden in a grapheme cluster
        ]
        for (input, expected) in cases {
            #expect(LogfmtLogHandler.quote(input) == expected, "\(Array(input.unicodeScalars))")
        }
    }

    @Test("JSON: escapes in JSON syntax, parsers read back the original")
    func json() throws {
        let original = ["name": "a\u{1B}b\u{202E}c\u{2028}d\u{85}e\u{7F}f\u{E0001}g"]
        let encoded = String(decoding: try JSONEncoder().encode(original), as: UTF8.self)
        let escaped = ControlEscaping.escapeJSON(encoded)
        #expect(!escaped.unicodeScalars.contains { ControlEscaping.mustEscape($0) })
        #expect(escaped.contains(#"\u202e"#) && escaped.contains(#"\udb40\udc01"#))
        #expect(try JSONDecoder().decode([String: String].self, from: Data(escaped.utf8)) == original)
    }
}

@Suite(
    "Command gate hardening", .serialized,
    .enabled(if: TokenMint.pythonReady, "python3 with pyjwt[crypto] is missing: run scripts/setup"))
struct CommandGateHardeningTests {
    final class Fixture: Sendable {
        let mint: TokenMint
        let dir = TempDir("gatehouse-gate-hard")
        let store: StateStore
        let verifier: TokenVerifier
        let clock = Mutex<TimeInterval>(0)  // seconds added to the real clock

        init() async throws {
            mint = try TokenMint()
            store = try StateStore(path: dir.file("state.db"), durability: .normal)
            verifier = try await mint.verifier()
        }

        /// A gate over `store` (by default this fixture's); the rules allow `reboot`, deny the rest.
        func gate(store: StateStore? = nil, perCaller: Int? = nil) throws -> CommandGate {
            var gateway = GatewayConfig.Gateway()
            gateway.tenant = TokenMint.tenant
            var settings = GatewayConfig.Auth(audiences: ["api://gatehouse"])
            if let perCaller { settings.replayMaxPerCaller = perCaller }
            let (policy, diagnostics) = Policy.compile(files: [
                SourceFile(name: "test.rules", text: #"allow command "reboot""#)
            ])
            guard let policy else { throw FixtureError("\(diagnostics)") }
            return CommandGate(
                verifier: verifier, rules: PolicyHandle(policy), settings: settings, gateway: gateway,
                store: store ?? self.store, logger: Logger(label: "test"),
                now: { [self] in Date().addingTimeInterval(clock.withLock { $0 }) })
        }
    }

    static func method(
        _ name: String = "reboot", device: String = "pump-1", token: String, id: String,
        field: String = "authorization",
        extra: String = ""
    ) -> PluginCommand {
        var fields = [#""\#(field)":"Bearer \#(token)""#, #""command_id":"\#(id)""#]
        if !extra.isEmpty { fields.append(extra) }
        return PluginCommand(
            kind: .directMethod, deviceID: device, name: name, payload: Array("{\(fields.joined(separator: ","))}".utf8)
        )
    }

    @Test("an id is a replay only for the same caller and the same device")
    func perDeviceAndCaller() async throws {
        let fixture = try await Fixture()
        let alice = try fixture.mint.token(["--subject", "alice"])
        let bob = try fixture.mint.token(["--subject", "bob"])
        let gate = try fixture.gate()
        #expect(await gate.decide(Self.method(token: alice, id: "x-1")).effect == .allow)
        let replay = await gate.decide(Self.method(token: alice, id: "x-1"))
        #expect(replay.effect == .deny && replay.reason.hasPrefix("replayed command: id x-1"), "\(replay.reason)")
        // Another token of the same caller: still the same caller.
        let alice2 = try fixture.mint.token(["--subject", "alice", "--ttl", "1200"])
        #expect(await gate.decide(Self.method(token: alice2, id: "x-1")).effect == .deny)
        // Another device, another caller: not a replay.
        #expect(await gate.decide(Self.method(device: "pump-2", token: alice, id: "x-1")).effect == .allow)
        #expect(await gate.decide(Self.method(token: bob, id: "x-1")).effect == .allow)
        // A command the rules deny uses up its id as well.
        let denied = await gate.decide(Self.method("format", token: bob, id: "x-2"))
        #expect(denied.effect == .deny && denied.reason.contains("no rule allows"), "\(denied.reason)")
        #expect(denied.commandID?.commandID == "x-2")
        let again = await gate.decide(Self.method("format", token: bob, id: "x-2"))
        #expect(again.reason.hasPrefix("replayed command"))
        // The caller is a hash (issuer + oid/sub), never the token or the subject itself.
        let key = try #require(denied.commandID?.caller)
        #expect(key.count == 64 && !key.contains("bob"))
    }

    @Test("a caller past its share is refused (replay.caller-quota); other callers are not; expiry frees it")
    func quotaPerCaller() async throws {
        let fixture = try await Fixture()
        let flooder = try fixture.mint.token(["--subject", "flooder"])
        let other = try fixture.mint.token(["--subject", "other"])
        let gate = try fixture.gate(perCaller: 20)
        // 25 commands the rules deny, over several devices.
        var reasons: [String] = []
        for index in 0..<25 {
            let outcome = await gate.decide(
                Self.method("format", device: "pump-\(index % 3)", token: flooder, id: "f-\(index)"))
            #expect(outcome.effect == .deny)
            reasons.append(outcome.reason)
        }
        #expect(reasons.prefix(20).allSatisfy { $0.hasPrefix("no rule allows") })
        #expect(reasons.suffix(5).allSatisfy { $0.hasPrefix("replay.caller-quota") }, "\(reasons.suffix(5))")
        // Even an allowed command of the flooder is refused by its quota…
        let blocked = await gate.decide(Self.method(token: flooder, id: "f-ok"))
        #expect(blocked.effect == .deny && blocked.reason.hasPrefix("replay.caller-quota"))
        #expect(blocked.commandID == nil)
        // …while another caller's commands pass.
        for index in 0..<15 {
            let outcome = await gate.decide(Self.method(token: other, id: "o-\(index)"))
            #expect(outcome.effect == .allow, "\(outcome.reason)")
        }
        // Once the flooder's tokens have expired (+ skew), its share is free again: its ids are
        // forgotten (a new token is needed anyway).
        fixture.clock.withLock { $0 = 7200 }
        let later = try fixture.mint.token(["--subject", "flooder", "--ttl", "10800"])
        let freed = await gate.decide(Self.method(token: later, id: "f-0"))
        #expect(freed.effect == .allow, "\(freed.reason)")
    }

    @Test("persistence: a gate over the same database after a restart refuses a replayed id")
    func persistence() async throws {
        let fixture = try await Fixture()
        let token = try fixture.mint.token(["--subject", "op"])
        do {
            let dispatcher = CommandPath(store: fixture.store, logger: Logger(label: "test"))
            let gate = try fixture.gate()
            let first = await dispatcher.decideAndAudit(Self.method(token: token, id: "p-1"), gate: gate)
            #expect(first?.effect == .allow)
            let denied = await dispatcher.decideAndAudit(Self.method("format", token: token, id: "p-2"), gate: gate)
            #expect(denied?.effect == .deny)
            dispatcher.auditLog.stop()
        }
        let ids = try fixture.store.liveCommandIDs(nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        #expect(Set(ids.map(\.commandID)) == ["p-1", "p-2"])
        #expect(ids.allSatisfy { !$0.caller.contains("op") && $0.deviceID == "pump-1" })

        // "Restart": a new store and a new gate over the same file.
        let reopened = try StateStore(path: fixture.dir.file("state.db"), durability: .normal)
        let gate = try fixture.gate(store: reopened)
        for id in ["p-1", "p-2"] {
            let replay = await gate.decide(Self.method(token: token, id: id))
            #expect(replay.effect == .deny && replay.reason.hasPrefix("replayed command: id \(id)"), "\(replay.reason)")
        }
        #expect(await gate.decide(Self.method(token: token, id: "p-3")).effect == .allow)

        // The quota is restored from the database too.
        let small = try fixture.gate(store: reopened, perCaller: 2)
        let full = await small.decide(Self.method(token: token, id: "p-4"))
        #expect(full.reason.hasPrefix("replay.caller-quota"), "\(full.reason)")

        // Pruning (hourly, with the audit log's) forgets the ids whose tokens have expired.
        try reopened.pruneAudit(AuditRetention(), nowMS: Int64(Date().timeIntervalSince1970 * 1000) + 3 * 3600_000)
        #expect(try reopened.liveCommandIDs(nowMS: 0).isEmpty)
    }

    @Test("the token field is taken out whatever its case; two spellings are refused (ambiguous)")
    func tokenFieldAnyCase() async throws {
        let fixture = try await Fixture()
        let token = try fixture.mint.token(["--subject", "op"])
        let gate = try fixture.gate()
        for (index, field) in ["authorization", "Authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"].enumerated() {
            let outcome = await gate.decide(
                Self.method(token: token, id: "t-\(index)", field: field, extra: #""delay":5"#))
            #expect(outcome.effect == .allow, "\(field): \(outcome.reason)")
            let delivered = String(decoding: outcome.deliverable?.payload ?? [], as: UTF8.self)
            #expect(delivered == #"{"delay":5}"#, "\(field)")
        }
        let both = await gate.decide(
            Self.method(token: token, id: "t-both", extra: #""Authorization":"Bearer \#(token)""#))
        #expect(both.effect == .deny && both.reason.hasPrefix("ambiguous caller token"), "\(both.reason)")
        #expect(both.deliverable == nil && !both.reason.contains(token))
        // Even when the second spelling holds no token.
        let junk = await gate.decide(Self.method(token: token, id: "t-junk", extra: #""AUTHORIZATION":"x""#))
        #expect(junk.effect == .deny && junk.reason.hasPrefix("ambiguous caller token"))

        // The C2D property form.
        for (index, key) in ["Authorization", "AUTHORIZATION"].enumerated() {
            let outcome = await gate.decide(
                PluginCommand(
                    kind: .c2dMessage, deviceID: "pump-1", name: "", payload: Array("now".utf8),
                    properties: [
                        .init(key, "Bearer \(token)"), .init("command", "reboot"), .init("$.mid", "c-\(index)"),
                    ]))
            #expect(outcome.effect == .allow, "\(outcome.reason)")
            #expect(outcome.deliverable?.properties.map(\.key) == ["command", "$.mid"])
        }
        let twoProperties = await gate.decide(
            PluginCommand(
                kind: .c2dMessage, deviceID: "pump-1", name: "", payload: [],
                properties: [
                    .init("authorization", "Bearer \(token)"), .init("AUTHORIZATION", "Bearer \(token)"),
                    .init("command", "reboot"), .init("$.mid", "c-two"),
                ]))
        #expect(twoProperties.effect == .deny && twoProperties.reason.hasPrefix("ambiguous caller token"))
    }

    @Test("an overlong command id is refused (it would bloat the replay ledger)")
    func longID() async throws {
        let fixture = try await Fixture()
        let token = try fixture.mint.token(["--subject", "op"])
        let gate = try fixture.gate()
        let outcome = await gate.decide(Self.method(token: token, id: String(repeating: "x", count: 257)))
        #expect(outcome.effect == .deny && outcome.reason.hasPrefix("the command id is longer than 256 bytes"))
    }
}

@Suite("Configuration: [auth] replay_max_per_caller")
struct ReplayConfigTests {
    static func parse(_ line: String) throws -> GatewayConfig {
        try GatewayConfig.parse(
            """
            [auth]
            audiences = ["api://gatehouse"]
            tenants = "72f988bf-86f1-41af-91ab-2d7cd011db47"
            jwks_url = "https://login.example/keys"
            \(line)
            [site]
            plugin = "mqtt"
            [hub]
            plugin = "mqtt"
            hostname = "h.example"
            """, path: "g.toml")
    }

    @Test("default 50,000; set; out of range names the key")
    func replayQuota() throws {
        #expect(try Self.parse("").auth?.replayMaxPerCaller == 50_000)
        #expect(try Self.parse("replay_max_per_caller = 200").auth?.replayMaxPerCaller == 200)
        for bad in ["0", "-1", "\"many\"", "2000000"] {
            #expect {
                _ = try Self.parse("replay_max_per_caller = \(bad)")
            } throws: { error in
                "\(error)".contains("replay_max_per_caller")
            }
        }
    }
}
