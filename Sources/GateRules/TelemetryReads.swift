/// What a daemon needs to know about a policy's telemetry rules before it routes a message:
/// which inputs they read (so it builds only those, and skips parsing a body nobody reads), and
/// what each rule does (so it can count per rule).

/// The inputs a policy's telemetry rules read, found by walking their conditions and the
/// `let`s those use. A rule set that reads nothing of the message needs none of it built.
public struct TelemetryReads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let topic = TelemetryReads(rawValue: 1 << 0)
    public static let size = TelemetryReads(rawValue: 1 << 1)
    public static let properties = TelemetryReads(rawValue: 1 << 2)
    public static let body = TelemetryReads(rawValue: 1 << 3)
    public static let contentType = TelemetryReads(rawValue: 1 << 4)
    /// `device.…` (its id, model, tags).
    public static let device = TelemetryReads(rawValue: 1 << 5)
    public static let gateway = TelemetryReads(rawValue: 1 << 6)
    public static let now = TelemetryReads(rawValue: 1 << 7)

    /// Every field of `message`.
    public static let message: TelemetryReads = [.topic, .size, .properties, .body, .contentType]

    static func of(_ program: CheckedProgram) -> TelemetryReads {
        var walker = ReadsWalker(lets: program.lets)
        for rule in program.telemetryRules {
            if let condition = rule.condition { walker.walk(condition) }
        }
        return walker.reads
    }
}

/// A telemetry decision in reusable storage (`Policy.route(_:into:)`), rules named by their
/// position in `Policy.telemetryRules`.
public struct RouteScratch: Sendable {
    /// Where the message goes, highest priority first; empty when it is dropped.
    public internal(set) var routes: [Route] = []
    /// For each of `routes`, the rule that gave it its priority and time to live.
    public internal(set) var origins: [Int] = []
    /// The deciding rules: the matching (or failing) drops if any, else the matching routes.
    public internal(set) var deciding: [Int] = []
    /// Rules whose evaluation failed, and why.
    public internal(set) var faults: [(rule: Int, message: String)] = []
    /// Rules whose condition was undetermined.
    public internal(set) var undetermined: [Int] = []

    public init() {}

    public var dropped: Bool { routes.isEmpty }

    mutating func reset() {
        routes.removeAll(keepingCapacity: true)
        origins.removeAll(keepingCapacity: true)
        deciding.removeAll(keepingCapacity: true)
        faults.removeAll(keepingCapacity: true)
        undetermined.removeAll(keepingCapacity: true)
    }
}

/// What one telemetry rule does, as a daemon counts it.
public struct TelemetryRuleInfo: Sendable {
    public let rule: RuleRef
    /// A `drop telemetry` rule (else a `route`).
    public let drops: Bool
    /// A route's destinations with its priority and time to live; empty for a drop.
    public let routes: [Route]
}

extension Policy {
    /// The telemetry rules in policy order.
    public var telemetryRules: [TelemetryRuleInfo] {
        engine.telemetryRules.map { rule in
            TelemetryRuleInfo(rule: engine.table[Int(rule.index)], drops: rule.action == .drop, routes: rule.routes)
        }
    }
}

private struct ReadsWalker {
    let lets: [CheckedLet?]
    var reads: TelemetryReads = []
    var walkedLets: Set<Int> = []

    init(lets: [CheckedLet?]) { self.lets = lets }

    mutating func walk(_ ir: IR) {
        switch ir.op {
        case .constant, .local:
            break
        case .root(let root):
            // The whole input (`has(message)`, `message["topic"]`): assume every field.
            mark(root, field: nil)
        case .field(let base, let name):
            if case .root(let root) = base.op { mark(root, field: name) } else { walk(base) }
        case .letReference(let index):
            guard walkedLets.insert(index).inserted, index < lets.count, let checked = lets[index] else { return }
            walk(checked.ir)
        case .index(let a, let b), .and(let a, let b), .or(let a, let b), .compare(_, let a, let b),
            .arithmetic(_, let a, let b), .member(let a, let b, _), .startsWith(let a, let b),
            .endsWith(let a, let b), .split(let a, let b):
            walk(a)
            walk(b)
        case .not(let a), .negate(let a), .matches(let a, _), .has(let a), .length(let a), .lower(let a):
            walk(a)
        case .quantifier(_, _, let list, let body):
            walk(list)
            walk(body)
        case .list(let items):
            for item in items { walk(item) }
        case .map(let entries):
            for (_, value) in entries { walk(value) }
        }
    }

    mutating func mark(_ root: Root, field: String?) {
        switch root {
        case .message:
            switch field {
            case "topic": reads.insert(.topic)
            case "size": reads.insert(.size)
            case "properties": reads.insert(.properties)
            case "body": reads.insert(.body)
            case "content_type": reads.insert(.contentType)
            default: reads.formUnion(.message)
            }
        case .device: reads.insert(.device)
        case .gateway: reads.insert(.gateway)
        case .now: reads.insert(.now)
        case .command, .token: break  // not inputs of telemetry rules (the checker refuses them)
        }
    }
}
