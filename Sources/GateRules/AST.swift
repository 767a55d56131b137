/// The syntax tree the parser builds. Every node has an id (unique within one compilation) and
/// a span, so the checker can attach types and the explainer can quote the source of a clause.

struct NodeID: Hashable, Sendable {
    let raw: Int
}

struct Expr: Sendable {
    var id: NodeID
    var span: Span
    var kind: ExprKind
}

indirect enum ExprKind: Sendable {
    case string(String)
    case number(Double, lexeme: String)
    /// A duration (`5m`) or size (`256 KiB`): the value in seconds or bytes.
    case quantity(Double, lexeme: String, unit: QuantityUnit)
    case bool(Bool)
    case list([Expr])
    case map([MapEntry])
    /// A root (`token`), a `let`, or a quantifier's variable; the checker decides which.
    case name(String)
    case field(Expr, name: String, nameSpan: Span)
    case index(Expr, Expr)
    /// Parentheses, kept so the formatter prints what the author wrote.
    case group(Expr)
    case unary(UnaryOperator, Expr)
    case binary(BinaryOperator, Expr, Expr, operatorSpan: Span)
    case call(String, nameSpan: Span, arguments: [Expr])
    /// `any(r in token.roles: r startswith "Gateway.")`
    case quantifier(Quantifier, variable: String, variableSpan: Span, list: Expr, body: Expr)
}

struct MapEntry: Sendable {
    var key: String
    var keySpan: Span
    var value: Expr
}

enum Quantifier: String, Sendable { case any, all }

enum UnaryOperator: String, Sendable {
    case not
    case negate = "-"
}

enum BinaryOperator: String, Sendable {
    case or, and
    case equal = "=="
    case notEqual = "!="
    case less = "<"
    case lessOrEqual = "<="
    case greater = ">"
    case greaterOrEqual = ">="
    case `in`
    case notIn = "not in"
    case contains, startswith, endswith, matches
    case plus = "+"
    case minus = "-"

    /// Binding power, loosest first: `or` < `and` < (`not`) < comparisons < `+ -`.
    var precedence: Int {
        switch self {
        case .or: 1
        case .and: 2
        case .equal, .notEqual, .less, .lessOrEqual, .greater, .greaterOrEqual, .in, .notIn, .contains, .startswith,
            .endswith, .matches:
            4
        case .plus, .minus: 5
        }
    }

    var isComparison: Bool { precedence == 4 }
}

/// Units of durations and sizes. Durations are held in seconds, sizes in bytes.
enum QuantityUnit: String, CaseIterable, Sendable {
    case ms, s, m, h, d
    case B, KB, MB, GB, KiB, MiB, GiB

    var isDuration: Bool {
        switch self {
        case .ms, .s, .m, .h, .d: true
        default: false
        }
    }

    var factor: Double {
        switch self {
        case .ms: 0.001
        case .s: 1
        case .m: 60
        case .h: 3600
        case .d: 86400
        case .B: 1
        case .KB: 1000
        case .MB: 1_000_000
        case .GB: 1_000_000_000
        case .KiB: 1024
        case .MiB: 1_048_576
        case .GiB: 1_073_741_824
        }
    }
}

/// A word or string the author wrote, with where.
struct Located: Sendable {
    var text: String
    var span: Span
}

enum RuleEffect: String, Sendable { case allow, deny }
enum TelemetryAction: String, Sendable { case route, drop }

/// `allow command "reboot", "firmware.*" as "…" when … because "…"`
struct CommandRule: Sendable {
    var id: NodeID
    var span: Span
    var effect: RuleEffect
    var patterns: [Located]
    var name: Located?
    var condition: Expr?
    var because: Located?
}

/// `route telemetry as "…" when … to upstream priority high ttl 10m because "…"` or `drop telemetry …`
struct TelemetryRule: Sendable {
    var id: NodeID
    var span: Span
    var action: TelemetryAction
    var name: Located?
    var condition: Expr?
    var destinations: [Located]
    var priority: Located?
    /// `ttl 10m`: how long a routed message may wait for its destination (the checker wants a
    /// duration written out).
    var ttl: Expr?
    var because: Located?
}

/// `let operator = "Gateway.Operator" in token.roles`
struct LetDeclaration: Sendable {
    var id: NodeID
    var span: Span
    var name: Located
    var value: Expr
}

/// `test "…" { token { … } expect allow by "…" }`
struct TestBlock: Sendable {
    var id: NodeID
    var span: Span
    var name: Located
    var sections: [TestSection]
    var expectation: TestExpectation?
}

/// One input of a test: `token { roles: ["Viewer"] }`.
struct TestSection: Sendable {
    var root: Located
    var value: Expr
}

struct TestExpectation: Sendable {
    enum Outcome: String, Sendable { case allow, deny, route, drop }
    var span: Span
    var outcome: Outcome
    /// `by "rule", "rule"`: the exact set of deciding rules, if given.
    var rules: [Located]?
    /// `expect route to upstream priority high ttl 10m, archive`
    var routes: [ExpectedRoute]
}

/// One destination of `expect route to …`, with its priority and time to live if written.
struct ExpectedRoute: Sendable {
    var destination: Located
    var priority: Located? = nil
    var ttl: Expr? = nil
}

enum Statement: Sendable {
    case letDeclaration(LetDeclaration)
    case commandRule(CommandRule)
    case telemetryRule(TelemetryRule)
    case test(TestBlock)
    /// A statement the parser gave up on (already reported). A broken `let` still defines its
    /// name, so uses of it do not cascade into "unknown name" errors.
    case broken(span: Span, letName: String?)

    var span: Span {
        switch self {
        case .letDeclaration(let s): s.span
        case .commandRule(let s): s.span
        case .telemetryRule(let s): s.span
        case .test(let s): s.span
        case .broken(let span, _): span
        }
    }
}

struct FileSyntax: Sendable {
    var file: Int
    var statements: [Statement]
    var comments: [Comment]
}
