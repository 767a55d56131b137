/// The run-time side: the frame one decision evaluates in, the faults it can raise, and the
/// operations on values that every compiled closure shares (so the fast path, constant
/// folding and explanations cannot disagree about what `==` or `in` means).
///
/// Semantics in one place (docs/rules.md, "Missing claims and undetermined conditions"):
/// - A condition has one of three values: true, false or *undetermined* (`Truth`).
/// - *missing* (an absent field, or JSON `null`) makes every comparison, `in`, `contains`,
///   `startswith`, `endswith` and `matches` undetermined; so does an operand of a type the
///   operator does not take (ordering a string against a number, `in` on a string, a
///   non-boolean condition). `has(…)` is true or false, never undetermined.
/// - `and`, `or` and `not` follow Kleene's three-valued logic; `any` is an `or` over the
///   elements, `all` an `and`; over a missing list or a non-list they are undetermined.
/// - Functions of missing, or of a value of the wrong type, are missing.
/// - `==` between two present values of different kinds is false, `!=` true.
/// - An exhausted budget is a *fault*: the rule cannot allow, and a `deny` that faults denies.
/// A rule uses the value thus: an `allow` applies only when its condition is true; a `deny`
/// (and a telemetry `drop`) applies when it is true or undetermined; a `route` only when true.

/// Kleene's three truth values, as a condition yields them.
enum Truth: UInt8, Sendable {
    case no, yes, unknown

    @inline(__always)
    init(_ value: Bool) { self = value ? .yes : .no }

    @inline(__always)
    var negated: Truth {
        switch self {
        case .no: .yes
        case .yes: .no
        case .unknown: .unknown
        }
    }

    /// The condition as a value: booleans, and missing for undetermined.
    var value: Value? {
        switch self {
        case .no: .bool(false)
        case .yes: .bool(true)
        case .unknown: nil
        }
    }

    var name: String {
        switch self {
        case .no: "false"
        case .yes: "true"
        case .unknown: "undetermined"
        }
    }
}

/// The six inputs of one decision. Absent inputs are `.null`, so everything under them is missing.
/// An immutable class: every compiled closure receives it, and passing one reference costs
/// nothing where copying six values would cost twelve reference-count operations.
final class Roots: Sendable {
    let command: Value
    let token: Value
    let device: Value
    let gateway: Value
    let message: Value
    let now: Value
    /// `command.name`, read once when the input is built: every decision starts from it.
    let commandName: String?

    init(
        command: Value = .null, token: Value = .null, device: Value = .null, gateway: Value = .null,
        message: Value = .null, now: Value = .null
    ) {
        self.command = command
        self.token = token
        self.device = device
        self.gateway = gateway
        self.message = message
        self.now = now
        if case .string(let name)? = Evaluator.field(command, "name") { commandName = name } else { commandName = nil }
    }

    /// A copy with one input replaced.
    func replacing(_ root: Root, with value: Value) -> Roots {
        Roots(
            command: root == .command ? value : command, token: root == .token ? value : token,
            device: root == .device ? value : device, gateway: root == .gateway ? value : gateway,
            message: root == .message ? value : message, now: root == .now ? value : now)
    }

    @inline(__always)
    subscript(root: Root) -> Value {
        switch root {
        case .command: command
        case .token: token
        case .device: device
        case .gateway: gateway
        case .message: message
        case .now: now
        }
    }
}

/// An evaluation error: the rule that raised it cannot allow.
struct Fault: Error, Sendable {
    let message: String
    let span: Span?
}

/// A `let`'s value within one decision: computed on first use, then reused.
enum LetSlot {
    case unset
    case done(Value?)
    case failed(Fault)
}

/// Per-decision scratch space. The slots live in stack memory owned by the caller of
/// `Frame.with`, so a decision allocates nothing for them.
struct Frame {
    /// Work units left: quantifier iterations, list elements scanned, pieces split.
    var budget: Int
    let lets: UnsafeMutablePointer<LetSlot>?
    let locals: UnsafeMutablePointer<Value?>?
    /// Set only when explaining a decision.
    var trace: Trace?

    /// Runs `body` with a fresh frame: `letCount` unset `let` slots and `localCount` variables.
    /// Always inlined, so `body` is not a real closure and captures (the inputs) are not copied.
    @inline(__always)
    static func with<R>(budget: Int, letCount: Int, localCount: Int, trace: Trace? = nil, _ body: (inout Frame) -> R)
        -> R
    {
        if letCount == 0, localCount == 0 {
            var frame = Frame(budget: budget, lets: nil, locals: nil, trace: trace)
            return body(&frame)
        }
        return withUnsafeTemporaryAllocation(of: LetSlot.self, capacity: max(letCount, 1)) { lets in
            lets.initialize(repeating: .unset)
            defer { lets.deinitialize() }
            return withUnsafeTemporaryAllocation(of: Value?.self, capacity: max(localCount, 1)) { locals in
                locals.initialize(repeating: nil)
                defer { locals.deinitialize() }
                var frame = Frame(budget: budget, lets: lets.baseAddress, locals: locals.baseAddress, trace: trace)
                return body(&frame)
            }
        }
    }

    @inline(__always)
    mutating func spend(_ units: Int, at span: Span) throws(Fault) {
        budget -= units
        if budget < 0 { throw Fault(message: "the evaluation budget ran out", span: span) }
    }
}

enum Evaluator {
    /// nil for missing, and for JSON null (which reads as missing).
    @inline(__always)
    static func present(_ value: Value?) -> Value? {
        if case .null? = value { return nil }
        return value
    }

    @inline(__always)
    static func field(_ value: Value?, _ key: String) -> Value? {
        if case .map(let map)? = value { return present(lookup(map, key)) }
        return nil
    }

    /// A map's value for `key`. Claims and tags are small maps, where comparing a few keys is
    /// several times cheaper than hashing the key (same result: `Dictionary` compares keys
    /// with `==` too).
    @inline(__always)
    static func lookup(_ map: [String: Value], _ key: String) -> Value? {
        guard map.count <= 12 else { return map[key] }
        var index = map.startIndex
        while index != map.endIndex {
            if map.keys[index] == key { return map.values[index] }
            index = map.index(after: index)
        }
        return nil
    }

    static func index(_ value: Value?, _ key: Value?) -> Value? {
        switch (value, key) {
        case (.list(let items)?, .number(let n)?):
            guard n == n.rounded(), n >= 0, n < Double(items.count) else { return nil }
            return present(items[Int(n)])
        case (.map(let map)?, .string(let k)?):
            return present(lookup(map, k))
        default:
            return nil
        }
    }

    /// A condition's truth: booleans are themselves; missing, or anything else, is undetermined.
    @inline(__always)
    static func truth(_ value: Value?) -> Truth {
        if case .bool(let b)? = value { return Truth(b) }
        return .unknown
    }

    @inline(__always)
    static func equals(_ a: Value?, _ b: Value?) -> Truth {
        guard let a = present(a), let b = present(b) else { return .unknown }
        return Truth(a == b)
    }

    static func order(_ op: BinaryOperator, _ a: Value?, _ b: Value?) -> Truth {
        guard let a = present(a), let b = present(b) else { return .unknown }
        let comparison: Int
        switch (a, b) {
        case (.number(let x), .number(let y)): comparison = x < y ? -1 : x > y ? 1 : 0
        case (.string(let x), .string(let y)): comparison = x < y ? -1 : x > y ? 1 : 0
        default: return .unknown
        }
        switch op {
        case .less: return Truth(comparison < 0)
        case .lessOrEqual: return Truth(comparison <= 0)
        case .greater: return Truth(comparison > 0)
        default: return Truth(comparison >= 0)
        }
    }

    /// `element in container` (membership in a list, or among a map's keys) and, with
    /// `substring`, `container contains element`, which on strings is a substring test.
    /// `in` on a string is undetermined: it is never a substring test.
    static func member(_ element: Value?, _ container: Value?, substring: Bool, budget: inout Frame, at span: Span)
        throws(Fault) -> Truth
    {
        guard let element = present(element), let container = present(container) else { return .unknown }
        switch container {
        case .list(let items):
            try budget.spend(items.count, at: span)
            return Truth(items.contains(element))
        case .map(let map):
            guard case .string(let key) = element else { return .unknown }
            return Truth(lookup(map, key) != nil)
        case .string(let text) where substring:
            guard case .string(let needle) = element else { return .unknown }
            try budget.spend(text.utf8.count / 64, at: span)
            return Truth(containsBytes(text, needle))
        default:
            return .unknown
        }
    }

    static func affix(prefix: Bool, _ a: Value?, _ b: Value?) -> Truth {
        guard case .string(let text)? = a, case .string(let affix)? = b else { return .unknown }
        return Truth(
            prefix ? text.utf8.starts(with: affix.utf8) : text.utf8.reversed().starts(with: affix.utf8.reversed()))
    }

    static func matches(_ value: Value?, _ glob: Glob) -> Truth {
        guard case .string(let text)? = value else { return .unknown }
        return Truth(glob.matches(text))
    }

    static func arithmetic(_ op: BinaryOperator, _ a: Value?, _ b: Value?) -> Value? {
        guard case .number(let x)? = a, case .number(let y)? = b else { return nil }
        return .number(op == .plus ? x + y : x - y)
    }

    static func negate(_ a: Value?) -> Value? {
        guard case .number(let x)? = a else { return nil }
        return .number(-x)
    }

    static func length(_ a: Value?) -> Value? {
        switch a {
        case .string(let s)?: .number(Double(s.unicodeScalars.count))
        case .list(let items)?: .number(Double(items.count))
        case .map(let map)?: .number(Double(map.count))
        default: nil
        }
    }

    static func lower(_ a: Value?) -> Value? {
        guard case .string(let s)? = a else { return nil }
        return .string(s.lowercased())
    }

    /// `split(text, separator)`; missing when either is not a string or the separator is empty.
    static func split(_ a: Value?, _ b: Value?, budget: inout Frame, at span: Span) throws(Fault) -> Value? {
        guard case .string(let text)? = a, case .string(let separator)? = b, !separator.isEmpty else { return nil }
        let pieces = text.split(separator: separator, omittingEmptySubsequences: false)
        try budget.spend(pieces.count, at: span)
        return .list(pieces.map { .string(String($0)) })
    }

    /// The elements `any`/`all` visit: a list's elements, or a map's keys in sorted order; nil
    /// (undetermined) for anything else.
    static func elements(_ value: Value?) -> [Value]? {
        switch value {
        case .list(let items)?: items
        case .map(let map)?: map.keys.sorted().map { .string($0) }
        default: nil
        }
    }

    /// Evaluates an expression of constants at check time; nil if it faults.
    static func evaluateConstant(_ ir: IR) -> Value?? {
        let code = Compiler(lets: [], tracing: nil).value(ir)
        return Frame.with(budget: 1_000_000, letCount: 0, localCount: 0) { frame -> Value?? in
            do throws(Fault) {
                return .some(try code(Roots(), &frame))
            } catch {
                return nil
            }
        }
    }
}
