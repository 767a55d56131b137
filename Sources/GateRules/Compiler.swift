/// Lowering: the checked `IR` becomes a tree of closures ("closure compilation"). Each
/// closure does one operation and calls its children directly, so evaluating a rule is a few
/// indirect calls, with no interpretation loop, no name lookups and no dictionary lookups
/// other than the input's own fields.
///
/// Boolean operations compile to `ConditionCode` (returns a three-valued `Truth`, no boxing); values to
/// `ValueCode`. The common shapes get dedicated closures: a field path from a root,
/// `path == "constant"`, `"constant" in path`, `path in [constant list]` (a `Set` lookup),
/// compiled globs. Everything else goes through `Evaluator`'s shared operations.
///
/// When explaining, the same lowering runs with `tracing` set and wraps each clause (an
/// operand of `and`/`or`/`not`, or a whole condition) so it records its value and the values
/// of the input fields it read.

typealias ValueCode = @Sendable (Roots, inout Frame) throws(Fault) -> Value?
typealias ConditionCode = @Sendable (Roots, inout Frame) throws(Fault) -> Truth

final class Compiler {
    let lets: [CheckedLet?]
    /// The policy's sources when compiling for an explanation; nil on the fast path.
    let tracing: [SourceFile]?
    private var letBodies: [Int: ValueCode] = [:]
    /// One more than the highest `let` slot the compiled code uses: the frame's size.
    private(set) var letSlots = 0

    init(lets: [CheckedLet?], tracing: [SourceFile]?) {
        self.lets = lets
        self.tracing = tracing
    }

    /// A rule's `when`: the whole condition is a clause.
    func rootCondition(_ ir: IR) -> ConditionCode {
        condition(ir, clause: true)
    }

    // MARK: Conditions

    func condition(_ ir: IR, clause: Bool = false) -> ConditionCode {
        let code = untracedCondition(ir)
        guard clause, tracing != nil else { return code }
        switch ir.op {
        case .and, .or, .not: return code  // their operands are the clauses
        default: return traced(ir, code)
        }
    }

    private func untracedCondition(_ ir: IR) -> ConditionCode {
        let span = ir.span
        switch ir.op {
        case .constant(let value):
            let truth = Evaluator.truth(value)
            return { _, _ in truth }
        case .and(let a, let b):
            let left = condition(a, clause: true)
            let right = condition(b, clause: true)
            // Kleene: false wins, then undetermined.
            return { r, f throws(Fault) in
                switch try left(r, &f) {
                case .no: return .no
                case .yes: return try right(r, &f)
                case .unknown: return try right(r, &f) == .no ? .no : .unknown
                }
            }
        case .or(let a, let b):
            let left = condition(a, clause: true)
            let right = condition(b, clause: true)
            // Kleene: true wins, then undetermined.
            return { r, f throws(Fault) in
                switch try left(r, &f) {
                case .yes: return .yes
                case .no: return try right(r, &f)
                case .unknown: return try right(r, &f) == .yes ? .yes : .unknown
                }
            }
        case .not(let a):
            let inner = condition(a, clause: true)
            return { r, f throws(Fault) in try inner(r, &f).negated }
        case .compare(let op, let a, let b):
            return compare(op, a, b)
        case .member(let element, let container, let substring):
            return member(element, container, substring: substring, span: span)
        case .startsWith(let a, let b), .endsWith(let a, let b):
            let prefix: Bool
            if case .startsWith = ir.op { prefix = true } else { prefix = false }
            let left = value(a)
            let right = value(b)
            return { r, f throws(Fault) in Evaluator.affix(prefix: prefix, try left(r, &f), try right(r, &f)) }
        case .matches(let a, let glob):
            let subject = value(a)
            return { r, f throws(Fault) in Evaluator.matches(try subject(r, &f), glob) }
        case .has(let a):
            let path = value(a)
            return { r, f throws(Fault) in Truth(try path(r, &f) != nil) }
        case .quantifier(let quantifier, let slot, let list, let body):
            let items = value(list)
            let test = condition(body)
            let isAny = quantifier == .any
            // `any` is an `or` over the elements, `all` an `and`: the deciding value wins at
            // once; otherwise an undetermined element makes the whole undetermined.
            let decisive: Truth = isAny ? .yes : .no
            return { r, f throws(Fault) in
                guard let elements = Evaluator.elements(try items(r, &f)) else { return .unknown }
                defer { f.locals![slot] = nil }
                var undetermined = false
                for element in elements {
                    try f.spend(1, at: span)
                    f.locals![slot] = element
                    let truth = try test(r, &f)
                    if truth == decisive { return decisive }
                    if truth == .unknown { undetermined = true }
                }
                return undetermined ? .unknown : decisive.negated
            }
        default:
            let code = value(ir)
            return { r, f throws(Fault) in Evaluator.truth(try code(r, &f)) }
        }
    }

    private func compare(_ op: BinaryOperator, _ a: IR, _ b: IR) -> ConditionCode {
        // `x == "constant"` (either way round): no Value boxing of the constant.
        if op == .equal || op == .notEqual {
            var subject: IR?
            var constant: String?
            if case .constant(.string(let c)?) = b.op { (subject, constant) = (a, c) }
            if case .constant(.string(let c)?) = a.op { (subject, constant) = (b, c) }
            if let subject, let constant {
                let code = value(subject)
                let equal = op == .equal
                return { r, f throws(Fault) in
                    switch try code(r, &f) {
                    case .string(let s)?: return Truth((s == constant) == equal)
                    case nil, .null?: return .unknown
                    default: return Truth(!equal)
                    }
                }
            }
        }
        let left = value(a)
        let right = value(b)
        switch op {
        case .equal:
            return { r, f throws(Fault) in Evaluator.equals(try left(r, &f), try right(r, &f)) }
        case .notEqual:
            return { r, f throws(Fault) in Evaluator.equals(try left(r, &f), try right(r, &f)).negated }
        default:
            return { r, f throws(Fault) in Evaluator.order(op, try left(r, &f), try right(r, &f)) }
        }
    }

    private func member(_ element: IR, _ container: IR, substring: Bool, span: Span) -> ConditionCode {
        // `x in [constants]`: one hash lookup.
        if case .constant(.list(let items)?) = container.op {
            let set = Set(items)
            let code = value(element)
            return { r, f throws(Fault) in
                guard let v = Evaluator.present(try code(r, &f)) else { return .unknown }
                return Truth(set.contains(v))
            }
        }
        // `"constant" in list` (or `list contains "constant"`): scan without boxing.
        if case .constant(.string(let needle)?) = element.op {
            let code = value(container)
            return { r, f throws(Fault) in
                let haystack = try code(r, &f)
                if case .list(let items)? = haystack {
                    try f.spend(items.count, at: span)
                    for item in items {
                        if case .string(let s) = item, s == needle { return .yes }
                    }
                    return .no
                }
                return try Evaluator.member(.string(needle), haystack, substring: substring, budget: &f, at: span)
            }
        }
        let left = value(element)
        let right = value(container)
        return { r, f throws(Fault) in
            try Evaluator.member(try left(r, &f), try right(r, &f), substring: substring, budget: &f, at: span)
        }
    }

    // MARK: Values

    func value(_ ir: IR) -> ValueCode {
        let span = ir.span
        switch ir.op {
        case .constant(let v):
            return { _, _ in v }
        case .root(let root):
            return rootCode(root)
        case .field:
            return path(ir)
        case .index(let a, let b):
            let base = value(a)
            let key = value(b)
            return { r, f throws(Fault) in Evaluator.index(try base(r, &f), try key(r, &f)) }
        case .local(let slot):
            return { _, f in f.locals![slot] }
        case .letReference(let index):
            letSlots = max(letSlots, index + 1)
            let body = letBody(index)
            return { r, f throws(Fault) in
                switch f.lets![index] {
                case .done(let v): return v
                case .failed(let fault): throw fault
                case .unset:
                    do throws(Fault) {
                        let v = try body(r, &f)
                        f.lets![index] = .done(v)
                        return v
                    } catch {
                        f.lets![index] = .failed(error)
                        throw error
                    }
                }
            }
        case .negate(let a):
            let code = value(a)
            return { r, f throws(Fault) in Evaluator.negate(try code(r, &f)) }
        case .arithmetic(let op, let a, let b):
            let left = value(a)
            let right = value(b)
            return { r, f throws(Fault) in Evaluator.arithmetic(op, try left(r, &f), try right(r, &f)) }
        case .length(let a):
            let code = value(a)
            return { r, f throws(Fault) in Evaluator.length(try code(r, &f)) }
        case .lower(let a):
            let code = value(a)
            return { r, f throws(Fault) in Evaluator.lower(try code(r, &f)) }
        case .split(let a, let b):
            let left = value(a)
            let right = value(b)
            return { r, f throws(Fault) in try Evaluator.split(try left(r, &f), try right(r, &f), budget: &f, at: span)
            }
        case .list(let items):
            let codes = items.map { value($0) }
            return { r, f throws(Fault) in
                var out: [Value] = []
                out.reserveCapacity(codes.count)
                for code in codes { out.append(try code(r, &f) ?? .null) }
                return .list(out)
            }
        case .map(let entries):
            let codes = entries.map { ($0.0, value($0.1)) }
            return { r, f throws(Fault) in
                var out: [String: Value] = [:]
                for (key, code) in codes { out[key] = try code(r, &f) ?? .null }
                return .map(out)
            }
        default:
            let code = condition(ir)
            return { r, f throws(Fault) in try code(r, &f).value }
        }
    }

    private func rootCode(_ root: Root) -> ValueCode {
        switch root {
        case .command: { r, _ in Evaluator.present(r.command) }
        case .token: { r, _ in Evaluator.present(r.token) }
        case .device: { r, _ in Evaluator.present(r.device) }
        case .gateway: { r, _ in Evaluator.present(r.gateway) }
        case .message: { r, _ in Evaluator.present(r.message) }
        case .now: { r, _ in Evaluator.present(r.now) }
        }
    }

    /// `root.a.b.c` becomes one closure that walks the keys; other bases walk from their value.
    private func path(_ ir: IR) -> ValueCode {
        var reversedKeys: [String] = []
        var base = ir
        while case .field(let inner, let key) = base.op {
            reversedKeys.append(key)
            base = inner
        }
        let keys = Array(reversedKeys.reversed())
        if case .root(let root) = base.op {
            if keys.count == 1 {
                let key = keys[0]
                return { r, _ in
                    if case .map(let map) = r[root] { return Evaluator.present(Evaluator.lookup(map, key)) }
                    return nil
                }
            }
            if keys.count == 2 {
                let (first, second) = (keys[0], keys[1])
                return { r, _ in
                    guard case .map(let map) = r[root], case .map(let inner)? = Evaluator.lookup(map, first) else {
                        return nil
                    }
                    return Evaluator.present(Evaluator.lookup(inner, second))
                }
            }
            return { r, _ in
                var current: Value? = r[root]
                for key in keys { current = Evaluator.field(current, key) }
                return current
            }
        }
        let code = value(base)
        return { r, f throws(Fault) in
            var current = try code(r, &f)
            for key in keys { current = Evaluator.field(current, key) }
            return current
        }
    }

    private func letBody(_ index: Int) -> ValueCode {
        if let done = letBodies[index] { return done }
        let ir = lets[index]!.ir
        let code: ValueCode
        if tracing != nil, ir.type == .bool {
            let test = rootCondition(ir)
            code = { r, f throws(Fault) in try test(r, &f).value }
        } else {
            code = value(ir)
        }
        letBodies[index] = code
        return code
    }

    // MARK: Tracing

    /// Wraps a clause so it records its value (and the input fields it read) in the frame's trace.
    private func traced(_ ir: IR, _ code: @escaping ConditionCode) -> ConditionCode {
        let text = tracing![ir.span.file].text(of: ir.span)
        let paths = fieldPaths(in: ir).map { (tracing![$0.span.file].text(of: $0.span), value($0)) }
        return { r, f throws(Fault) in
            guard let trace = f.trace else { return try code(r, &f) }
            let slot = trace.begin(text)
            do throws(Fault) {
                let result = try code(r, &f)
                var bindings: [(String, Value?)] = []
                for (label, path) in paths { bindings.append((label, try? path(r, &f))) }
                trace.end(slot, outcome: result.name, bindings: bindings)
                return result
            } catch {
                trace.end(slot, outcome: "failed: \(error.message)", bindings: [])
                throw error
            }
        }
    }

    /// The input field paths a clause reads (outermost only, deduplicated), for "token.roles = […]".
    private func fieldPaths(in ir: IR) -> [IR] {
        var found: [IR] = []
        var seen: Set<String> = []
        func visit(_ ir: IR) {
            if case .field = ir.op {
                var base = ir
                while case .field(let inner, _) = base.op { base = inner }
                if case .root = base.op {
                    let key = "\(ir.span.file):\(ir.span.start):\(ir.span.end)"
                    if seen.insert(key).inserted { found.append(ir) }
                    return
                }
            }
            switch ir.op {
            case .field(let a, _), .not(let a), .negate(let a), .length(let a), .lower(let a), .has(let a),
                .matches(let a, _):
                visit(a)
            case .index(let a, let b), .and(let a, let b), .or(let a, let b), .compare(_, let a, let b),
                .arithmetic(_, let a, let b), .member(let a, let b, _), .startsWith(let a, let b),
                .endsWith(let a, let b), .split(let a, let b):
                visit(a)
                visit(b)
            case .quantifier(_, _, let list, _): visit(list)
            case .list(let items): items.forEach(visit)
            case .map(let entries): entries.forEach { visit($0.1) }
            case .constant, .root, .letReference, .local: break
            }
        }
        visit(ir)
        return found
    }
}

/// What an explanation records while a decision runs: one line a clause, nested under the
/// `let` whose definition it belongs to.
final class Trace {
    private(set) var entries: [ClauseExplanation] = []
    private var depth = 0

    func begin(_ text: String) -> Int {
        entries.append(ClauseExplanation(depth: depth, text: text, outcome: "not finished", bindings: [], cause: nil))
        depth += 1
        return entries.count - 1
    }

    func end(_ slot: Int, outcome: String, bindings: [(String, Value?)]) {
        depth -= 1
        entries[slot].outcome = outcome
        entries[slot].bindings = bindings.map { ($0.0, $0.1.map(\.description) ?? "missing") }
        if outcome == Truth.unknown.name { entries[slot].cause = Self.cause(bindings) }
    }

    /// Why a clause is undetermined, as far as the fields it read tell.
    private static func cause(_ bindings: [(String, Value?)]) -> String {
        if let missing = bindings.first(where: { $0.1 == nil }) { return "\(missing.0) is missing" }
        if let read = bindings.first, let value = read.1 {
            return "\(read.0) is the \(value.kindName) \(value), a type this operator does not take"
        }
        return "a value it depends on is undetermined"
    }

    func take() -> [ClauseExplanation] {
        defer { entries = [] }
        return entries
    }
}
