/// The run-time side: the frame one decision evaluates in, the faults it can raise, and the
/// operations on values that every compiled closure shares (so the fast path, constant
/// folding and explanations cannot disagree about what `==` or `in` means).
///
/// Semantics in one place:
/// - *missing* (an absent field, or JSON `null`) makes every comparison, `in`, `contains`,
///   `startswith`, `endswith`, `matches`, `any` and `all` false; functions of missing are
///   missing; a missing condition is false.
/// - `==`/`!=` between values of different kinds are simply false/true.
/// - Ordering different kinds, a non-boolean condition, `split` by "" and an exhausted budget
///   are *faults*: the rule cannot allow (and a `deny` that faults denies).

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

    /// A condition's truth: booleans are themselves, missing is false, anything else faults.
    @inline(__always)
    static func truth(_ value: Value?, at span: Span) throws(Fault) -> Bool {
        switch value {
        case .bool(let b)?: return b
        case nil, .null?: return false
        case let other?:
            throw Fault(
                message: "a condition must be true or false, but this is the \(other.kindName) \(other)", span: span)
        }
    }

    @inline(__always)
    static func equals(_ a: Value?, _ b: Value?) -> Bool {
        guard let a = present(a), let b = present(b) else { return false }
        return a == b
    }

    static func order(_ op: BinaryOperator, _ a: Value?, _ b: Value?, at span: Span) throws(Fault) -> Bool {
        guard let a = present(a), let b = present(b) else { return false }
        let comparison: Int
        switch (a, b) {
        case (.number(let x), .number(let y)): comparison = x < y ? -1 : x > y ? 1 : 0
        case (.string(let x), .string(let y)): comparison = x < y ? -1 : x > y ? 1 : 0
        default:
            throw Fault(message: "cannot order the \(a.kindName) \(a) and the \(b.kindName) \(b)", span: span)
        }
        switch op {
        case .less: return comparison < 0
        case .lessOrEqual: return comparison <= 0
        case .greater: return comparison > 0
        default: return comparison >= 0
        }
    }

    static func member(_ element: Value?, _ container: Value?, budget: inout Frame, at span: Span) throws(Fault) -> Bool
    {
        guard let element = present(element), let container = present(container) else { return false }
        switch container {
        case .list(let items):
            try budget.spend(items.count, at: span)
            return items.contains(element)
        case .map(let map):
            guard case .string(let key) = element else { return false }
            return map[key] != nil
        case .string(let text):
            guard case .string(let needle) = element else { return false }
            try budget.spend(text.utf8.count / 64, at: span)
            return containsBytes(text, needle)
        default:
            throw Fault(message: "cannot look for a value in the \(container.kindName) \(container)", span: span)
        }
    }

    static func affix(prefix: Bool, _ a: Value?, _ b: Value?, at span: Span) throws(Fault) -> Bool {
        guard let a = present(a), let b = present(b) else { return false }
        guard case .string(let text) = a, case .string(let affix) = b else {
            throw Fault(
                message:
                    "`\(prefix ? "startswith" : "endswith")` works on strings, not the \(a.kindName == "string" ? b.kindName : a.kindName)",
                span: span)
        }
        return prefix
            ? text.utf8.starts(with: affix.utf8) : text.utf8.reversed().starts(with: affix.utf8.reversed())
    }

    static func matches(_ value: Value?, _ glob: Glob, at span: Span) throws(Fault) -> Bool {
        switch present(value) {
        case nil: return false
        case .string(let text)?: return glob.matches(text)
        case let other?:
            throw Fault(message: "`matches` works on strings, not the \(other.kindName) \(other)", span: span)
        }
    }

    static func arithmetic(_ op: BinaryOperator, _ a: Value?, _ b: Value?, at span: Span) throws(Fault) -> Value? {
        guard let a = present(a), let b = present(b) else { return nil }
        guard case .number(let x) = a, case .number(let y) = b else {
            throw Fault(
                message: "`\(op.rawValue)` needs numbers, not the \(a.kindName) \(a) and the \(b.kindName) \(b)",
                span: span)
        }
        return .number(op == .plus ? x + y : x - y)
    }

    static func negate(_ a: Value?, at span: Span) throws(Fault) -> Value? {
        guard let a = present(a) else { return nil }
        guard case .number(let x) = a else {
            throw Fault(message: "`-` needs a number, not the \(a.kindName) \(a)", span: span)
        }
        return .number(-x)
    }

    static func length(_ a: Value?, at span: Span) throws(Fault) -> Value? {
        switch present(a) {
        case nil: return nil
        case .string(let s)?: return .number(Double(s.unicodeScalars.count))
        case .list(let items)?: return .number(Double(items.count))
        case .map(let map)?: return .number(Double(map.count))
        case let other?:
            throw Fault(
                message: "`len` needs a string, a list or a map, not the \(other.kindName) \(other)", span: span)
        }
    }

    static func lower(_ a: Value?, at span: Span) throws(Fault) -> Value? {
        switch present(a) {
        case nil: return nil
        case .string(let s)?: return .string(s.lowercased())
        case let other?: throw Fault(message: "`lower` needs a string, not the \(other.kindName) \(other)", span: span)
        }
    }

    static func split(_ a: Value?, _ b: Value?, budget: inout Frame, at span: Span) throws(Fault) -> Value? {
        guard let a = present(a), let b = present(b) else { return nil }
        guard case .string(let text) = a, case .string(let separator) = b else {
            throw Fault(
                message: "`split` needs two strings, not the \(a.kindName) \(a) and the \(b.kindName) \(b)", span: span)
        }
        guard !separator.isEmpty else { throw Fault(message: "`split` cannot split by an empty string", span: span) }
        let pieces = text.split(separator: separator, omittingEmptySubsequences: false)
        try budget.spend(pieces.count, at: span)
        return .list(pieces.map { .string(String($0)) })
    }

    /// The elements `any`/`all` visit: a list's elements, or a map's keys in sorted order.
    static func elements(_ value: Value?, at span: Span) throws(Fault) -> [Value]? {
        switch present(value) {
        case nil: return nil
        case .list(let items)?: return items
        case .map(let map)?: return map.keys.sorted().map { .string($0) }
        case let other?:
            throw Fault(message: "`any` and `all` look through lists, not the \(other.kindName) \(other)", span: span)
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
