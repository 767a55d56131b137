/// The checked program: what the checker hands to the compiler. Names are resolved (to a
/// root, a `let` slot or a quantifier's variable slot), types are known, constants are folded,
/// globs are compiled; parentheses and operator spellings are gone.
struct IR: Sendable {
    var op: IROp
    var span: Span
    var type: StaticType
}

indirect enum IROp: Sendable {
    /// A folded constant; nil stands for *missing*.
    case constant(Value?)
    case root(Root)
    case letReference(Int)
    case local(Int)
    case field(IR, String)
    case index(IR, IR)
    case not(IR)
    case negate(IR)
    case and(IR, IR)
    case or(IR, IR)
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`
    case compare(BinaryOperator, IR, IR)
    /// `+`, `-`
    case arithmetic(BinaryOperator, IR, IR)
    /// `element in container` (`contains` arrives here with its operands swapped and
    /// `substring` set: on a string, `contains` is a substring test; `in` never is).
    case member(element: IR, container: IR, substring: Bool)
    case startsWith(IR, IR)
    case endsWith(IR, IR)
    case matches(IR, Glob)
    case has(IR)
    case length(IR)
    case lower(IR)
    case split(IR, IR)
    case quantifier(Quantifier, slot: Int, list: IR, body: IR)
    case list([IR])
    case map([(String, IR)])

    var constantValue: Value?? {
        if case .constant(let value) = self { return .some(value) }
        return nil
    }
}

/// A bound on the work one evaluation can do, as a polynomial in *n*, the length of the
/// longest list or string in the input: `coefficients[k]` multiplies n^k. Quantifiers raise
/// the degree; nesting is limited, so the degree is at most 3.
public struct Cost: Sendable, Hashable, CustomStringConvertible {
    public private(set) var coefficients: [Int]

    init(_ coefficients: [Int] = [0]) { self.coefficients = coefficients }

    static let one = Cost([1])
    static let linear = Cost([0, 1])

    static func + (a: Cost, b: Cost) -> Cost {
        var out = [Int](repeating: 0, count: max(a.coefficients.count, b.coefficients.count))
        for (i, c) in a.coefficients.enumerated() { out[i] = out[i].addingSaturating(c) }
        for (i, c) in b.coefficients.enumerated() { out[i] = out[i].addingSaturating(c) }
        return Cost(out)
    }

    /// The cost times n (one more level of iteration).
    var timesN: Cost { Cost([0] + coefficients) }

    public var degree: Int { (coefficients.lastIndex { $0 != 0 }) ?? 0 }

    /// The bound for a given n.
    public func bound(n: Int) -> Int {
        var total = 0
        var power = 1
        for c in coefficients {
            total = total.addingSaturating(c.multipliedSaturating(power))
            power = power.multipliedSaturating(n)
        }
        return total
    }

    /// "412 + 38·n + 2·n²"
    public var description: String {
        let superscripts = ["", "", "²", "³", "⁴", "⁵"]
        var terms: [String] = []
        for (k, c) in coefficients.enumerated() where c != 0 {
            switch k {
            case 0: terms.append("\(c)")
            case 1: terms.append("\(c)·n")
            default: terms.append("\(c)·n\(k < superscripts.count ? superscripts[k] : "^\(k)")")
            }
        }
        return terms.isEmpty ? "0" : terms.joined(separator: " + ")
    }
}

extension Int {
    func addingSaturating(_ other: Int) -> Int {
        let (result, overflow) = addingReportingOverflow(other)
        return overflow ? .max : result
    }

    func multipliedSaturating(_ other: Int) -> Int {
        let (result, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? .max : result
    }
}
