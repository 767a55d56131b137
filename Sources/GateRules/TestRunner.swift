/// Runs the `test` blocks written beside the rules: each builds an input, asks the policy,
/// and compares the decision (and, if given, the deciding rules) with its `expect`.

public struct TestOutcome: Sendable {
    public let name: String
    public let file: String
    public let line: Int
    public let passed: Bool
    /// What the test expected, as written: `allow by "reboot"`.
    public let expected: String
    /// What the policy decided, with the deciding rules.
    public let actual: String
    /// Rules that failed while deciding (they are part of why a test may fail).
    public let faults: [RuleFault]
    /// Rules whose condition was undetermined (a deny among them denied).
    public let undetermined: [RuleRef]
}

public enum TestRunner {
    public static func run(_ policy: Policy) -> [TestOutcome] {
        policy.tests.map { run($0, in: policy) }
    }

    static func run(_ test: CheckedTest, in policy: Policy) -> TestOutcome {
        let file = policy.files[test.span.file]
        let line = file.location(of: test.span.start).line
        let roots = Roots(
            command: test.inputs[.command] ?? .null, token: test.inputs[.token] ?? .null,
            device: test.inputs[.device] ?? .null, gateway: test.inputs[.gateway] ?? .null,
            message: test.inputs[.message] ?? .null, now: test.inputs[.now] ?? .null)
        var expected = test.outcome.rawValue
        if !test.routes.isEmpty { expected += " to " + test.routes.map(\.description).joined(separator: ", ") }
        if let rules = test.rules { expected += " by " + rules.map { "\"\($0)\"" }.joined(separator: ", ") }

        let passed: Bool
        let actual: String
        let faults: [RuleFault]
        let undetermined: [RuleRef]
        let deciding: [String]
        switch test.outcome {
        case .allow, .deny:
            let decision = policy.engine.decide(roots, budget: policy.options.budget, trace: nil)
            deciding = decision.rules.map(\.name)
            faults = decision.faults
            undetermined = decision.undetermined
            actual = decision.summary
            passed = decision.effect.rawValue == test.outcome.rawValue && matches(test.rules, deciding)
        case .route, .drop:
            let decision = policy.engine.route(roots, budget: policy.options.budget, trace: nil)
            deciding = decision.rules.map(\.name)
            faults = decision.faults
            undetermined = decision.undetermined
            actual = decision.summary
            let outcomeOK = decision.dropped == (test.outcome == .drop)
            let routesOK = test.outcome == .drop || routesMatch(test, decision.routes)
            passed = outcomeOK && routesOK && matches(test.rules, deciding)
        }
        return TestOutcome(
            name: test.name, file: file.name, line: line, passed: passed, expected: expected, actual: actual,
            faults: faults, undetermined: undetermined)
    }

    /// The same destinations at the same priorities; a time to live only where the test wrote one.
    private static func routesMatch(_ test: CheckedTest, _ actual: [Route]) -> Bool {
        guard test.routes.count == actual.count else { return false }
        for (expected, stated) in zip(test.routes, test.ttlStated) {
            guard let route = actual.first(where: { $0.destination == expected.destination }),
                route.priority == expected.priority, !stated || route.ttl == expected.ttl
            else { return false }
        }
        return Set(test.routes.map(\.destination)).count == actual.count
    }

    private static func matches(_ expected: [String]?, _ actual: [String]) -> Bool {
        guard let expected else { return true }
        return Set(expected) == Set(actual) && expected.count == actual.count
    }

    /// One line a test, then `N passed, N failed`.
    public static func report(_ outcomes: [TestOutcome]) -> String {
        var lines: [String] = []
        for outcome in outcomes {
            let place = "\(outcome.file):\(outcome.line)"
            if outcome.passed {
                lines.append("PASS \(place) \(outcome.name): \(outcome.actual)")
            } else {
                lines.append("FAIL \(place) \(outcome.name)")
                lines.append("     expected \(outcome.expected)")
                lines.append("     got      \(outcome.actual)")
            }
            for fault in outcome.faults { lines.append("     note: \(fault)") }
            for rule in outcome.undetermined {
                lines.append(
                    "     note: \(rule) was undetermined: a value it reads is missing or of the wrong type"
                        + " (`gatehouse rules explain` shows which)")
            }
        }
        let passed = outcomes.filter(\.passed).count
        lines.append("\(passed) passed, \(outcomes.count - passed) failed")
        return lines.joined(separator: "\n")
    }
}
