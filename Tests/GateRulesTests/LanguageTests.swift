import Foundation
import Testing

@testable import GateRules

/// Unit tests of each stage, for what the corpus cannot show (token streams, public API shapes,
/// explanations, JSON, time).
@Suite struct LexerTests {
    @Test func tokensAndComments() {
        var diagnostics = DiagnosticBag()
        let source = SourceFile(
            name: "t.rules", text: "allow command \"a\\n\" # note\n  when x.y >= 5m and 1_000 != -2")
        let lexed = Lexer.lex(source, file: 0, diagnostics: &diagnostics)
        #expect(diagnostics.items.isEmpty)
        #expect(
            lexed.tokens.map(\.kind) == [
                .keyword(.allow), .keyword(.command), .string, .keyword(.when), .identifier, .dot, .identifier, .ge,
                .number, .identifier, .keyword(.and), .number, .ne, .minus, .number, .eof,
            ])
        #expect(lexed.tokens[2].text == "a\n")
        #expect(lexed.comments.map(\.text) == [" note"])
        #expect(lexed.comments[0].ownLine == false)
        #expect(lexed.tokens[3].newlinesBefore == 1)
    }

    @Test func refusesHugeFiles() {
        let source = SourceFile(name: "big.rules", text: String(repeating: "#", count: maximumFileSize + 1))
        let (policy, diagnostics) = Policy.compile(files: [source])
        #expect(policy == nil)
        #expect(diagnostics.map(\.id) == [.fileTooLarge])
    }

    @Test func columnsCountCharacters() {
        let source = SourceFile(name: "u.rules", text: "allow command \"é\" when tokn.x == \"a\"")
        let (_, diagnostics) = Policy.compile(files: [source])
        let rendered = DiagnosticRenderer(files: [source]).render(diagnostics)
        #expect(rendered.hasPrefix("u.rules:1:24: error[rules.check.unknown-name]"))
        #expect(rendered.contains("\n  |                        ^^^^\n"))
    }
}

@Suite struct GlobTests {
    @Test(arguments: [
        ("config.*", "config.set", true), ("config.*", "config", false), ("*.alarm", "x.alarm", true),
        ("*pump*", "a-pump-b", true), ("a?c", "abc", true), ("a?c", "ac", false), ("a*b*c", "axxbyyc", true),
        ("a*b*c", "axxbyy", false), ("a\\*", "a*", true), ("a\\*", "ab", false), ("*", "", true), ("é?", "éx", true),
        ("devices/*/alarms", "devices/1/2/alarms", true),
    ])
    func matches(pattern: String, text: String, expected: Bool) {
        #expect(Glob(pattern)!.matches(text) == expected)
    }

    @Test func loneBackslashIsInvalid() { #expect(Glob("abc\\") == nil) }
}

@Suite struct ValueTests {
    @Test func jsonRoundTrip() throws {
        let text = #"{"a": [1, 2.5, true, null, "x\"y\u00e9"], "b": {"c": -3e2}}"#
        let value = try Value(json: text)
        #expect(value["a"] == .list([1, 2.5, true, .null, "x\"yé"]))
        #expect(value["b"]?["c"] == .number(-300))
        #expect(try Value(json: value.json) == value)
    }

    @Test(arguments: ["", "{", "[1,]", "{\"a\" 1}", "tru", "\"abc", "01x", String(repeating: "[", count: 200)])
    func jsonErrors(text: String) {
        #expect(throws: JSONError.self) { try Value(json: text) }
    }

    @Test func nowFields() {
        // 2025-11-24T16:00:00Z, a Monday.
        let now = Value.now(unixSeconds: 1_764_000_000)
        #expect(now["hour"] == 16)
        #expect(now["weekday"] == "mon")
        #expect(now["date"] == "2025-11-24")
        let local = Value.now(unixSeconds: 1_764_000_000, utcOffset: 9 * 3600)
        #expect(local["hour"] == 1)
        #expect(local["weekday"] == "tue")
        #expect(Value.now(unixSeconds: -1)["date"] == "1969-12-31")
    }
}

@Suite struct DecisionTests {
    static let files = [
        SourceFile(
            name: "p.rules",
            text: """
                let operator = "Gateway.Operator" in token.roles
                allow command "reboot" when operator and token.site == device.tags.site
                deny command "door.*" when now.hour >= 19 because "after hours"
                allow command "door.open"
                route telemetry to upstream
                route telemetry as "alarms" when message.properties.alarm == "true" to upstream priority high
                route telemetry as "archive" to archive priority low
                """)
    ]

    static func policy() -> Policy { Policy.compile(files: files).0! }

    @Test func decisionNamesRulesWithFileAndLine() {
        let input = CommandInput(
            command: ["name": "reboot"], token: ["roles": ["Gateway.Operator"], "site": "A"],
            device: ["tags": ["site": "A"]])
        let decision = Self.policy().decide(input)
        #expect(decision.effect == .allow)
        #expect(decision.rules == [RuleRef(name: "reboot", file: "p.rules", line: 2, because: nil)])
        #expect(decision.summary == "allow by \"reboot\" (p.rules:2)")
    }

    @Test func denyCarriesItsReason() {
        let decision = Self.policy().decide(CommandInput(command: ["name": "door.open"], now: ["hour": 20]))
        #expect(decision.effect == .deny)
        #expect(decision.reason == "after hours")
        #expect(!decision.isDefault)
    }

    @Test func explanationShowsEveryClause() {
        let input = CommandInput(
            command: ["name": "reboot"], token: ["roles": ["Viewer"], "site": "A"], device: ["tags": ["site": "A"]])
        let decision = Self.policy().decide(input, explain: true)
        #expect(decision.effect == .deny)
        #expect(decision.isDefault)
        let text = decision.explanation!.render()
        #expect(
            text == """
                allow "reboot" (p.rules:2): did not match
                  `operator` was false
                    `"Gateway.Operator" in token.roles` was false: token.roles = ["Viewer"]
                """)
    }

    @Test func explanationShowsMissingAndFailures() {
        let files = [SourceFile(name: "f.rules", text: "allow command \"x\" when token.level > 3 or has(token.site)")]
        let policy = Policy.compile(files: files).0!
        let decision = policy.decide(CommandInput(command: ["name": "x"], token: ["level": "high"]), explain: true)
        #expect(decision.effect == .deny)
        #expect(decision.faults.isEmpty)
        #expect(decision.undetermined.map(\.name) == ["x"])
        #expect(
            decision.explanation!.render() == """
                allow "x" (f.rules:1): undetermined ⇒ the allow does not apply
                  `token.level > 3` was undetermined (token.level is the string "high", a type this operator does not take): token.level = "high"
                  `has(token.site)` was false: token.site = missing
                """)
        let missing = policy.decide(CommandInput(command: ["name": "x"], token: [:]), explain: true)
        #expect(
            missing.explanation!.render() == """
                allow "x" (f.rules:1): undetermined ⇒ the allow does not apply
                  `token.level > 3` was undetermined (token.level is missing): token.level = missing
                  `has(token.site)` was false: token.site = missing
                """)
    }

    @Test func telemetryRoutesByPriority() {
        let decision = Self.policy().route(TelemetryInput(message: ["properties": ["alarm": "true"]]))
        #expect(
            decision.routes == [
                .init(destination: "upstream", priority: .high), .init(destination: "archive", priority: .low),
            ])
        #expect(decision.rules.map(\.name) == ["route to upstream", "alarms", "archive"])
    }

    @Test func inputsFromJSON() throws {
        let input = try CommandInput(json: #"{"command": {"name": "reboot"}, "now": 1764000000}"#)
        #expect(input.now["hour"] == 16)
        #expect(input.command["name"] == "reboot")
    }

    @Test func costIsReported() {
        let files = [SourceFile(name: "c.rules", text: "allow command \"x\" when any(r in token.roles: r == \"a\")")]
        let policy = Policy.compile(files: files).0!
        #expect(policy.cost.degree == 2)  // n elements, each compared in up to n steps
        #expect(policy.cost.bound(n: 10) > policy.cost.bound(n: 1))
    }

    @Test func destinationsAreCheckedWhenKnown() {
        let files = [SourceFile(name: "d.rules", text: "route telemetry to upstram")]
        let (policy, diagnostics) = Policy.compile(files: files, options: CheckOptions(destinations: ["upstream"]))
        #expect(policy == nil)
        #expect(diagnostics.map(\.id) == [.unknownDestination])
        #expect(diagnostics.first?.hint == "did you mean `upstream`?")
    }
}

@Suite struct ShippedRulesTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test(arguments: ["rules/default", "rules/examples/site"])
    func testsPassAndFilesAreFormatted(directory: String) throws {
        let (policy, diagnostics, files) = Policy.compile(directory: Self.repository + "/" + directory)
        #expect(diagnostics.isEmpty, "\(DiagnosticRenderer(files: files).render(diagnostics))")
        let outcomes = TestRunner.run(try #require(policy))
        #expect(!outcomes.isEmpty)
        for outcome in outcomes {
            #expect(outcome.passed, "\(outcome.name): expected \(outcome.expected), got \(outcome.actual)")
        }
        #expect(TestRunner.report(outcomes).hasSuffix("\(outcomes.count) passed, 0 failed"))
        for file in files { #expect(Formatter.format(file).0 == file.text, "\(file.name) is not formatted") }
    }

    @Test func failingTestIsReported() {
        let files = [
            SourceFile(
                name: "t.rules",
                text: """
                    allow command "x"
                    test "wrong" {
                      command { name: "x" }
                      expect deny
                    }
                    """)
        ]
        let outcomes = TestRunner.run(Policy.compile(files: files).0!)
        #expect(outcomes.map(\.passed) == [false])
        #expect(TestRunner.report(outcomes).hasSuffix("0 passed, 1 failed"))
    }
}
