import Foundation

@testable import GateRules

/// The golden corpus: `corpus/**/*.rules`, each file (or each `*.policy` directory of files) one
/// case. Expectations live in comments, after the rules:
///
/// ```
/// # input: {"command": {"name": "reboot"}, "token": {"roles": ["Viewer"]}}
/// # expect: deny
/// # error:
/// # check/unknown-field.rules:3:24: error[rules.check.unknown-field]: `device` has no field `tag`
/// #   |
/// # …
/// ```
///
/// - `# input:` JSON (a `message` key makes it telemetry), followed by `# expect:` the decision
///   as `Corpus.render` prints it.
/// - `# error:` / `# warning:` open a block holding one rendered diagnostic, compared as whole
///   text. A file without such blocks must produce no diagnostic at all.
/// - `# budget: N` sets the evaluation budget; `# cost: …` states the checker's cost bound.
///
/// Set `GATERULES_BLESS=1` to rewrite the expectations from what the library does now (then
/// read the diff: blessing is how a case is written, never how a failure is silenced).
struct CorpusCase: Sendable, CustomStringConvertible {
    /// Relative to the corpus root, e.g. `check/unknown-field.rules` or `multi/lets.policy`.
    let path: String
    var description: String { path }

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("corpus").path

    static func all() -> [CorpusCase] {
        let manager = FileManager.default
        var cases: [CorpusCase] = []
        for group in ((try? manager.contentsOfDirectory(atPath: root)) ?? []).sorted() {
            let groupPath = root + "/" + group
            for name in ((try? manager.contentsOfDirectory(atPath: groupPath)) ?? []).sorted() {
                if name.hasSuffix(".rules") || name.hasSuffix(".policy") {
                    cases.append(CorpusCase(path: group + "/" + name))
                }
            }
        }
        return cases
    }

    /// The files of the case, named relative to the corpus root.
    func files() throws -> [SourceFile] {
        let full = Self.root + "/" + path
        var names = [path]
        if path.hasSuffix(".policy") {
            names = try FileManager.default.contentsOfDirectory(atPath: full).filter { $0.hasSuffix(".rules") }.sorted()
                .map { path + "/" + $0 }
        }
        return try names.map {
            SourceFile(name: $0, text: try String(contentsOfFile: Self.root + "/" + $0, encoding: .utf8))
        }
    }
}

/// The expectations found in a file's comments.
struct Expectations {
    var inputs: [(json: String, expect: String?)] = []
    var diagnostics: [String] = []
    var budget: Int?
    var cost: String?

    init(_ text: String) {
        var block: [String]?
        func close() {
            if let lines = block { diagnostics.append(lines.joined(separator: "\n")) }
            block = nil
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line == "# error:" || line == "# warning:" {
                close()
                block = []
            } else if line.hasPrefix("# input: ") {
                close()
                inputs.append((String(line.dropFirst(9)), nil))
            } else if line.hasPrefix("# expect: ") {
                close()
                if !inputs.isEmpty { inputs[inputs.count - 1].expect = String(line.dropFirst(10)) }
            } else if line.hasPrefix("# budget: ") {
                close()
                budget = Int(line.dropFirst(10))
            } else if line.hasPrefix("# cost: ") {
                close()
                cost = String(line.dropFirst(8))
            } else if block != nil, line == "#" || line.hasPrefix("# ") {
                block!.append(String(line.dropFirst(2)))
            } else {
                close()
            }
        }
        close()
    }
}

enum Corpus {
    /// A command decision as `# expect:` writes it: `allow by "a", "b"`, `deny`, `deny by "x"
    /// (failed: "x")`, `deny by "x" (undetermined: "x")`.
    static func render(_ decision: Decision) -> String {
        var out = decision.effect.rawValue
        if !decision.rules.isEmpty { out += " by " + decision.rules.map { "\"\($0.name)\"" }.joined(separator: ", ") }
        if !decision.faults.isEmpty {
            out += " (failed: " + decision.faults.map { "\"\($0.rule.name)\"" }.joined(separator: ", ") + ")"
        }
        if !decision.undetermined.isEmpty {
            out += " (undetermined: " + decision.undetermined.map { "\"\($0.name)\"" }.joined(separator: ", ") + ")"
        }
        return out
    }

    /// `route upstream:high ttl 10m, archive:low by "r"`, `drop`, `drop by "x" (failed: "x")`.
    static func render(_ decision: RouteDecision) -> String {
        var out =
            decision.dropped
            ? "drop"
            : "route "
                + decision.routes.map { route in
                    "\(route.destination):\(route.priority)" + (route.ttl.map { " ttl \(formatDuration($0))" } ?? "")
                }.joined(separator: ", ")
        if !decision.rules.isEmpty { out += " by " + decision.rules.map { "\"\($0.name)\"" }.joined(separator: ", ") }
        if !decision.faults.isEmpty {
            out += " (failed: " + decision.faults.map { "\"\($0.rule.name)\"" }.joined(separator: ", ") + ")"
        }
        if !decision.undetermined.isEmpty {
            out += " (undetermined: " + decision.undetermined.map { "\"\($0.name)\"" }.joined(separator: ", ") + ")"
        }
        return out
    }

    /// What the library does with a case now: the rendered diagnostics, and the decision for each input.
    static func run(_ files: [SourceFile], _ expectations: Expectations) -> (
        diagnostics: [String], decisions: [String], cost: String?
    ) {
        let options = CheckOptions(budget: expectations.budget ?? CheckOptions().budget)
        let (policy, diagnostics) = Policy.compile(files: files, options: options)
        let renderer = DiagnosticRenderer(files: files)
        let rendered = diagnostics.map { renderer.render($0) }
        var decisions: [String] = []
        for input in expectations.inputs {
            guard let policy else {
                decisions.append("(the policy did not compile)")
                continue
            }
            do {
                let value = try Value(json: input.json)
                if value["message"] != nil {
                    decisions.append(render(policy.route(try TelemetryInput(json: input.json))))
                } else {
                    decisions.append(render(policy.decide(try CommandInput(json: input.json))))
                }
            } catch {
                decisions.append("(bad input: \(error))")
            }
        }
        return (rendered, decisions, policy.map { "\($0.cost)" })
    }

    /// Rewrites a file's expectations from the actual results (`GATERULES_BLESS=1`).
    static func bless(_ file: SourceFile, decisions: [String], diagnostics: [String], cost: String?) throws {
        var out: [String] = []
        var inBlock = false
        var inputIndex = 0
        for line in file.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line == "# error:" || line == "# warning:" {
                inBlock = true
                continue
            }
            if inBlock,
                line == "#" || line.hasPrefix("# ") && !line.hasPrefix("# input: ") && !line.hasPrefix("# budget: ")
            {
                continue
            }
            inBlock = false
            if line.hasPrefix("# expect: ") { continue }
            if line.hasPrefix("# cost: ") {
                if let cost { out.append("# cost: \(cost)") }
                continue
            }
            out.append(line)
            if line.hasPrefix("# input: ") {
                out.append("# expect: " + (inputIndex < decisions.count ? decisions[inputIndex] : "?"))
                inputIndex += 1
            }
        }
        while out.last == "" { out.removeLast() }
        for diagnostic in diagnostics {
            out.append(
                diagnostic.contains("] warning") || diagnostic.contains(": warning[") ? "# warning:" : "# error:")
            for line in diagnostic.split(separator: "\n", omittingEmptySubsequences: false) {
                out.append(line.isEmpty ? "#" : "# " + line)
            }
        }
        try (out.joined(separator: "\n") + "\n").write(
            toFile: CorpusCase.root + "/" + file.name, atomically: true, encoding: .utf8)
    }
}
