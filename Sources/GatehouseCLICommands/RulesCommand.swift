import ArgumentParser
import FoundationEssentials
import GateRules
import GatehouseBasics

/// `gatehouse rules …`: the integrator's tools for rule sets. Wiring only; the work is in GateRules.
struct Rules: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Check, test, explain and format rule sets; show what the daemon's telemetry rules did.",
        subcommands: [Check.self, Test.self, Explain.self, Fmt.self, Reload.self, Stats.self])
}

/// Prints to standard error.
private func printError(_ text: String) {
    StandardStreams.writeError((text.hasSuffix("\n") ? text : text + "\n"))
}

/// Compiles a directory, printing every diagnostic; nil if there was an error.
private func load(_ directory: String, destinations: [String]) -> Policy? {
    var options = CheckOptions()
    if !destinations.isEmpty { options.destinations = Set(destinations) }
    let (policy, diagnostics, files) = Policy.compile(directory: directory, options: options)
    if !diagnostics.isEmpty { printError(DiagnosticRenderer(files: files).render(diagnostics)) }
    return policy
}

extension Rules {
    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every .rules file of a directory; print every diagnostic. Exit status 1 on any error.")

        @Argument(help: "The directory of .rules files (or one file).") var directory: String
        @Option(
            name: .customLong("destination"), help: "A configured telemetry destination (repeat); checks `to` names.")
        var destinations: [String] = []

        func run() throws {
            guard let policy = load(directory, destinations: destinations) else {
                printError("\(directory): the rules do not check")
                throw ExitCode(1)
            }
            print(
                "\(directory): ok — \(policy.files.count) file(s), \(policy.commandRuleCount) command rule(s), "
                    + "\(policy.telemetryRuleCount) telemetry rule(s), \(policy.testCount) test(s), "
                    + "\(policy.warnings.count) warning(s); cost per decision ≤ \(policy.cost) "
                    + "(n = the longest list or string in the input)")
        }
    }

    struct Test: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Run the `test` blocks beside the rules. Ends with `N passed, N failed`; exit status 1 on a failure.")

        @Argument(help: "The directory of .rules files (tests may sit in *.test.rules).") var directory: String

        func run() throws {
            guard let policy = load(directory, destinations: []) else {
                printError("\(directory): the rules do not check; no test ran")
                print("0 passed, 1 failed")
                throw ExitCode(1)
            }
            let outcomes = TestRunner.run(policy)
            print(TestRunner.report(outcomes))
            if outcomes.contains(where: { !$0.passed }) { throw ExitCode(1) }
        }
    }

    struct Explain: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decide one input and show every rule's clauses with their values.",
            discussion: """
                The input is JSON: {"command": {"name": "reboot"}, "token": {…}, "device": {…}, "gateway": {…}, \
                "now": {"hour": 21}} for a command, or {"message": {…}, …} for telemetry. `now` may also be \
                unix seconds.
                """)

        @Argument(help: "The directory of .rules files.") var directory: String
        @Option(help: "A JSON file with the input (`-` for standard input).") var input: String

        func run() throws {
            guard let policy = load(directory, destinations: []) else { throw ExitCode(1) }
            let text: String
            if input == "-" {
                text = String(decoding: StandardStreams.readInput(), as: UTF8.self)
            } else {
                guard let data = FileManager.default.contents(atPath: input) else {
                    printError("\(input): cannot read the file")
                    throw ExitCode(66)
                }
                text = String(decoding: data, as: UTF8.self)
            }
            do {
                let value = try Value(json: text)
                if value["message"] != nil {
                    let decision = policy.route(try TelemetryInput(json: text), explain: true)
                    print("decision: \(decision.summary)")
                    for fault in decision.faults { print("note: \(fault)") }
                    if let explanation = decision.explanation { print("\n" + explanation.render()) }
                } else {
                    let decision = policy.decide(try CommandInput(json: text), explain: true)
                    var line = "decision: \(decision.summary)"
                    if let reason = decision.reason { line += " — because \"\(reason)\"" }
                    print(line)
                    for fault in decision.faults { print("note: \(fault)") }
                    if let explanation = decision.explanation { print("\n" + explanation.render()) }
                }
            } catch {
                printError("\(input): \(error)")
                throw ExitCode(65)
            }
        }
    }

    struct Fmt: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rewrite rule files in the one canonical layout (comments kept). With --check, only report.")

        @Flag(help: "Change nothing; list the files that are not formatted and exit 1 if any.") var check = false
        @Argument(help: "Files or directories of .rules files.") var paths: [String]

        func run() throws {
            var unformatted: [String] = []
            var failed = false
            for path in paths {
                let (files, diagnostics) = Policy.sources(at: path)
                if diagnostics.contains(where: \.isError) {
                    printError(DiagnosticRenderer(files: files).render(diagnostics))
                    failed = true
                }
                for file in files {
                    let (formatted, diagnostics) = Formatter.format(file)
                    guard let formatted else {
                        printError(DiagnosticRenderer(files: [file]).render(diagnostics))
                        failed = true
                        continue
                    }
                    guard formatted != file.text else { continue }
                    unformatted.append(file.name)
                    if !check {
                        do {
                            try formatted.write(toFile: file.name, atomically: true, encoding: .utf8)
                        } catch {
                            printError("\(file.name): cannot write: \(error)")
                            failed = true
                        }
                    }
                }
            }
            for name in unformatted { print(check ? "not formatted: \(name)" : "formatted \(name)") }
            if failed || (check && !unformatted.isEmpty) { throw ExitCode(1) }
        }
    }
}
