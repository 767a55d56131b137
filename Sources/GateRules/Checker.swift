/// The checker: resolves every name against the schema, the `let`s and the quantifier
/// variables; gives every expression a static type; folds constants; and turns the syntax
/// tree into the `IR` the compiler lowers. It reports every independent problem in one pass:
/// an expression that already failed has type `.error`, which silences checks that would only
/// repeat the first complaint, and a rule that uses a broken `let` is skipped quietly.

struct CheckedLet: Sendable {
    var name: String
    var span: Span
    var ir: IR
    /// Every root the definition reads, through other `let`s too.
    var roots: Set<Root>
}

struct CheckedCommandRule: Sendable {
    var name: String
    var span: Span
    var effect: RuleEffect
    var patterns: [Glob]
    var condition: IR?
    var because: String?
}

struct CheckedTelemetryRule: Sendable {
    var name: String
    var span: Span
    var action: TelemetryAction
    var condition: IR?
    var destinations: [String]
    var priority: RoutePriority
    /// `ttl DURATION`; nil: the message may wait as long as the destination keeps it.
    var ttl: Duration?
    var because: String?
}

/// A test block with its inputs evaluated.
struct CheckedTest: Sendable {
    var name: String
    var span: Span
    var inputs: [Root: Value]
    var outcome: TestExpectation.Outcome
    var rules: [String]?
    var routes: [Route]
    /// For each of `routes`: whether the test wrote a `ttl` (one it does not write is not compared).
    var ttlStated: [Bool]
}

struct CheckedProgram: Sendable {
    /// Indexed like `IROp.letReference`; nil for a `let` that did not check (no rule uses it).
    var lets: [CheckedLet?]
    var commandRules: [CheckedCommandRule]
    var telemetryRules: [CheckedTelemetryRule]
    var tests: [CheckedTest]
    /// How many quantifier variables can be live at once.
    var localSlots: Int
    var cost: Cost
}

/// Options a caller may give the checker.
public struct CheckOptions: Sendable {
    /// The telemetry destinations the daemon has configured; nil accepts any name.
    public var destinations: Set<String>?
    /// The run-time budget (work units a decision may spend in quantifiers and list scans).
    public var budget: Int

    public init(destinations: Set<String>? = nil, budget: Int = 100_000) {
        self.destinations = destinations
        self.budget = budget
    }
}

struct Checker {
    static let maximumLetDepth = 16
    static let maximumQuantifierDepth = 2

    let files: [SourceFile]
    let options: CheckOptions
    var diagnostics = DiagnosticBag()

    private var letDeclarations: [LetDeclaration] = []
    private var letIndex: [String: Int] = [:]
    private var letResults: [CheckedLet?] = []
    private var letInProgress: Set<Int> = []
    private var letStack: [Int] = []
    private var usedLets: Set<Int> = []
    /// Names of `let`s whose definition did not parse: uses of them are not reported again.
    private var brokenLetNames: Set<String> = []
    /// Names of rules that did not parse or check: a test naming one says nothing more.
    private var brokenRuleNames: Set<String> = []

    // The expression being checked.
    private var locals: [(name: String, slot: Int, type: StaticType)] = []
    private var maximumLocals = 0
    private var rootsRead: Set<Root> = []
    /// Roots the current rule kind receives; nil while checking a `let` (checked at each use).
    private var available: Set<Root>?
    private var contextName = ""
    /// Set when the expression uses a broken `let`: the whole rule is then dropped silently.
    private var usesBrokenLet = false
    /// True while checking a test's input values, which must be constants.
    private var constantsOnly = false

    init(files: [SourceFile], options: CheckOptions) {
        self.files = files
        self.options = options
    }

    static func check(_ syntax: [FileSyntax], files: [SourceFile], options: CheckOptions) -> (
        CheckedProgram, [Diagnostic]
    ) {
        var checker = Checker(files: files, options: options)
        let program = checker.run(syntax)
        // The same complaint twice on one line is said once.
        var seen: Set<String> = []
        let unique = checker.diagnostics.items.filter { diagnostic in
            guard let span = diagnostic.span else { return true }
            let line = files[span.file].location(of: span.start).line
            return seen.insert("\(span.file):\(line):\(diagnostic.id):\(diagnostic.message)").inserted
        }
        return (program, unique)
    }

    private mutating func run(_ syntax: [FileSyntax]) -> CheckedProgram {
        // 1. Every `let`, so that order of definition does not matter.
        var firstLet: [String: Span] = [:]
        var brokenWords: [(names: [String], ruleNames: [String])] = []
        for file in syntax {
            for statement in file.statements {
                switch statement {
                case .letDeclaration(let declaration):
                    let name = declaration.name.text
                    if let first = firstLet[name] {
                        diagnostics.append(
                            Diagnostic(
                                .duplicateLet, .error, "`\(name)` is defined twice", at: declaration.name.span,
                                hint: "rename one of them; `let`s are shared by every file of the policy",
                                related: [.init(message: "first defined", span: first)]))
                        continue
                    }
                    if Root(name: name) != nil {
                        diagnostics.error(
                            .shadowing, "`\(name)` is an input; a `let` cannot take its name",
                            at: declaration.name.span,
                            hint: "choose another name")
                        brokenLetNames.insert(name)
                        continue
                    }
                    firstLet[name] = declaration.name.span
                    letIndex[name] = letDeclarations.count
                    letDeclarations.append(declaration)
                case .broken(let span, let letName):
                    if let letName { brokenLetNames.insert(letName) }
                    brokenWords.append(Lexer.words(in: files[span.file], span: span))
                default:
                    break
                }
            }
        }
        // A statement that did not parse yields no warning or suggestion: a `let` it names is
        // not "unused", and a rule it would have defined is not "unknown" to a test.
        for words in brokenWords {
            for name in words.names { if let index = letIndex[name] { usedLets.insert(index) } }
            brokenRuleNames.formUnion(words.ruleNames)
        }
        letResults = Array(repeating: nil, count: letDeclarations.count)
        for index in letDeclarations.indices { _ = checkLet(index) }

        // 2. Rules, in file order.
        var commandRules: [CheckedCommandRule] = []
        var telemetryRules: [CheckedTelemetryRule] = []
        var ruleNames: [String: Span] = [:]
        var testBlocks: [TestBlock] = []
        for file in syntax {
            for statement in file.statements {
                switch statement {
                case .commandRule(let rule):
                    let name = rule.name?.text ?? rule.patterns.map(\.text).joined(separator: ", ")
                    let unique = claimName(
                        name, kind: rule.effect.rawValue, span: rule.name?.span ?? rule.span,
                        explicit: rule.name != nil, in: &ruleNames)
                    if let checked = checkCommandRule(rule, name: name) {
                        if unique { commandRules.append(checked) }
                    } else {
                        brokenRuleNames.insert(name)
                    }
                case .telemetryRule(let rule):
                    let name =
                        rule.name?.text
                        ?? (rule.action == .route
                            ? "route to " + rule.destinations.map(\.text).joined(separator: ", ") : "drop telemetry")
                    let unique = claimName(
                        name, kind: rule.action.rawValue, span: rule.name?.span ?? rule.span,
                        explicit: rule.name != nil, in: &ruleNames)
                    if let checked = checkTelemetryRule(rule, name: name) {
                        if unique { telemetryRules.append(checked) }
                    } else {
                        brokenRuleNames.insert(name)
                    }
                case .test(let test):
                    testBlocks.append(test)
                default:
                    break
                }
            }
        }

        // 3. `let`s nobody uses are probably mistakes.
        for (index, declaration) in letDeclarations.enumerated()
        where !usedLets.contains(index) && letResults[index] != nil {
            diagnostics.warning(
                .unusedLet, "`\(declaration.name.text)` is never used", at: declaration.name.span,
                hint: "use it in a rule's `when`, or delete it")
        }

        // 4. Tests, which may name any rule.
        let allRuleNames = commandRules.map(\.name) + telemetryRules.map(\.name)
        var testNames: [String: Span] = [:]
        var tests: [CheckedTest] = []
        for block in testBlocks {
            if let first = testNames[block.name.text] {
                diagnostics.append(
                    Diagnostic(
                        .duplicateTest, .error, "there is already a test named \"\(block.name.text)\"",
                        at: block.name.span, hint: "give each test its own name",
                        related: [.init(message: "the first is", span: first)]))
                continue
            }
            testNames[block.name.text] = block.name.span
            if let test = checkTest(block, ruleNames: allRuleNames) { tests.append(test) }
        }

        var cost = Cost()
        for checked in letResults.compactMap({ $0 }) { cost = cost + Self.cost(of: checked.ir) }
        for rule in commandRules {
            cost = cost + Cost.one + (rule.condition.map(Self.cost(of:)) ?? Cost())
        }
        for rule in telemetryRules {
            cost = cost + Cost.one + (rule.condition.map(Self.cost(of:)) ?? Cost())
        }
        return CheckedProgram(
            lets: letResults, commandRules: commandRules, telemetryRules: telemetryRules,
            tests: tests, localSlots: maximumLocals, cost: cost)
    }

    /// Records a rule name; false (after reporting) if another rule of the same kind has it.
    /// Names are unique within a kind (`allow`, `deny`, `route`, `drop`) because a decision's
    /// deciding rules are all of one kind: `allow command "reboot"` and `deny command "reboot"`
    /// may both keep the default name "reboot".
    private mutating func claimName(
        _ name: String, kind: String, span: Span, explicit: Bool, in names: inout [String: Span]
    ) -> Bool {
        if let first = names[kind + " " + name] {
            diagnostics.append(
                Diagnostic(
                    .duplicateRule, .error,
                    "there is already \(kind == "allow" ? "an" : "a") `\(kind)` rule named \"\(name)\"", at: span,
                    hint: explicit
                        ? "rule names must be unique across the policy's files"
                        : "a rule is named after its commands unless it has `as \"…\"`; name one of them",
                    related: [.init(message: "the first is", span: first)]))
            return false
        }
        names[kind + " " + name] = span
        return true
    }

    // MARK: Lets

    /// Checks a `let` once (on first use or in declaration order); nil if it is broken.
    private mutating func checkLet(_ index: Int) -> CheckedLet? {
        if let done = letResults[index] { return done }
        if letInProgress.contains(index) { return nil }
        let declaration = letDeclarations[index]
        letInProgress.insert(index)
        letStack.append(index)
        defer {
            letStack.removeLast()
        }
        // Check the body in a clean context: a `let` sees no quantifier variables.
        let saved = (locals, rootsRead, available, usesBrokenLet, contextName)
        locals = []
        rootsRead = []
        available = nil
        usesBrokenLet = false
        contextName = "`let`"
        let ir = check(declaration.value)
        let result = CheckedLet(name: declaration.name.text, span: declaration.name.span, ir: ir, roots: rootsRead)
        let broken = usesBrokenLet || ir.type == .error
        (locals, rootsRead, available, usesBrokenLet, contextName) = saved
        if broken {
            // Keep it out of the program, and make uses quiet.
            brokenLetNames.insert(declaration.name.text)
            return nil
        }
        letResults[index] = result
        return result
    }

    // MARK: Rules

    private mutating func beginRule(roots: Set<Root>, context: String) {
        locals = []
        rootsRead = []
        available = roots
        usesBrokenLet = false
        contextName = context
    }

    private mutating func checkCommandRule(_ rule: CommandRule, name: String) -> CheckedCommandRule? {
        beginRule(roots: Schema.commandRoots, context: "command rules")
        var patterns: [Glob] = []
        var valid = true
        for pattern in rule.patterns {
            if pattern.text.isEmpty {
                diagnostics.error(
                    .emptyPattern, "a command name cannot be empty", at: pattern.span,
                    hint: "to match every command, write \"*\"")
                valid = false
            } else if let regex = regexError(pattern, command: true) {
                diagnostics.error(.regexPattern, regex.message, at: pattern.span, hint: regex.hint)
                valid = false
            } else if let glob = Glob(pattern.text) {
                if let never = Glob.neverMatches(command: pattern.text) {
                    diagnostics.warning(
                        .patternNeverMatches, "this pattern never matches: no command name contains \(never.reason)",
                        at: pattern.span,
                        hint: never.fix.map { "write " + $0.map(ruleLiteral).joined(separator: ", ") }
                            ?? "write the command's name exactly as the device defines it")
                }
                patterns.append(glob)
            } else {
                diagnostics.error(
                    .invalidGlob, "the pattern \"\(pattern.text)\" ends with a lone `\\`", at: pattern.span)
                valid = false
            }
        }
        let checkedCondition = rule.condition.map { self.condition(check($0)) }
        guard valid, !usesBrokenLet, checkedCondition?.type != .error else { return nil }
        return CheckedCommandRule(
            name: name, span: rule.span, effect: rule.effect, patterns: patterns, condition: checkedCondition,
            because: rule.because?.text)
    }

    /// A pattern written as a regular expression: the message, and the globs it meant as the
    /// hint (docs/rules.md#diagnostics). nil for a glob.
    private func regexError(_ pattern: Located, command: Bool) -> (message: String, hint: String)? {
        let forms = Glob.regexSyntax(in: pattern.text, command: command)
        guard !forms.isEmpty else { return nil }
        let what = command ? "command patterns are globs" : "`matches` takes a glob"
        let message =
            "this pattern uses regular-expression syntax (\(forms.joined(separator: ", "))), but \(what)"
        guard let globs = Glob.rewrite(regex: pattern.text), globs != [pattern.text] else {
            return (
                message,
                "in a glob `*` matches any run of characters and `?` one character"
                    + (command ? "; list several commands as \"a\", \"b\"" : "")
            )
        }
        let written = globs.map(ruleLiteral).joined(separator: ", ")
        if command || globs.count == 1 { return (message, "write \(written)") }
        return (message, "write one `matches` for each of \(written), joined with `or`")
    }

    private mutating func checkTelemetryRule(_ rule: TelemetryRule, name: String) -> CheckedTelemetryRule? {
        beginRule(roots: Schema.telemetryRoots, context: "telemetry rules")
        var valid = true
        var priority = RoutePriority.normal
        if let written = rule.priority {
            if let known = RoutePriority(name: written.text) {
                priority = known
            } else {
                diagnostics.error(
                    .unknownPriority, "unknown priority `\(written.text)`", at: written.span,
                    hint: closest(to: written.text, among: RoutePriority.names).map { "did you mean `\($0)`?" }
                        ?? "the priorities are `low`, `normal` and `high`")
                valid = false
            }
        }
        if let known = options.destinations {
            for destination in rule.destinations where !known.contains(destination.text) {
                diagnostics.error(
                    .unknownDestination, "no destination is named `\(destination.text)`", at: destination.span,
                    hint: closest(to: destination.text, among: known).map { "did you mean `\($0)`?" }
                        ?? "the configured destinations are \(known.sorted().map { "`\($0)`" }.joined(separator: ", "))"
                )
                valid = false
            }
        }
        let checkedCondition = rule.condition.map { self.condition(check($0)) }
        var ttl: Duration?
        if let written = rule.ttl {
            ttl = checkTTL(written)
            if ttl == nil { valid = false }
        }
        guard valid, !usesBrokenLet, checkedCondition?.type != .error else { return nil }
        return CheckedTelemetryRule(
            name: name, span: rule.span, action: rule.action, condition: checkedCondition,
            destinations: rule.destinations.map(\.text), priority: priority, ttl: ttl, because: rule.because?.text)
    }

    /// A route's time to live: a duration written out (`10m`, `(1h)`), more than zero. Reports
    /// and returns nil otherwise.
    private mutating func checkTTL(_ expression: Expr) -> Duration? {
        var inner = expression
        while case .group(let grouped) = inner.kind { inner = grouped }
        guard case .quantity(let seconds, let lexeme, let unit) = inner.kind, unit.isDuration else {
            var hint = "write a number with its unit: `500ms`, `30s`, `10m`, `2h` or `1d`"
            if case .quantity(_, _, let unit) = inner.kind { hint = "`\(unit.rawValue)` is a size; " + hint }
            if case .number(let n, _) = inner.kind {
                hint = "a number alone has no unit: write `\(formatNumber(n))s` or `\(formatNumber(n))m`"
            }
            diagnostics.error(
                .invalidTTL, "`ttl` takes a duration written out, such as `10m`", at: expression.span, hint: hint)
            return nil
        }
        guard checkRange(seconds, lexeme: lexeme, unit: unit, at: inner.span) else { return nil }
        let milliseconds = (seconds * 1000).rounded()
        guard milliseconds <= 3650 * 86_400_000 else {
            diagnostics.error(
                .invalidTTL, "a `ttl` is at most 3650d", at: expression.span,
                hint: "to keep messages as long as the outbox does, leave `ttl` out")
            return nil
        }
        guard milliseconds >= 1 else {
            diagnostics.error(
                .invalidTTL, "a `ttl` must be more than zero", at: expression.span,
                hint:
                    "to send nothing, use `drop telemetry`; to keep messages as long as the outbox does, leave `ttl` out"
            )
            return nil
        }
        return .milliseconds(Int64(milliseconds))
    }

    // MARK: Tests

    private mutating func checkTest(_ block: TestBlock, ruleNames: [String]) -> CheckedTest? {
        var inputs: [Root: Value] = [:]
        var valid = true
        for section in block.sections {
            let root = Root(name: section.root.text)!
            if inputs[root] != nil {
                diagnostics.error(
                    .testSection, "the test gives `\(root.name)` twice", at: section.root.span,
                    hint: "merge the two into one")
                valid = false
                continue
            }
            constantsOnly = true
            locals = []
            let ir = check(section.value)
            constantsOnly = false
            guard ir.type != .error else {
                valid = false
                continue
            }
            guard case .constant(let value?) = ir.op else {
                diagnostics.error(
                    .testNotConstant, "a test input must be a value written out, not computed", at: section.value.span)
                valid = false
                continue
            }
            if root == .now {
                switch value {
                case .number(let seconds): inputs[root] = .now(unixSeconds: Int64(seconds))
                case .map: inputs[root] = value
                default:
                    diagnostics.error(
                        .testSection, "`now` takes a map such as `{ hour: 21, weekday: \"mon\" }` or unix seconds",
                        at: section.value.span)
                    valid = false
                }
                continue
            }
            guard case .map = value else {
                diagnostics.error(
                    .testSection, "`\(root.name)` takes a map, such as `\(root.name) { … }`", at: section.value.span)
                valid = false
                continue
            }
            inputs[root] = value
        }
        // An input that failed is already reported; do not also say it is missing.
        let sectionsFailed = !valid
        guard let expectation = block.expectation else {
            diagnostics.error(
                .testSection, "the test \"\(block.name.text)\" has no `expect`", at: block.name.span,
                hint: "add a line such as `expect deny` or `expect allow by \"rule\"`")
            return nil
        }
        let isCommand = expectation.outcome == .allow || expectation.outcome == .deny
        if isCommand, inputs[.command] == nil, !sectionsFailed {
            diagnostics.error(
                .testSection, "a test that expects `\(expectation.outcome)` needs a `command { name: … }` input",
                at: expectation.span)
            valid = false
        }
        if !isCommand, inputs[.message] == nil, !sectionsFailed {
            diagnostics.error(
                .testSection, "a test that expects `\(expectation.outcome)` needs a `message { … }` input",
                at: expectation.span)
            valid = false
        }
        for name in expectation.rules ?? [] where !ruleNames.contains(name.text) {
            valid = false
            if brokenRuleNames.contains(name.text) { continue }
            diagnostics.error(
                .testUnknownRule, "no rule is named \"\(name.text)\"", at: name.span,
                hint: closest(to: name.text, among: ruleNames).map { "did you mean \"\($0)\"?" })
            valid = false
        }
        var routes: [Route] = []
        var ttlStated: [Bool] = []
        for expected in expectation.routes {
            var level = RoutePriority.normal
            if let priority = expected.priority {
                guard let known = RoutePriority(name: priority.text) else {
                    diagnostics.error(
                        .unknownPriority, "unknown priority `\(priority.text)`", at: priority.span,
                        hint: "the priorities are `low`, `normal` and `high`")
                    valid = false
                    continue
                }
                level = known
            }
            var ttl: Duration?
            if let written = expected.ttl {
                ttl = checkTTL(written)
                if ttl == nil {
                    valid = false
                    continue
                }
            }
            routes.append(Route(destination: expected.destination.text, priority: level, ttl: ttl))
            ttlStated.append(expected.ttl != nil)
        }
        guard valid else { return nil }
        return CheckedTest(
            name: block.name.text, span: block.span, inputs: inputs, outcome: expectation.outcome,
            rules: expectation.rules?.map(\.text), routes: routes, ttlStated: ttlStated)
    }

    // MARK: Expressions

    /// An expression in a position that needs true or false (`when`, `and`, `not`, `any`).
    private mutating func condition(_ ir: IR) -> IR {
        switch ir.type {
        case .bool, .dynamic, .error:
            return ir
        default:
            var hint = "compare it with something, as in `x == \"…\"`"
            if case .object(let shape) = ir.type {
                hint = "to test that a field is there, write `has(\(shape.name).…)`"
            }
            if case .list = ir.type { hint = "to test for an element, write `\"…\" in` before it" }
            diagnostics.error(
                .notBoolean, "a condition must be true or false, but this is \(ir.type.phrase)", at: ir.span, hint: hint
            )
            return IR(op: ir.op, span: ir.span, type: .error)
        }
    }

    private func invalid(_ span: Span) -> IR { IR(op: .constant(nil), span: span, type: .error) }

    mutating func check(_ expr: Expr) -> IR {
        let span = expr.span
        switch expr.kind {
        case .string(let s): return IR(op: .constant(.string(s)), span: span, type: .string)
        case .number(let n, let lexeme):
            guard checkRange(n, lexeme: lexeme, unit: nil, at: span) else { return invalid(span) }
            return IR(op: .constant(.number(n)), span: span, type: .number)
        case .quantity(let n, let lexeme, let unit):
            guard checkRange(n, lexeme: lexeme, unit: unit, at: span) else { return invalid(span) }
            return IR(op: .constant(.number(n)), span: span, type: unit.isDuration ? .duration : .size)
        case .bool(let b): return IR(op: .constant(.bool(b)), span: span, type: .bool)
        case .group(let inner):
            var ir = check(inner)
            ir.span = span
            return ir
        case .list(let items):
            let checked = items.map { check($0) }
            if checked.contains(where: { $0.type == .error }) { return invalid(span) }
            let types = checked.map(\.type)
            let element = types.first.map { first in types.allSatisfy { $0 == first } ? first : .dynamic } ?? .dynamic
            return fold(IR(op: .list(checked), span: span, type: .list(element)))
        case .map(let entries):
            var seen: Set<String> = []
            var checked: [(String, IR)] = []
            for entry in entries {
                if !seen.insert(entry.key).inserted {
                    diagnostics.error(
                        .typeMismatch, "the key `\(entry.key)` appears twice in this map", at: entry.keySpan)
                    return invalid(span)
                }
                checked.append((entry.key, check(entry.value)))
            }
            if checked.contains(where: { $0.1.type == .error }) { return invalid(span) }
            return fold(IR(op: .map(checked), span: span, type: .map(.dynamic)))
        case .name(let name):
            return resolve(name: name, span: span)
        case .field(let base, let name, let nameSpan):
            return checkField(base: check(base), name: name, nameSpan: nameSpan, span: span)
        case .index(let base, let key):
            return checkIndex(base: check(base), key: check(key), span: span)
        case .unary(.not, let operand):
            let inner = condition(check(operand))
            if inner.type == .error { return invalid(span) }
            return fold(IR(op: .not(inner), span: span, type: inner.type == .dynamic ? .bool : .bool))
        case .unary(.negate, let operand):
            let inner = check(operand)
            switch inner.type {
            case .number, .duration, .size, .dynamic:
                return fold(IR(op: .negate(inner), span: span, type: inner.type))
            case .error: return invalid(span)
            default:
                diagnostics.error(.typeMismatch, "`-` needs a number, but this is \(inner.type.phrase)", at: inner.span)
                return invalid(span)
            }
        case .binary(let op, let left, let right, let operatorSpan):
            return checkBinary(op, check(left), check(right), operatorSpan: operatorSpan, span: span)
        case .call(let name, let nameSpan, let arguments):
            return checkCall(name, nameSpan: nameSpan, arguments: arguments, span: span)
        case .quantifier(let quantifier, let variable, let variableSpan, let list, let body):
            return checkQuantifier(
                quantifier, variable: variable, variableSpan: variableSpan, list: list, body: body, span: span)
        }
    }

    /// Numbers are 64-bit floating point at run time (docs/rules.md#diagnostics): a literal beyond
    /// the 64-bit integer range, or an integer above 2^53 that a double cannot hold exactly,
    /// would silently become another number, so it is refused. A quantity is checked in its
    /// base unit too (`99999999999999999 KiB` in bytes).
    private mutating func checkRange(_ value: Double, lexeme: String, unit: QuantityUnit?, at span: Span) -> Bool {
        let digits = lexeme.replacing("_", with: "")
        let written = unit.map { "`\(lexeme) \($0.rawValue)`" } ?? "`\(lexeme)`"
        let integer = !digits.isEmpty && digits.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        let lexemeBeyond = integer ? Int64(digits) == nil : abs(Double(digits) ?? .infinity) >= 0x1p63
        if lexemeBeyond || !value.isFinite || abs(value) >= 0x1p63 {
            let base = unit.map { $0.isDuration ? " in seconds" : " in bytes" } ?? ""
            diagnostics.error(
                .numberOutOfRange, "the number \(written) is beyond the 64-bit range\(lexemeBeyond ? "" : base)",
                at: span,
                hint: unit == nil
                    ? "a number must fit in 64 bits (at most 9223372036854775807); an identifier that long is compared as a string, in quotes"
                    : "a \(unit!.isDuration ? "duration" : "size") must fit in 64 bits counted in \(unit!.isDuration ? "seconds" : "bytes")"
            )
            return false
        }
        if integer, let exact = Int64(digits), Int64(exactly: Double(exact)) != exact {
            let read = Double(exact) >= 0x1p63 ? "9223372036854775808" : String(Int64(Double(exact)))
            diagnostics.error(
                .numberInexact, "the number \(written) cannot be held exactly: it would be read as \(read)", at: span,
                hint: "numbers are 64-bit floating point, exact up to 9007199254740992 (2^53); "
                    + "an identifier that long is compared as a string, in quotes")
            return false
        }
        return true
    }

    private mutating func resolve(name: String, span: Span) -> IR {
        if constantsOnly {
            diagnostics.error(
                .testNotConstant, "a test input must be a value written out; `\(name)` is a name", at: span,
                hint: "quote it if it is a string: \"\(name)\"")
            return invalid(span)
        }
        if let local = locals.last(where: { $0.name == name }) {
            return IR(op: .local(local.slot), span: span, type: local.type)
        }
        if let root = Root(name: name) {
            if let available, !available.contains(root) {
                let other = Schema.commandRoots.contains(root) ? "command rules" : "telemetry rules"
                diagnostics.error(
                    .unavailableRoot, "\(contextName) do not receive `\(name)`", at: span,
                    hint: "`\(name)` is available in \(other)")
                return invalid(span)
            }
            rootsRead.insert(root)
            return IR(op: .root(root), span: span, type: .object(Schema.shape(of: root)))
        }
        if let index = letIndex[name] {
            usedLets.insert(index)
            if letStack.count > Self.maximumLetDepth {
                diagnostics.error(
                    .letTooDeep, "`let`s refer to each other more than \(Self.maximumLetDepth) levels deep here",
                    at: span, hint: "flatten the chain of definitions")
                return invalid(span)
            }
            if letInProgress.contains(index), letResults[index] == nil, !brokenLetNames.contains(name) {
                let chain = (letStack.drop { $0 != index }.map { letDeclarations[$0].name.text } + [name])
                diagnostics.error(
                    .letCycle, "`\(name)` is defined in terms of itself: \(chain.joined(separator: " → "))", at: span,
                    hint: "rules cannot recurse; define it directly")
                brokenLetNames.insert(name)
                usesBrokenLet = true
                return invalid(span)
            }
            guard let checked = checkLet(index) else {
                usesBrokenLet = true
                return invalid(span)
            }
            if let available,
                let missing = checked.roots.subtracting(available).sorted(by: { $0.rawValue < $1.rawValue }).first
            {
                diagnostics.error(
                    .unavailableRoot, "`\(name)` reads `\(missing.name)`, which \(contextName) do not receive", at: span
                )
                return invalid(span)
            }
            rootsRead.formUnion(checked.roots)
            // Constants and plain field paths (`let allowed = token.allowed`) are inlined:
            // reading a field again costs less than caching it.
            if case .constant = checked.ir.op {
                return IR(op: checked.ir.op, span: span, type: checked.ir.type)
            }
            if Self.isFieldPath(checked.ir) {
                return IR(op: checked.ir.op, span: span, type: checked.ir.type)
            }
            return IR(op: .letReference(index), span: span, type: checked.ir.type)
        }
        if brokenLetNames.contains(name) {
            usesBrokenLet = true
            return invalid(span)
        }
        let candidates = Root.allCases.map(\.name) + letIndex.keys + locals.map(\.name)
        var hint = closest(to: name, among: candidates).map { "did you mean `\($0)`?" }
        if Schema.functions[name] != nil { hint = "`\(name)` is a function: write `\(name)(…)`" }
        if hint == nil, available != nil {
            hint = "the inputs are `command`, `token`, `device`, `gateway`, `message` and `now`; a string needs quotes"
        }
        diagnostics.error(.unknownRoot, "unknown name `\(name)`", at: span, hint: hint)
        return invalid(span)
    }

    private mutating func checkField(base: IR, name: String, nameSpan: Span, span: Span) -> IR {
        let type: StaticType
        switch base.type {
        case .error: return invalid(span)
        case .dynamic: type = .dynamic
        case .map(let value): type = value
        case .object(let shape):
            if let known = shape.fields[name] {
                type = known
            } else if shape.open {
                type = .dynamic
                if let near = closest(to: name, among: shape.fields.keys) {
                    diagnostics.warning(
                        .unknownClaim, "`\(shape.name).\(name)` is not a claim tokens usually carry", at: nameSpan,
                        hint: "did you mean `\(shape.name).\(near)`? (a claim the token lacks is missing)")
                }
            } else {
                var hint = closest(to: name, among: shape.fields.keys).map { "did you mean `\(shape.name).\($0)`?" }
                if hint == nil, shape.fields["tags"] != nil {
                    hint = "custom attributes are tags: `\(shape.name).tags.\(name)`"
                }
                if hint == nil {
                    hint = "its fields are " + shape.fields.keys.sorted().map { "`\($0)`" }.joined(separator: ", ")
                }
                diagnostics.error(.unknownField, "`\(shape.name)` has no field `\(name)`", at: nameSpan, hint: hint)
                return invalid(span)
            }
        default:
            diagnostics.error(
                .typeMismatch, "this is \(base.type.phrase), which has no fields", at: nameSpan,
                hint: "only maps have fields")
            return invalid(span)
        }
        return fold(IR(op: .field(base, name), span: span, type: type))
    }

    private mutating func checkIndex(base: IR, key: IR, span: Span) -> IR {
        if base.type == .error || key.type == .error { return invalid(span) }
        let type: StaticType
        switch base.type {
        case .list(let element):
            type = element
            if !(key.type == .number || key.type.isUnknown) {
                diagnostics.error(
                    .typeMismatch, "a list is indexed by a number, but this is \(key.type.phrase)", at: key.span)
                return invalid(span)
            }
        case .map(let value):
            type = value
            if !(key.type == .string || key.type.isUnknown) {
                diagnostics.error(
                    .typeMismatch, "a map is indexed by a string, but this is \(key.type.phrase)", at: key.span)
                return invalid(span)
            }
        case .object(let shape) where shape.open:
            type = .dynamic
        case .dynamic:
            type = .dynamic
        default:
            diagnostics.error(.typeMismatch, "\(base.type.phrase) cannot be indexed", at: base.span)
            return invalid(span)
        }
        return fold(IR(op: .index(base, key), span: span, type: type))
    }

    /// Whether `==` between these types can ever be true (dynamic fits everything).
    private func comparable(_ a: StaticType, _ b: StaticType) -> Bool {
        if a.isUnknown || b.isUnknown { return true }
        switch (a, b) {
        case (.timestamp, .number), (.number, .timestamp): return true  // `token.exp > 1767225600`
        case (.list(let x), .list(let y)): return comparable(x, y)
        case (.map, .map), (.map, .object), (.object, .map): return true
        case (.object(let x), .object(let y)): return x.name == y.name
        default: return a == b
        }
    }

    private func unitHint(_ a: StaticType, _ b: StaticType) -> String? {
        switch (a, b) {
        case (.duration, .number), (.number, .duration): "write the number with a unit, as in `30s` or `5m`"
        case (.size, .number), (.number, .size): "write the number with a unit, as in `256 KiB`"
        case (.timestamp, .string), (.string, .timestamp):
            "a time is a number of seconds since 1970: compare it with `now.unix` or a number, without quotes"
        default: nil
        }
    }

    private mutating func checkBinary(_ op: BinaryOperator, _ left: IR, _ right: IR, operatorSpan: Span, span: Span)
        -> IR
    {
        switch op {
        case .and, .or:
            let l = condition(left)
            let r = condition(right)
            if l.type == .error || r.type == .error { return invalid(span) }
            return fold(IR(op: op == .and ? .and(l, r) : .or(l, r), span: span, type: .bool))
        default:
            break
        }
        if left.type == .error || right.type == .error { return invalid(span) }
        func mismatch(_ message: String, hint: String? = nil) -> IR {
            diagnostics.error(.typeMismatch, message, at: operatorSpan, hint: hint ?? unitHint(left.type, right.type))
            return invalid(span)
        }
        switch op {
        case .equal, .notEqual:
            guard comparable(left.type, right.type) else {
                return mismatch(
                    "`\(op.rawValue)` compares \(left.type.phrase) with \(right.type.phrase); it can never be \(op == .equal ? "true" : "false")"
                )
            }
            return fold(IR(op: .compare(op, left, right), span: span, type: .bool))
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            let orderable: (StaticType) -> Bool = {
                [.number, .duration, .size, .timestamp, .string, .dynamic].contains($0)
            }
            guard orderable(left.type), orderable(right.type), comparable(left.type, right.type) else {
                return mismatch("`\(op.rawValue)` cannot order \(left.type.phrase) and \(right.type.phrase)")
            }
            return fold(IR(op: .compare(op, left, right), span: span, type: .bool))
        case .in, .notIn, .contains:
            let (element, container) = op == .contains ? (right, left) : (left, right)
            switch container.type {
            case .list(let type) where comparable(element.type, type): break
            case .string where op != .contains:
                // `in` is membership, never a substring test: `"Gateway.Operator" in roles` must
                // not be true of the string "Gateway.OperatorReadOnly".
                return mismatch(
                    "`\(op.rawValue)` looks for an element of a list or a key of a map, but this is a string",
                    hint: "for a substring test write `TEXT contains \"…\"`; `in` never looks inside a string")
            case .map, .object, .string, .dynamic:
                if !(element.type == .string || element.type.isUnknown) {
                    return mismatch(
                        "`\(op.rawValue)` looks for \(element.type.phrase) in \(container.type.phrase), which only holds strings"
                    )
                }
            case .list(let type):
                return mismatch(
                    "`\(op.rawValue)` looks for \(element.type.phrase) in a list of \(type.plural); it can never be found"
                )
            default:
                return mismatch(
                    "`\(op.rawValue)` needs a list, a map or a string to look in, but this is \(container.type.phrase)")
            }
            let member = fold(
                IR(
                    op: .member(element: element, container: container, substring: op == .contains), span: span,
                    type: .bool))
            return op == .notIn ? fold(IR(op: .not(member), span: span, type: .bool)) : member
        case .startswith, .endswith:
            guard [.string, .dynamic].contains(left.type), [.string, .dynamic].contains(right.type) else {
                return mismatch(
                    "`\(op.rawValue)` works on strings, not \(left.type == .string ? right.type.phrase : left.type.phrase)"
                )
            }
            return fold(
                IR(op: op == .startswith ? .startsWith(left, right) : .endsWith(left, right), span: span, type: .bool))
        case .matches:
            guard [.string, .dynamic].contains(left.type) else {
                return mismatch("`matches` works on strings, not \(left.type.phrase)")
            }
            guard case .constant(.string(let pattern)?) = right.op else {
                diagnostics.error(
                    .invalidGlob, "the pattern after `matches` must be a string written in the rule", at: right.span,
                    hint: "patterns are compiled when the policy loads; write it in quotes, as in \"config.*\"")
                return invalid(span)
            }
            if let regex = regexError(Located(text: pattern, span: right.span), command: false) {
                diagnostics.error(.regexPattern, regex.message, at: right.span, hint: regex.hint)
                return invalid(span)
            }
            guard let glob = Glob(pattern) else {
                diagnostics.error(.invalidGlob, "the pattern \"\(pattern)\" ends with a lone `\\`", at: right.span)
                return invalid(span)
            }
            return fold(IR(op: .matches(left, glob), span: span, type: .bool))
        case .plus, .minus:
            let type: StaticType
            switch (left.type, right.type) {
            case (.dynamic, .number), (.dynamic, .duration), (.dynamic, .size), (.dynamic, .timestamp),
                (.dynamic, .dynamic), (.number, .dynamic), (.duration, .dynamic), (.size, .dynamic),
                (.timestamp, .dynamic):
                type = .dynamic  // an open claim's unit is unknown
            case (.timestamp, .timestamp) where op == .minus:
                type = .duration  // `now.unix - token.iat < 5m`
            case (.timestamp, .duration), (.timestamp, .number):
                type = .timestamp  // `token.iat + 1h`, `token.exp - 60`
            case (.duration, .timestamp),
                (.number, .timestamp) where op == .plus:
                type = .timestamp
            case (.number, .number), (.duration, .duration), (.size, .size):
                type = left.type
            default:
                return mismatch("`\(op.rawValue)` cannot combine \(left.type.phrase) and \(right.type.phrase)")
            }
            return fold(IR(op: .arithmetic(op, left, right), span: span, type: type))
        default:
            return invalid(span)
        }
    }

    private mutating func checkCall(_ name: String, nameSpan: Span, arguments: [Expr], span: Span) -> IR {
        if constantsOnly {
            diagnostics.error(.testNotConstant, "a test input must be a value written out, not computed", at: span)
            return invalid(span)
        }
        guard let arity = Schema.functions[name] else {
            // `startswith(x, "a")`: an operator written as a function.
            let operators = ["startswith", "endswith", "contains", "matches", "in"]
            let near =
                operators.first { $0 == name.lowercased() }
                ?? closest(to: name, among: Array(Schema.functions.keys) + operators)
            if let near, operators.contains(near) {
                let file = files[nameSpan.file]
                let written =
                    arguments.count == 2
                    ? "\(file.text(of: arguments[0].span)) \(near) \(file.text(of: arguments[1].span))"
                    : near == "in" ? "x in [\"…\"]" : "x \(near) \"…\""
                diagnostics.error(
                    .unknownFunction,
                    near == name ? "`\(name)` is an operator, not a function" : "unknown function `\(name)`",
                    at: nameSpan, hint: "write `\(written)`")
                return invalid(span)
            }
            let hint =
                near.map { "did you mean `\($0)`?" }
                ?? "the functions are `has`, `len`, `lower` and `split`; `any` and `all` look through lists"
            diagnostics.error(.unknownFunction, "unknown function `\(name)`", at: nameSpan, hint: hint)
            return invalid(span)
        }
        guard arguments.count == arity else {
            diagnostics.error(
                .wrongArity, "`\(name)` takes \(arity) argument\(arity == 1 ? "" : "s"), not \(arguments.count)",
                at: span)
            return invalid(span)
        }
        let args = arguments.map { check($0) }
        if args.contains(where: { $0.type == .error }) { return invalid(span) }
        func needString(_ ir: IR) -> Bool {
            if ir.type == .string || ir.type == .dynamic { return true }
            diagnostics.error(.typeMismatch, "`\(name)` needs a string, but this is \(ir.type.phrase)", at: ir.span)
            return false
        }
        switch name {
        case "has":
            switch args[0].op {
            case .field, .index: return IR(op: .has(args[0]), span: span, type: .bool)
            default:
                diagnostics.error(
                    .hasNeedsPath, "`has` needs a field, as in `has(token.site)`", at: args[0].span,
                    hint: "`has` asks whether an input carries a field")
                return invalid(span)
            }
        case "len":
            switch args[0].type {
            case .string, .list, .map, .object, .dynamic:
                return fold(IR(op: .length(args[0]), span: span, type: .number))
            default:
                diagnostics.error(
                    .typeMismatch, "`len` needs a string, a list or a map, but this is \(args[0].type.phrase)",
                    at: args[0].span)
                return invalid(span)
            }
        case "lower":
            guard needString(args[0]) else { return invalid(span) }
            return fold(IR(op: .lower(args[0]), span: span, type: .string))
        default:  // split
            guard needString(args[0]), needString(args[1]) else { return invalid(span) }
            return fold(IR(op: .split(args[0], args[1]), span: span, type: .list(.string)))
        }
    }

    private mutating func checkQuantifier(
        _ quantifier: Quantifier, variable: String, variableSpan: Span, list: Expr, body: Expr, span: Span
    ) -> IR {
        if constantsOnly {
            diagnostics.error(.testNotConstant, "a test input must be a value written out, not computed", at: span)
            return invalid(span)
        }
        let listIR = check(list)
        if Root(name: variable) != nil || letIndex[variable] != nil || locals.contains(where: { $0.name == variable }) {
            diagnostics.error(
                .shadowing,
                "`\(variable)` already names \(Root(name: variable) != nil ? "an input" : letIndex[variable] != nil ? "a `let`" : "an outer variable")",
                at: variableSpan, hint: "choose another name for the variable")
            return invalid(span)
        }
        if locals.count >= Self.maximumQuantifierDepth {
            diagnostics.error(
                .quantifierDepth, "`any` and `all` nest at most \(Self.maximumQuantifierDepth) deep", at: span,
                hint: "each level multiplies the work by the length of a list; split the condition with `let`")
            return invalid(span)
        }
        let element: StaticType
        switch listIR.type {
        case .error: return invalid(span)
        case .list(let type): element = type
        case .map: element = .string
        case .dynamic: element = .dynamic
        default:
            diagnostics.error(
                .typeMismatch, "`\(quantifier)` looks through a list, but this is \(listIR.type.phrase)",
                at: listIR.span)
            return invalid(span)
        }
        let slot = locals.count
        locals.append((variable, slot, element))
        maximumLocals = max(maximumLocals, locals.count)
        let bodyIR = condition(check(body))
        locals.removeLast()
        if bodyIR.type == .error { return invalid(span) }
        return fold(IR(op: .quantifier(quantifier, slot: slot, list: listIR, body: bodyIR), span: span, type: .bool))
    }

    /// Evaluates an operation whose operands are all constants, at check time. One that would
    /// fault at run time is left alone, to fault (and be explained) there.
    private func fold(_ ir: IR) -> IR {
        let children: [IR]
        switch ir.op {
        case .constant, .root, .letReference, .local, .quantifier, .has: return ir
        case .field(let a, _), .not(let a), .negate(let a), .length(let a), .lower(let a), .matches(let a, _):
            children = [a]
        case .index(let a, let b), .and(let a, let b), .or(let a, let b), .compare(_, let a, let b),
            .arithmetic(_, let a, let b), .member(let a, let b, _), .startsWith(let a, let b), .endsWith(let a, let b),
            .split(let a, let b):
            children = [a, b]
        case .list(let items): children = items
        case .map(let entries): children = entries.map(\.1)
        }
        guard children.allSatisfy({ $0.op.constantValue != nil }) else { return ir }
        guard let value = Evaluator.evaluateConstant(ir) else { return ir }
        return IR(op: .constant(value), span: ir.span, type: ir.type)
    }

    /// `root.a.b`: a field path from an input, with nothing computed.
    static func isFieldPath(_ ir: IR) -> Bool {
        var base = ir
        var depth = 0
        while case .field(let inner, _) = base.op {
            base = inner
            depth += 1
        }
        if case .root = base.op { return depth > 0 }
        return false
    }

    // MARK: Cost

    /// The static bound on an expression's work (see `Cost`).
    static func cost(of ir: IR) -> Cost {
        switch ir.op {
        case .constant, .root, .letReference, .local: return .one
        case .field(let a, _), .not(let a), .negate(let a), .has(let a):
            return .one + cost(of: a)
        case .length(let a), .lower(let a), .matches(let a, _):
            return .one + .linear + cost(of: a)
        case .index(let a, let b), .and(let a, let b), .or(let a, let b), .arithmetic(_, let a, let b):
            return .one + cost(of: a) + cost(of: b)
        case .compare(_, let a, let b), .member(let a, let b, _), .startsWith(let a, let b), .endsWith(let a, let b),
            .split(let a, let b):
            return .one + .linear + cost(of: a) + cost(of: b)
        case .quantifier(_, _, let list, let body):
            return .one + cost(of: list) + (cost(of: body) + .one).timesN
        case .list(let items):
            return items.reduce(Cost.one) { $0 + cost(of: $1) }
        case .map(let entries):
            return entries.reduce(Cost.one) { $0 + cost(of: $1.1) }
        }
    }
}

extension String {
    var capitalizedFirst: String { prefix(1).uppercased() + dropFirst() }
}
