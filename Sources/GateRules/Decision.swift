/// What a policy answers: a decision for a command, a route for telemetry, and — on request —
/// an explanation of every clause's value.

public enum Effect: String, Sendable, Hashable {
    case allow, deny
}

/// A rule, as decisions and explanations name it.
public struct RuleRef: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public let file: String
    public let line: Int
    /// The rule's `because` text, if any.
    public let because: String?

    /// `"reboot, firmware.update" (10-commands.rules:4)`
    public var description: String { "\"\(name)\" (\(file):\(line))" }
}

/// A rule whose evaluation failed. It could not allow; if it was a `deny`, it denied.
public struct RuleFault: Sendable, Hashable, CustomStringConvertible {
    public let rule: RuleRef
    public let message: String
    public var description: String { "\(rule) failed: \(message)" }
}

public struct Decision: Sendable {
    public let effect: Effect
    /// The rules that decided: every matching (or failing) `deny` if any, else every matching
    /// `allow`. Empty for the default deny.
    public var rules: [RuleRef] {
        guard first >= 0 else { return [] }
        return [table[Int(first)]] + more.map { table[Int($0)] }
    }
    /// Rules that failed while evaluating (and so could not allow).
    public let faults: [RuleFault]
    /// Rules whose condition was undetermined (a value it read was missing or of the wrong
    /// type): a `deny` among them denied, an `allow` could not allow.
    public var undetermined: [RuleRef] { undeterminedIndexes.map { table[Int($0)] } }
    /// As indexes into the table, kept inline: recording them costs a decision no allocation.
    let undeterminedIndexes: SmallIndexList
    /// Filled in by `Policy.decide(_:explain:)` with `explain: true`.
    public let explanation: Explanation?

    // The deciding rules as indexes into the policy's table: a decision allocates nothing in
    // the common case of one deciding rule.
    let table: [RuleRef]
    let first: Int32
    let more: [Int32]

    /// True when no rule matched and the default applied.
    public var isDefault: Bool { first < 0 }

    /// The first deciding rule's `because`, if it has one.
    public var reason: String? { first >= 0 ? table[Int(first)].because : nil }

    /// "allow by "reboot" (site.rules:4)" / "deny (no rule allows this command)"
    public var summary: String {
        if isDefault { return "\(effect) (no rule allows this command)" }
        return "\(effect) by " + rules.map(\.description).joined(separator: ", ")
    }
}

public enum RoutePriority: Int, Sendable, Hashable, Comparable, CustomStringConvertible {
    case low, normal, high

    static let names = ["low", "normal", "high"]

    public init?(name: String) {
        guard let index = Self.names.firstIndex(of: name) else { return nil }
        self.init(rawValue: index)
    }

    public var description: String { Self.names[rawValue] }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

public struct Route: Sendable, Hashable, CustomStringConvertible {
    public let destination: String
    public let priority: RoutePriority
    /// `ttl DURATION`: how long the message may wait for this destination; past it, it is
    /// dropped and counted, never sent. Nil: as long as the destination keeps messages.
    public let ttl: Duration?

    public init(destination: String, priority: RoutePriority, ttl: Duration? = nil) {
        self.destination = destination
        self.priority = priority
        self.ttl = ttl
    }

    /// `upstream (priority high)`, `upstream (priority high, ttl 10m)`
    public var description: String {
        guard let ttl else { return "\(destination) (priority \(priority))" }
        return "\(destination) (priority \(priority), ttl \(formatDuration(ttl)))"
    }
}

/// A duration in the largest unit of the language that holds it exactly: `10m`, `90s`, `1500ms`.
public func formatDuration(_ duration: Duration) -> String {
    let (seconds, attoseconds) = duration.components
    let milliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    if milliseconds % 1000 != 0 { return "\(milliseconds)ms" }
    for (unit, size) in [("d", Int64(86400)), ("h", 3600), ("m", 60)] where seconds % size == 0 && seconds != 0 {
        return "\(seconds / size)\(unit)"
    }
    return "\(seconds)s"
}

public struct RouteDecision: Sendable {
    /// Where the message goes, highest priority first; empty when it is dropped.
    public let routes: [Route]
    /// For each of `routes`, the rule that gave it its priority and time to live (a route rule
    /// named in `rules`).
    public let origins: [RuleRef]
    /// The rules that decided: the matching (or failing) `drop`s if any, else the matching routes.
    public let rules: [RuleRef]
    public let faults: [RuleFault]
    /// Rules whose condition was undetermined: a `drop` among them dropped, a route did not route.
    public let undetermined: [RuleRef]
    public let explanation: Explanation?

    public var dropped: Bool { routes.isEmpty }

    public var summary: String {
        if dropped {
            return rules.isEmpty
                ? "drop (no rule routes this message)" : "drop by " + rules.map(\.description).joined(separator: ", ")
        }
        return "route to " + routes.map(\.description).joined(separator: ", ") + " by "
            + rules.map(\.description).joined(separator: ", ")
    }
}

/// Every evaluated rule, and in each the value of every clause.
public struct Explanation: Sendable {
    public var rules: [RuleExplanation]

    /// ```
    /// allow "reboot, firmware.update" (site.rules:4): did not match
    ///   `operator` was false
    ///     `"Gateway.Operator" in token.roles` was false: token.roles = ["Viewer"]
    /// ```
    public func render() -> String {
        var lines: [String] = []
        for rule in rules {
            lines.append("\(rule.kind) \(rule.rule): \(rule.outcome)")
            for clause in rule.clauses {
                let indent = String(repeating: "  ", count: clause.depth + 1)
                var line = "\(indent)`\(clause.text)` was \(clause.outcome)"
                if clause.outcome.hasPrefix("failed") { line = "\(indent)`\(clause.text)` \(clause.outcome)" }
                if let cause = clause.cause { line += " (\(cause))" }
                if !clause.bindings.isEmpty {
                    line += ": " + clause.bindings.map { "\($0.0) = \($0.1)" }.joined(separator: ", ")
                }
                lines.append(line)
            }
        }
        return lines.joined(separator: "\n")
    }
}

public struct RuleExplanation: Sendable {
    public let rule: RuleRef
    /// `allow`, `deny`, `route` or `drop`.
    public let kind: String
    /// `matched`, `did not match`, `matched (no condition)`, `undetermined ⇒ …` or `failed: …`.
    public let outcome: String
    public let clauses: [ClauseExplanation]
}

public struct ClauseExplanation: Sendable {
    /// Nesting: clauses of a `let` sit one level under the clause that used it.
    public let depth: Int
    /// The clause's source text.
    public let text: String
    /// `true`, `false`, `undetermined` or `failed: …`.
    public internal(set) var outcome: String
    /// The input fields the clause read and their values (`missing` if absent).
    public internal(set) var bindings: [(String, String)]
    /// Why the clause is undetermined ("token.clearance is missing"); nil otherwise.
    public internal(set) var cause: String?
}

/// A few rule indexes recorded during one decision: the first four inline, the rest in an array,
/// so the common decision allocates nothing for them.
struct SmallIndexList: Sendable {
    private var inline: (Int32, Int32, Int32, Int32) = (0, 0, 0, 0)
    private(set) var count = 0
    private var overflow: [Int32] = []

    @inline(__always)
    mutating func append(_ index: Int32) {
        switch count {
        case 0: inline.0 = index
        case 1: inline.1 = index
        case 2: inline.2 = index
        case 3: inline.3 = index
        default: overflow.append(index)
        }
        count += 1
    }

    func map<T>(_ transform: (Int32) -> T) -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        let first = [inline.0, inline.1, inline.2, inline.3].prefix(min(count, 4))
        for index in first { out.append(transform(index)) }
        for index in overflow { out.append(transform(index)) }
        return out
    }
}
