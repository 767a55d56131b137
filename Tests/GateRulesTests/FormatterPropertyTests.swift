import Foundation
import GatehouseTestSupport
import Testing

@testable import GateRules

/// Writes random policies as token streams, laid out badly (random blanks, line breaks and
/// comments), plus random inputs for them.
struct PolicyGenerator {
    var random: SplitMix64
    var lets: [String] = []
    var comments = 0

    mutating func pick<T>(_ items: [T]) -> T { items[Int(random.next() % UInt64(items.count))] }
    mutating func chance(_ percent: Int) -> Bool { Int(random.next() % 100) < percent }

    let strings = ["\"A\"", "\"B\"", "\"Gateway.Operator\"", "\"pump-7\"", "\"t1\"", "\"\""]
    let stringFields = ["token.site", "token.tid", "device.id", "device.model", "gateway.tenant", "device.tags.site"]

    /// A command condition of bounded depth, as tokens.
    mutating func condition(_ depth: Int) -> [String] {
        if depth > 0, chance(45) {
            switch random.next() % 4 {
            case 0: return condition(depth - 1) + ["and"] + condition(depth - 1)
            case 1: return condition(depth - 1) + ["or"] + condition(depth - 1)
            case 2: return ["not"] + condition(depth - 1)
            default: return ["("] + condition(depth - 1) + [")"]
            }
        }
        switch random.next() % 13 {
        case 0: return [pick(stringFields), pick(["==", "!="]), pick(strings)]
        case 1: return [pick(strings), "in", "token", ".", "roles"]
        case 2: return ["token", ".", "roles", "contains", pick(strings)]
        case 3: return [pick(stringFields), pick(["startswith", "endswith"]), pick(strings)]
        case 4: return [pick(stringFields), "matches", pick(["\"pump-*\"", "\"*7\"", "\"?\""])]
        case 5: return ["has", "(", pick(["token.site", "device.tags.site", "token.level"]), ")"]
        case 6:
            return [pick(["token.level", "now.hour"]), pick(["<", "<=", ">", ">="]), pick(["3", "7", "19", "-1"])]
        case 7: return ["any", "(", "r", "in", "token", ".", "roles", ":", "r", "startswith", "\"Gateway.\"", ")"]
        case 8: return ["len", "(", "token", ".", "roles", ")", ">=", pick(["0", "1", "2"])]
        case 9: return ["lower", "(", "token", ".", "site", ")", "==", "\"a\""]
        case 10: return [pick(strings), "in", "split", "(", "token", ".", "scp", ",", "\" \"", ")"]
        case 11: return ["token", ".", "site", pick(["in", "not in"]), "[", "\"A\"", ",", "\"B\"", "]"]
        default: return lets.isEmpty ? ["token", ".", "mfa"] : [pick(lets)]
        }
    }

    mutating func telemetryCondition() -> [String] {
        switch random.next() % 4 {
        case 0: return ["message", ".", "size", ">", pick(["1", "256"]), pick(["KiB", "B", "MiB"])]
        case 1: return ["message", ".", "topic", "matches", "\"devices/*/alarms\""]
        case 2: return ["message", ".", "properties", ".", "alarm", "==", "\"true\""]
        default: return ["has", "(", "message", ".", "body", ".", "x", ")"]
        }
    }

    mutating func policy() -> [[String]] {
        var statements: [[String]] = []
        lets = []
        for index in 0..<Int(random.next() % 3) {
            let name = "c\(index)"
            statements.append(["let", name, "="] + condition(2))
            lets.append(name)
        }
        let commands = ["\"reboot\"", "\"config.*\"", "\"door.open\"", "\"*\"", "\"firmware.update\""]
        for index in 0..<(2 + Int(random.next() % 5)) {
            var rule = [pick(["allow", "deny"]), "command", pick(commands)]
            if chance(30) { rule += [",", pick(commands)] }
            rule += ["as", "\"rule \(index)\""]
            if chance(85) { rule += ["when"] + condition(3) }
            if chance(30) { rule += ["because", "\"reason \(index)\""] }
            statements.append(rule)
        }
        for index in 0..<Int(random.next() % 3) {
            var rule = [pick(["route", "drop"]), "telemetry", "as", "\"t\(index)\""]
            if chance(70) { rule += ["when"] + telemetryCondition() }
            if rule[0] == "route" {
                rule += ["to", pick(["upstream", "archive", "\"cold-store\""])]
                if chance(50) { rule += ["priority", pick(["low", "normal", "high"])] }
                if chance(30) { rule += ["ttl", pick(["10m", "90s", "1500ms", "2h", "(1d)"])] }
            }
            statements.append(rule)
        }
        return statements
    }

    /// Joins tokens with random spacing. A line break never goes where the grammar needs the
    /// same line (before `(` of a call, `[` of an index, a unit after its number).
    mutating func layout(_ statements: [[String]]) -> String {
        var out = ""
        for statement in statements {
            if chance(30) {
                out += "# note \(comments)\n"
                comments += 1
            }
            for (index, token) in statement.enumerated() {
                out += token
                guard index + 1 < statement.count else { break }
                let next = statement[index + 1]
                let glued =
                    next == "(" || next == "[" || ["KiB", "B", "MiB"].contains(next) || token == "."
                    || next == "."
                if glued {
                    out += chance(50) ? "" : " "
                    continue
                }
                switch random.next() % 10 {
                case 0: out += "\n    "
                case 1: out += "   "
                case 2:
                    out += "  # note \(comments)\n"
                    comments += 1
                default: out += " "
                }
            }
            out += chance(40) ? "\n\n\n" : "\n"
        }
        return out
    }

    mutating func input() -> CommandInput {
        let roles: [Value] = (0..<Int(random.next() % 3)).map { _ in
            .string(pick(["Gateway.Operator", "Viewer", "Gateway.Maintainer", "A"]))
        }
        var token: [String: Value] = ["roles": .list(roles), "tid": .string(pick(["t1", "t2"]))]
        if chance(60) { token["site"] = .string(pick(["A", "B", "a"])) }
        if chance(50) { token["level"] = chance(80) ? .number(Double(random.next() % 10)) : "high" }
        if chance(50) { token["scp"] = .string(pick(["A B", "Gateway.Operator", ""])) }
        if chance(30) { token["mfa"] = .bool(chance(50)) }
        return CommandInput(
            command: ["name": .string(pick(["reboot", "config.set", "door.open", "firmware.update", "x"]))],
            token: .map(token),
            device: ["id": .string(pick(["pump-7", "door-1", "7"])), "model": "m", "tags": ["site": "A"]],
            gateway: ["tenant": "t1"], now: ["hour": .number(Double(random.next() % 24))])
    }

    mutating func telemetryInput() -> TelemetryInput {
        TelemetryInput(message: [
            "size": .number(Double(random.next() % 600_000)),
            "topic": .string(pick(["devices/p/alarms", "devices/p/telemetry"])),
            "properties": chance(50) ? ["alarm": "true"] : [:],
        ])
    }
}

/// Formatting is idempotent, keeps every comment, and never changes a decision.
@Suite struct FormatterPropertyTests {
    static func decisions(_ policy: Policy, _ commands: [CommandInput], _ messages: [TelemetryInput]) -> [String] {
        // By rule names, not lines: formatting moves lines.
        commands.map { Corpus.render(policy.decide($0)) } + messages.map { Corpus.render(policy.route($0)) }
    }

    @Test(arguments: 0..<300)
    func randomPolicies(seed: Int) throws {
        var generator = PolicyGenerator(random: SplitMix64(seed: UInt64(seed)))
        let text = generator.layout(generator.policy())
        let original = SourceFile(name: "p.rules", text: text)
        let formatted = try #require(Formatter.format(original).0, "did not format:\n\(text)")
        #expect(
            Formatter.format(SourceFile(name: "p.rules", text: formatted)).0 == formatted, "not idempotent:\n\(text)")
        #expect(
            formatted.components(separatedBy: "# note").count == text.components(separatedBy: "# note").count,
            "a comment was lost:\n\(text)\n---\n\(formatted)")

        let (before, beforeDiagnostics) = Policy.compile(files: [original])
        let (after, afterDiagnostics) = Policy.compile(files: [SourceFile(name: "p.rules", text: formatted)])
        #expect(Set(beforeDiagnostics.map(\.id)) == Set(afterDiagnostics.map(\.id)))
        guard let before, let after else {
            #expect(before == nil && after == nil)
            return
        }
        let commands = (0..<40).map { _ in generator.input() }
        let messages = (0..<10).map { _ in generator.telemetryInput() }
        #expect(Self.decisions(before, commands, messages) == Self.decisions(after, commands, messages), "\(text)")
    }

    /// The generator must mostly write policies that check, or the property above proves little.
    @Test func generatedPoliciesMostlyCheck() {
        var compiled = 0
        for seed in 0..<300 {
            var generator = PolicyGenerator(random: SplitMix64(seed: UInt64(seed)))
            let text = generator.layout(generator.policy())
            if Policy.compile(files: [SourceFile(name: "p.rules", text: text)]).0 != nil { compiled += 1 }
        }
        #expect(compiled >= 240, "only \(compiled) of 300 generated policies check")
    }

    /// Every corpus file that parses formats idempotently and decides its inputs the same way.
    @Test func corpusFiles() throws {
        for corpusCase in CorpusCase.all() {
            for file in try corpusCase.files() {
                guard let formatted = Formatter.format(file).0 else { continue }
                let again = Formatter.format(SourceFile(name: file.name, text: formatted)).0
                #expect(again == formatted, "\(file.name) is not idempotent")
                let expectations = Expectations(file.text)
                let before = Corpus.run([file], expectations)
                let after = Corpus.run([SourceFile(name: file.name, text: formatted)], expectations)
                #expect(before.decisions == after.decisions, "\(file.name) decides differently once formatted")
            }
        }
    }
}
