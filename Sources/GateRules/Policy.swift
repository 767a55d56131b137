import Synchronization

/// A compiled policy: every `.rules` file of a directory, checked and lowered, ready to decide.
///
/// `Policy` is immutable and `Sendable`: any number of threads may call `decide` at once.
/// Compiling is the only step that can fail, and it fails with diagnostics, never by throwing.
/// Swap policies at run time with `PolicyHandle`.

/// The inputs of a command decision. Each is JSON-shaped; absent ones read as missing.
public struct CommandInput: Sendable {
    var roots: Roots

    /// - Parameters:
    ///   - command: `{name, args, id, timeout}`; at least `name`.
    ///   - token: the caller's verified JWT claims.
    ///   - now: usually `Value.now(unixSeconds:)`; the language has no other clock.
    public init(command: Value, token: Value = .null, device: Value = .null, gateway: Value = .null, now: Value = .null)
    {
        roots = Roots(command: command, token: token, device: device, gateway: gateway, now: now)
    }

    /// Reads `{"command": …, "token": …, "device": …, "gateway": …, "now": …}`; `now` may be
    /// unix seconds or a map of its fields.
    public init(json: String) throws(JSONError) {
        let value = try Value(json: json)
        self.init(
            command: value["command"] ?? .null, token: value["token"] ?? .null, device: value["device"] ?? .null,
            gateway: value["gateway"] ?? .null, now: nowValue(value["now"]))
    }

    public var command: Value {
        get { roots.command }
        set { roots = roots.replacing(.command, with: newValue) }
    }
    public var token: Value {
        get { roots.token }
        set { roots = roots.replacing(.token, with: newValue) }
    }
    public var device: Value {
        get { roots.device }
        set { roots = roots.replacing(.device, with: newValue) }
    }
    public var gateway: Value {
        get { roots.gateway }
        set { roots = roots.replacing(.gateway, with: newValue) }
    }
    public var now: Value {
        get { roots.now }
        set { roots = roots.replacing(.now, with: newValue) }
    }
}

/// The inputs of a telemetry routing decision.
public struct TelemetryInput: Sendable {
    var roots: Roots

    /// - Parameter message: `{topic, size, properties, body, content_type}`.
    public init(message: Value, device: Value = .null, gateway: Value = .null, now: Value = .null) {
        roots = Roots(device: device, gateway: gateway, message: message, now: now)
    }

    public init(json: String) throws(JSONError) {
        let value = try Value(json: json)
        self.init(
            message: value["message"] ?? .null, device: value["device"] ?? .null, gateway: value["gateway"] ?? .null,
            now: nowValue(value["now"]))
    }
}

private func nowValue(_ value: Value?) -> Value {
    if case .number(let seconds)? = value { return .now(unixSeconds: Int64(seconds)) }
    return value ?? .null
}

public final class Policy: Sendable {
    /// The sources, kept for explanations and diagnostics.
    public let files: [SourceFile]
    /// Warnings from checking (a policy with errors is never built).
    public let warnings: [Diagnostic]
    /// The static bound on one decision's work (see `Cost`).
    public let cost: Cost
    public let options: CheckOptions
    let engine: Engine
    let tests: [CheckedTest]
    private let tracedCache = Mutex<Engine??>(nil)

    /// The inputs the telemetry rules read: build only these for `route`.
    public let telemetryReads: TelemetryReads

    public var commandRuleCount: Int { engine.commandRules.count }
    public var telemetryRuleCount: Int { engine.telemetryRules.count }
    public var testCount: Int { tests.count }

    private init(files: [SourceFile], warnings: [Diagnostic], program: CheckedProgram, options: CheckOptions) {
        self.files = files
        self.warnings = warnings
        self.cost = program.cost
        self.options = options
        self.engine = Engine(program: program, files: files, tracing: false)
        self.tests = program.tests
        self.telemetryReads = TelemetryReads.of(program)
    }

    /// Parses, checks and compiles. Returns nil (and the reasons) if anything is an error;
    /// warnings come back either way.
    public static func compile(files: [SourceFile], options: CheckOptions = CheckOptions()) -> (Policy?, [Diagnostic]) {
        let (program, diagnostics) = frontEnd(files: files, options: options)
        guard let program else { return (nil, diagnostics) }
        return (Policy(files: files, warnings: diagnostics, program: program, options: options), diagnostics)
    }

    /// Lexes, parses and checks every file; nil program if there is any error.
    static func frontEnd(files: [SourceFile], options: CheckOptions) -> (CheckedProgram?, [Diagnostic]) {
        var diagnostics = DiagnosticBag()
        var nextID = 0
        var syntax: [FileSyntax] = []
        for (index, file) in files.enumerated() {
            syntax.append(Parser.parse(file, file: index, nextID: &nextID, diagnostics: &diagnostics))
        }
        let (program, checkDiagnostics) = Checker.check(syntax, files: files, options: options)
        diagnostics.items += checkDiagnostics
        // In reading order: by file, then position (stable, so one place keeps its order).
        let sorted = diagnostics.items.enumerated().sorted { a, b in
            let x = a.element.span.map { ($0.file, $0.start) } ?? (-1, -1)
            let y = b.element.span.map { ($0.file, $0.start) } ?? (-1, -1)
            return x != y ? x < y : a.offset < b.offset
        }.map(\.element)
        return (diagnostics.hasErrors ? nil : program, sorted)
    }

    /// Decides a command. Never fails: anything that goes wrong denies.
    public func decide(_ input: CommandInput) -> Decision {
        engine.decide(input.roots, budget: options.budget, trace: nil)
    }

    /// Decides a command and, with `explain`, records every clause's value. The explanation is
    /// built by recompiling the same sources with tracing, so the fast path carries no cost.
    public func decide(_ input: CommandInput, explain: Bool) -> Decision {
        guard explain, let traced = tracedEngine() else { return decide(input) }
        return traced.decide(input.roots, budget: options.budget, trace: Trace())
    }

    /// Routes a telemetry message. Never fails: anything that goes wrong drops.
    public func route(_ input: TelemetryInput, explain: Bool = false) -> RouteDecision {
        if explain, let traced = tracedEngine() {
            return traced.route(input.roots, budget: options.budget, trace: Trace())
        }
        return engine.route(input.roots, budget: options.budget, trace: nil)
    }

    /// Routes a telemetry message into `scratch`, as `route(_:)` decides, naming rules by their
    /// position in `telemetryRules`: for a daemon routing every message, which reuses one
    /// scratch and so allocates nothing for the decision.
    public func route(_ input: TelemetryInput, into scratch: inout RouteScratch) {
        var explained: [RuleExplanation] = []
        engine.route(input.roots, budget: options.budget, trace: nil, into: &scratch, explained: &explained)
    }

    /// The engine compiled with tracing, built on the first explanation and kept: explaining
    /// many inputs (`rules explain`, the fuzzer) compiles the sources once.
    private func tracedEngine() -> Engine? {
        tracedCache.withLock { cached in
            if let cached { return cached }
            let engine = Self.frontEnd(files: files, options: options).0.map {
                Engine(program: $0, files: files, tracing: true)
            }
            cached = .some(engine)
            return engine
        }
    }
}

/// The compiled rules and the index that finds the ones a command name can match. A class,
/// so that a decision borrows it rather than copying its arrays.
final class Engine: Sendable {
    final class CommandRule: Sendable {
        let index: Int32
        let effect: RuleEffect
        let patterns: [Glob]
        let condition: ConditionCode?

        init(index: Int32, effect: RuleEffect, patterns: [Glob], condition: ConditionCode?) {
            self.index = index
            self.effect = effect
            self.patterns = patterns
            self.condition = condition
        }

        func matches(_ name: String) -> Bool { patterns.contains { $0.matches(name) } }
    }

    struct TelemetryRule: Sendable {
        let index: Int32
        let action: TelemetryAction
        let routes: [Route]
        let condition: ConditionCode?
    }

    /// The rules a command name can match, denies and allows apart, in policy order.
    final class Candidates: Sendable {
        let denies: [Int32]
        let allows: [Int32]

        init(denies: [Int32] = [], allows: [Int32] = []) {
            self.denies = denies
            self.allows = allows
        }
    }

    let table: [RuleRef]
    let commandRules: [CommandRule]
    let telemetryRules: [TelemetryRule]
    /// Every command name written without wildcards → the rules that can match it.
    let byName: NameIndex<Candidates>
    /// Rules with a wildcard pattern: the candidates for any other name (patterns checked at run time).
    let wildcard: Candidates
    let letCount: Int
    let localCount: Int

    init(program: CheckedProgram, files: [SourceFile], tracing: Bool) {
        let compiler = Compiler(lets: program.lets, tracing: tracing ? files : nil)
        var table: [RuleRef] = []
        func reference(_ name: String, _ span: Span, _ because: String?) -> Int32 {
            let file = files[span.file]
            table.append(
                RuleRef(name: name, file: file.name, line: file.location(of: span.start).line, because: because))
            return Int32(table.count - 1)
        }
        var commandRules: [CommandRule] = []
        for rule in program.commandRules {
            commandRules.append(
                CommandRule(
                    index: reference(rule.name, rule.span, rule.because), effect: rule.effect, patterns: rule.patterns,
                    condition: rule.condition.map(compiler.rootCondition)))
        }
        var telemetryRules: [TelemetryRule] = []
        for rule in program.telemetryRules {
            telemetryRules.append(
                TelemetryRule(
                    index: reference(rule.name, rule.span, rule.because), action: rule.action,
                    routes: rule.destinations.map { Route(destination: $0, priority: rule.priority, ttl: rule.ttl) },
                    condition: rule.condition.map(compiler.rootCondition)))
        }
        // The index: for each literal name, the rules naming it plus the wildcard rules matching it.
        var wildcardDenies: [Int32] = []
        var wildcardAllows: [Int32] = []
        var literalNames: Set<String> = []
        for (position, rule) in commandRules.enumerated() {
            if rule.patterns.contains(where: { !$0.isLiteral }) {
                if rule.effect == .deny {
                    wildcardDenies.append(Int32(position))
                } else {
                    wildcardAllows.append(Int32(position))
                }
            }
            for pattern in rule.patterns where pattern.isLiteral { literalNames.insert(pattern.pattern) }
        }
        var byName: [(String, Candidates)] = []
        for name in literalNames {
            var denies: [Int32] = []
            var allows: [Int32] = []
            for (position, rule) in commandRules.enumerated() where rule.matches(name) {
                if rule.effect == .deny { denies.append(Int32(position)) } else { allows.append(Int32(position)) }
            }
            byName.append((name, Candidates(denies: denies, allows: allows)))
        }
        self.table = table
        self.commandRules = commandRules
        self.telemetryRules = telemetryRules
        self.byName = NameIndex(byName)
        self.wildcard = Candidates(denies: wildcardDenies, allows: wildcardAllows)
        self.letCount = compiler.letSlots
        self.localCount = program.localSlots
    }

    private enum Outcome {
        case matched, notMatched, undetermined
        case failed(Fault)
    }

    @inline(__always)
    private func evaluate(_ condition: ConditionCode?, _ roots: Roots, _ frame: inout Frame) -> Outcome {
        guard let condition else { return .matched }
        do throws(Fault) {
            switch try condition(roots, &frame) {
            case .yes: return .matched
            case .no: return .notMatched
            case .unknown: return .undetermined
            }
        } catch {
            return .failed(error)
        }
    }

    /// A rule's outcome for explanations; `applies` says what an undetermined condition does
    /// to a rule of this kind (a deny or drop applies, an allow or route does not).
    private func describe(_ outcome: Outcome, conditional: Bool, kind: String, applies: Bool) -> String {
        switch outcome {
        case .matched: conditional ? "matched" : "matched (no condition)"
        case .notMatched: "did not match"
        case .undetermined: applies ? "undetermined ⇒ the \(kind) applies" : "undetermined ⇒ the \(kind) does not apply"
        case .failed(let fault): "failed: \(fault.message)"
        }
    }

    /// What the rules evaluated so far decided.
    private struct Tally {
        var first: Int32 = -1
        var more: [Int32] = []
        var faults: [RuleFault] = []
        var undetermined = SmallIndexList()
        var explained: [RuleExplanation] = []
    }

    func decide(_ roots: Roots, budget: Int, trace: Trace?) -> Decision {
        guard let name = roots.commandName else {
            return Decision(
                effect: .deny, faults: [], undeterminedIndexes: SmallIndexList(),
                explanation: trace.map { _ in Explanation(rules: []) },
                table: table,
                first: -1, more: [])
        }
        let indexed = byName[name]
        let candidates = indexed ?? wildcard
        let checkPatterns = indexed == nil
        var tally = Tally()
        var effect = Effect.deny
        Frame.with(budget: budget, letCount: letCount, localCount: localCount, trace: trace) { frame in
            run(candidates.denies, denying: true, name: name, checkPatterns: checkPatterns, roots, &frame, &tally)
            if tally.first < 0 {
                run(candidates.allows, denying: false, name: name, checkPatterns: checkPatterns, roots, &frame, &tally)
                if tally.first >= 0 { effect = .allow }
            }
        }
        return Decision(
            effect: effect, faults: tally.faults, undeterminedIndexes: tally.undetermined,
            explanation: trace.map { _ in Explanation(rules: tally.explained) },
            table: table, first: tally.first, more: tally.more)
    }

    /// Evaluates the candidate rules of one kind and records those that decide.
    private func run(
        _ positions: [Int32], denying: Bool, name: String, checkPatterns: Bool, _ roots: Roots,
        _ frame: inout Frame, _ tally: inout Tally
    ) {
        for position in positions {
            let rule = commandRules[Int(position)]
            if checkPatterns, !rule.matches(name) { continue }
            let outcome = evaluate(rule.condition, roots, &frame)
            if let trace = frame.trace {
                tally.explained.append(
                    RuleExplanation(
                        rule: table[Int(rule.index)], kind: rule.effect.rawValue,
                        outcome: describe(
                            outcome, conditional: rule.condition != nil, kind: rule.effect.rawValue, applies: denying),
                        clauses: trace.take()))
            }
            var decides = false
            switch outcome {
            case .matched: decides = true
            case .notMatched: break
            case .undetermined:
                tally.undetermined.append(rule.index)
                decides = denying  // a deny applies when undetermined; an allow needs true
            case .failed(let fault):
                tally.faults.append(RuleFault(rule: table[Int(rule.index)], message: fault.message))
                decides = denying  // a failing deny denies; a failing allow cannot allow
            }
            if decides {
                if tally.first < 0 { tally.first = rule.index } else { tally.more.append(rule.index) }
            }
        }
    }

    func route(_ roots: Roots, budget: Int, trace: Trace?) -> RouteDecision {
        var scratch = RouteScratch()
        var explained: [RuleExplanation] = []
        route(roots, budget: budget, trace: trace, into: &scratch, explained: &explained)
        let ref = { (position: Int) in self.table[Int(self.telemetryRules[position].index)] }
        return RouteDecision(
            routes: scratch.routes, origins: scratch.origins.map(ref), rules: scratch.deciding.map(ref),
            faults: scratch.faults.map { RuleFault(rule: ref($0.rule), message: $0.message) },
            undetermined: scratch.undetermined.map(ref), explanation: trace.map { _ in Explanation(rules: explained) })
    }

    /// The decision, into `scratch` (emptied first, its storage kept: routing many messages
    /// through one scratch allocates nothing for it after the first). Rules are named by their
    /// position among the telemetry rules (`Policy.telemetryRules`).
    func route(
        _ roots: Roots, budget: Int, trace: Trace?, into scratch: inout RouteScratch,
        explained: inout [RuleExplanation]
    ) {
        scratch.reset()
        Frame.with(budget: budget, letCount: letCount, localCount: localCount, trace: trace) { frame in
            var dropping = false
            for (position, rule) in telemetryRules.enumerated() {
                let outcome = evaluate(rule.condition, roots, &frame)
                if let trace {
                    explained.append(
                        RuleExplanation(
                            rule: table[Int(rule.index)], kind: rule.action.rawValue,
                            outcome: describe(
                                outcome, conditional: rule.condition != nil, kind: rule.action.rawValue,
                                applies: rule.action == .drop),
                            clauses: trace.take()))
                }
                if case .undetermined = outcome { scratch.undetermined.append(position) }
                switch (outcome, rule.action) {
                case (.matched, .drop), (.undetermined, .drop):
                    // A drop applies when its condition is undetermined, as a deny does: a
                    // message the rules cannot judge is not sent on.
                    if !dropping { scratch.deciding.removeAll(keepingCapacity: true) }
                    dropping = true
                    scratch.deciding.append(position)
                case (.matched, .route):
                    guard !dropping else { break }
                    scratch.deciding.append(position)
                    for route in rule.routes {
                        if let existing = scratch.routes.firstIndex(where: { $0.destination == route.destination }) {
                            // The highest priority wins, and brings its time to live; between
                            // routes of one priority, the longer time to live (none is longest).
                            if Self.supersedes(route, scratch.routes[existing]) {
                                scratch.routes[existing] = route
                                scratch.origins[existing] = position
                            }
                        } else {
                            scratch.routes.append(route)
                            scratch.origins.append(position)
                        }
                    }
                case (.failed(let fault), let action):
                    scratch.faults.append((position, fault.message))
                    if action == .drop {  // a failing drop drops
                        if !dropping { scratch.deciding.removeAll(keepingCapacity: true) }
                        dropping = true
                        scratch.deciding.append(position)
                    }
                case (.notMatched, _), (.undetermined, .route):
                    break
                }
            }
            if dropping {
                scratch.routes.removeAll(keepingCapacity: true)
                scratch.origins.removeAll(keepingCapacity: true)
                return
            }
            // Highest priority first; ties keep policy order (an insertion sort: stable, and
            // the routes are few).
            var i = 1
            while i < scratch.routes.count {
                var j = i
                while j > 0, scratch.routes[j - 1].priority < scratch.routes[j].priority {
                    scratch.routes.swapAt(j - 1, j)
                    scratch.origins.swapAt(j - 1, j)
                    j -= 1
                }
                i += 1
            }
        }
    }

    /// Whether `route` replaces `current` for the same destination: a higher priority, or the
    /// same priority and a longer time to live (no `ttl` is the longest).
    static func supersedes(_ route: Route, _ current: Route) -> Bool {
        if route.priority != current.priority { return route.priority > current.priority }
        guard let currentTTL = current.ttl else { return false }
        guard let ttl = route.ttl else { return true }
        return ttl > currentTTL
    }
}
