/// The parser: tokens in, a syntax tree out, by recursive descent (a Pratt loop for operators).
///
/// Error recovery works at the statement boundary, as in clox's `synchronize`: the first error
/// in a statement is reported, the statement is recorded as broken, and parsing resumes at the
/// next `let`, `allow`, `deny`, `route`, `drop` or `test` that starts a line. So one typo gives
/// one error, and the rest of the file is still checked. Messages name where the statement
/// began ("… the rule that starts at line 3").
struct Parser {
    /// Expression nesting beyond this is refused, so no input can overflow the stack.
    static let maximumDepth = 48

    let source: SourceFile
    let file: Int
    private var tokens: [Token]
    private var index = 0
    private var depth = 0
    private var nextID: Int
    private(set) var diagnostics = DiagnosticBag()
    /// Where the statement being parsed began, for messages.
    private var statementStart = 0
    private var statementKind = "statement"
    /// Where the lexer reported errors: a statement holding one gets no parse error of its own,
    /// since that would only restate the lexical one.
    private var lexicalErrors: [Int] = []
    /// Strings that are globs (command patterns, the right of `matches`): an escape such as
    /// `\.` in them is explained by the checker as regular-expression syntax instead.
    private var patternSpans: [Span] = []

    /// Thrown after an error has been reported, to unwind to the statement loop.
    struct Abandon: Error {}

    static let statementKeywords: Set<TokenKind> = [
        .keyword(.let), .keyword(.allow), .keyword(.deny), .keyword(.route), .keyword(.drop), .keyword(.test),
    ]

    /// Parses one file. `nextID` numbers nodes across all files of a policy.
    static func parse(
        _ source: SourceFile, file: Int, nextID: inout Int, diagnostics: inout DiagnosticBag
    ) -> FileSyntax {
        var lexDiagnostics = DiagnosticBag()
        let lexed = Lexer.lex(source, file: file, diagnostics: &lexDiagnostics)
        var parser = Parser(source: source, file: file, tokens: lexed.tokens, nextID: nextID)
        // Look-alike characters are read as what they resemble, and a bad escape leaves its
        // string whole: the tokens after them are sound, so the parser still speaks.
        parser.lexicalErrors = lexDiagnostics.items.filter { $0.id != .lookAlikeCharacter && $0.id != .invalidEscape }
            .compactMap { $0.span?.start }
        let statements = parser.parseFile()
        nextID = parser.nextID
        let patterns = parser.patternSpans
        diagnostics.items += lexDiagnostics.items.filter { diagnostic in
            guard diagnostic.id == .invalidEscape, let span = diagnostic.span, span.end - span.start == 2,
                patterns.contains(where: { $0.start <= span.start && span.end <= $0.end })
            else { return true }
            return !Glob.regexEscapes.contains(source.bytes[span.start + 1])
        }
        diagnostics.items += parser.diagnostics.items
        return FileSyntax(file: file, statements: statements, comments: lexed.comments)
    }

    private init(source: SourceFile, file: Int, tokens: [Token], nextID: Int) {
        self.source = source
        self.file = file
        self.tokens = tokens
        self.nextID = nextID
    }

    // MARK: Statements

    private mutating func parseFile() -> [Statement] {
        var statements: [Statement] = []
        while current.kind != .eof {
            let start = index
            statementStart = index
            var letName: String?
            do {
                statements.append(try parseStatement(letName: &letName))
            } catch {
                synchronize(from: start)
                let end = tokens[max(start, index - 1)].span.end
                statements.append(
                    .broken(span: Span(file: file, start: tokens[start].span.start, end: end), letName: letName))
            }
        }
        return statements
    }

    /// Skips to the next statement keyword that begins a line (or the end of the file).
    private mutating func synchronize(from start: Int) {
        if index == start { advance() }
        while current.kind != .eof {
            if Self.statementKeywords.contains(current.kind), current.newlinesBefore > 0 { return }
            advance()
        }
    }

    private mutating func parseStatement(letName: inout String?) throws(Abandon) -> Statement {
        switch current.kind {
        case .keyword(.let): return .letDeclaration(try parseLet(name: &letName))
        case .keyword(.allow), .keyword(.deny): return .commandRule(try parseCommandRule())
        case .keyword(.route), .keyword(.drop): return .telemetryRule(try parseTelemetryRule())
        case .keyword(.test): return .test(try parseTest())
        default:
            var hint = "a file holds `let` definitions, rules (`allow`, `deny`, `route`, `drop`) and `test` blocks"
            if current.kind == .identifier,
                let near = closest(to: current.text, among: ["let", "allow", "deny", "route", "drop", "test"])
            {
                hint = "did you mean `\(near)`?"
            }
            throw error(.expectedStatement, "expected a rule, `let` or `test`, found \(describe(current))", hint: hint)
        }
    }

    private mutating func parseLet(name letName: inout String?) throws(Abandon) -> LetDeclaration {
        statementKind = "`let`"
        let start = advance()
        let name = try expectName(what: "a name after `let`")
        letName = name.text
        try expect(.assign, "`=` after `let \(name.text)`")
        let value = try parseExpression()
        try expectEndOfStatement(allowed: [])
        return LetDeclaration(id: makeID(), span: start.span.to(previous.span), name: name, value: value)
    }

    private mutating func parseCommandRule() throws(Abandon) -> CommandRule {
        statementKind = "rule"
        let start = advance()
        let effect: RuleEffect = start.is(.allow) ? .allow : .deny
        if current.is(.telemetry) {
            throw error(
                .expectedToken, "expected `command` after `\(effect)`, found `telemetry`",
                hint: "telemetry is routed with `route telemetry` or dropped with `drop telemetry`")
        }
        try expect(.keyword(.command), "`command` after `\(effect)`")
        var patterns = [try expectString(what: "a command name (a string such as \"reboot\" or \"config.*\")")]
        while current.kind == .comma {
            advance()
            patterns.append(try expectString(what: "a command name after `,`"))
        }
        patternSpans += patterns.map(\.span)
        let name = try parseRuleName()
        let condition = try parseWhen()
        let because = try parseBecause()
        try expectEndOfStatement(allowed: ["`as`", "`when`", "`because`"], skipped: (name, condition, because))
        return CommandRule(
            id: makeID(), span: start.span.to(previous.span), effect: effect, patterns: patterns, name: name,
            condition: condition, because: because)
    }

    private mutating func parseTelemetryRule() throws(Abandon) -> TelemetryRule {
        statementKind = "rule"
        let start = advance()
        let action: TelemetryAction = start.is(.route) ? .route : .drop
        if current.is(.command) {
            throw error(
                .expectedToken, "expected `telemetry` after `\(action)`, found `command`",
                hint: "commands are let through with `allow command` and refused with `deny command`")
        }
        try expect(.keyword(.telemetry), "`telemetry` after `\(action)`")
        let name = try parseRuleName()
        let condition = try parseWhen()
        var destinations: [Located] = []
        var priority: Located?
        var ttl: Expr?
        if action == .route {
            if !current.is(.to) {
                throw error(
                    .expectedToken,
                    "expected \(condition == nil ? "`when` or " : "")`to` and a destination to finish the rule that starts at line \(startLine)",
                    hint: "for example `to upstream`")
            }
            advance()
            destinations.append(try expectDestination())
            while current.kind == .comma {
                advance()
                destinations.append(try expectDestination())
            }
            // `priority P` and `ttl DURATION`, each at most once, in either order.
            while current.is(.priority) || isTTL(current) {
                if current.is(.priority) {
                    if priority != nil { throw error(.expectedToken, "the rule gives `priority` twice") }
                    advance()
                    priority = try expectName(what: "a priority (`low`, `normal` or `high`) after `priority`")
                } else {
                    if ttl != nil { throw error(.expectedToken, "the rule gives `ttl` twice") }
                    advance()
                    ttl = try parseTTL()
                }
            }
        } else if current.is(.to) {
            throw error(
                .expectedToken, "a `drop` rule has no destination",
                hint: "to send telemetry somewhere, use `route telemetry`")
        } else if isTTL(current) || current.is(.priority) {
            throw error(
                .expectedToken, "a `drop` rule has no `\(current.text)`",
                hint: "`priority` and `ttl` belong to `route telemetry … to DESTINATION`")
        }
        let because = try parseBecause()
        var allowed = ["`as`", "`when`", "`because`"]
        if action == .route {
            allowed = (priority == nil ? ["`priority`"] : []) + (ttl == nil ? ["`ttl`"] : []) + ["`because`"]
        }
        try expectEndOfStatement(allowed: allowed, skipped: (name, condition, because))
        return TelemetryRule(
            id: makeID(), span: start.span.to(previous.span), action: action, name: name, condition: condition,
            destinations: destinations, priority: priority, ttl: ttl, because: because)
    }

    /// `ttl` is a word only after a route's destinations, not a reserved word: rules that read
    /// a property or a tag named `ttl` keep working.
    private func isTTL(_ token: Token) -> Bool { token.kind == .identifier && token.text == "ttl" }

    /// The time to live after `ttl`: an expression, which the checker wants to be a duration
    /// written out (`10m`).
    private mutating func parseTTL() throws(Abandon) -> Expr {
        guard startsExpression(current), !Self.statementKeywords.contains(current.kind) else {
            throw error(
                .expectedToken, "expected a duration (such as `10m` or `2h`) after `ttl`, found \(describe(current))")
        }
        return try parseExpression()
    }

    private mutating func parseRuleName() throws(Abandon) -> Located? {
        guard current.is(.as) else { return nil }
        advance()
        return try expectString(what: "a rule name (a string) after `as`")
    }

    private mutating func parseWhen() throws(Abandon) -> Expr? {
        guard current.is(.when) else { return nil }
        advance()
        return try parseExpression()
    }

    private mutating func parseBecause() throws(Abandon) -> Located? {
        guard current.is(.because) else { return nil }
        advance()
        return try expectString(what: "a reason (a string) after `because`")
    }

    /// A statement ends at the next statement keyword or the end of the file. Anything else is
    /// reported against the statement that started it.
    private mutating func expectEndOfStatement(
        allowed: [String], skipped: (Located?, Expr?, Located?) = (nil, nil, nil)
    ) throws(Abandon) {
        if current.kind == .eof || Self.statementKeywords.contains(current.kind) { return }
        // Offer only the clauses that may still come.
        var expected = allowed
        if skipped.0 != nil { expected.removeAll { $0 == "`as`" } }
        if skipped.1 != nil { expected.removeAll { $0 == "`when`" || $0 == "`as`" } }
        if skipped.2 != nil { expected = [] }
        let list = expected.isEmpty ? "the end" : expected.joined(separator: ", ") + " or the end"
        var hint: String?
        var words = expected.map { $0.replacing("`", with: "") }
        if skipped.1 != nil { words += ["and", "or"] }
        if current.kind == .identifier || current.kind == .keyword(.command),
            let near = closest(to: current.text, among: words)
        {
            hint = "did you mean `\(near)`?"
        } else if skipped.1 == nil, expected.contains("`when`"), startsExpression(current) {
            hint = "a condition starts with `when`"
        } else if current.kind == .assign {
            hint = "compare with `==`"
        }
        let first = expected.first.map { "expected \($0)" } ?? "expected the end"
        let message =
            expected.count <= 1
            ? "\(first) to finish the \(statementKind) that starts at line \(startLine), found \(describe(current))"
            : "expected \(list) of the \(statementKind) that starts at line \(startLine), found \(describe(current))"
        throw error(.expectedToken, message, hint: hint)
    }

    private func startsExpression(_ token: Token) -> Bool {
        switch token.kind {
        case .identifier, .string, .number, .lparen, .lbracket, .keyword(.not), .keyword(.true), .keyword(.false),
            .keyword(.command), .keyword(.any), .keyword(.all):
            true
        default: false
        }
    }

    // MARK: Tests

    static let testSections: Set<String> = ["command", "token", "device", "gateway", "message", "now"]

    private mutating func parseTest() throws(Abandon) -> TestBlock {
        statementKind = "test"
        let start = advance()
        let name = try expectString(what: "the test's name (a string) after `test`")
        try expect(.lbrace, "`{` to open the test")
        var sections: [TestSection] = []
        var expectation: TestExpectation?
        while current.kind != .rbrace {
            if current.kind == .eof || (Self.statementKeywords.contains(current.kind) && current.newlinesBefore > 0) {
                throw error(.expectedToken, "expected `}` to close the test that starts at line \(startLine)")
            }
            if current.is(.expect) {
                expectation = try parseExpectation()
                continue
            }
            let word = current.kind == .identifier || current.kind == .keyword(.command) ? current.text : ""
            guard Self.testSections.contains(word) else {
                let near = closest(to: word, among: Self.testSections.union(["expect"]))
                throw error(
                    .expectedToken,
                    "expected an input (`command`, `token`, `device`, `gateway`, `message`, `now`) or `expect` in the test that starts at line \(startLine), found \(describe(current))",
                    hint: near.map { "did you mean `\($0)`?" })
            }
            let root = Located(text: word, span: advance().span)
            sections.append(TestSection(root: root, value: try parseExpression()))
        }
        advance()
        return TestBlock(
            id: makeID(), span: start.span.to(previous.span), name: name, sections: sections, expectation: expectation)
    }

    private mutating func parseExpectation() throws(Abandon) -> TestExpectation {
        let start = advance()
        let outcome: TestExpectation.Outcome
        switch current.kind {
        case .keyword(.allow): outcome = .allow
        case .keyword(.deny): outcome = .deny
        case .keyword(.route): outcome = .route
        case .keyword(.drop): outcome = .drop
        default:
            throw error(
                .expectedToken, "expected `allow`, `deny`, `route` or `drop` after `expect`, found \(describe(current))"
            )
        }
        advance()
        var rules: [Located]?
        var routes: [ExpectedRoute] = []
        if outcome == .route {
            try expect(.keyword(.to), "`to` and a destination after `expect route`")
            repeat {
                if !routes.isEmpty { advance() }
                var route = ExpectedRoute(destination: try expectDestination())
                while current.is(.priority) && route.priority == nil || isTTL(current) && route.ttl == nil {
                    if current.is(.priority) {
                        advance()
                        route.priority = try expectName(what: "a priority after `priority`")
                    } else {
                        advance()
                        route.ttl = try parseTTL()
                    }
                }
                routes.append(route)
            } while current.kind == .comma
        }
        if current.is(.by) {
            advance()
            var names = [try expectString(what: "a rule name (a string) after `by`")]
            while current.kind == .comma {
                advance()
                names.append(try expectString(what: "a rule name after `,`"))
            }
            rules = names
        }
        return TestExpectation(span: start.span.to(previous.span), outcome: outcome, rules: rules, routes: routes)
    }

    // MARK: Expressions

    mutating func parseExpression(minimum: Int = 1) throws(Abandon) -> Expr {
        depth += 1
        defer { depth -= 1 }
        if depth > Self.maximumDepth {
            throw error(
                .tooDeep, "this expression nests more than \(Self.maximumDepth) levels deep",
                hint: "split it into named conditions with `let`")
        }
        var left = try parsePrefix(minimum: minimum)
        while true {
            if current.kind == .assign {
                throw error(.expectedToken, "unexpected `=` in a condition", hint: "compare with `==`")
            }
            guard let (op, length) = binaryOperator(), op.precedence >= minimum else { break }
            let operatorStart = current.span
            for _ in 0..<length { advance() }
            let operatorSpan = operatorStart.to(previous.span)
            let right = try parseExpression(minimum: op.precedence + 1)
            if op == .matches, case .string = right.kind { patternSpans.append(right.span) }
            left = Expr(
                id: makeID(), span: left.span.to(right.span), kind: .binary(op, left, right, operatorSpan: operatorSpan)
            )
            if op.isComparison, let (next, _) = binaryOperator(), next.isComparison {
                throw error(
                    .chainedComparison, "comparisons cannot be chained",
                    hint: "join two comparisons with `and`, as in `a < b and b < c`")
            }
        }
        return left
    }

    /// The operator at the cursor and how many tokens it spans (`not in` is two).
    private func binaryOperator() -> (BinaryOperator, Int)? {
        switch current.kind {
        case .keyword(.or): (.or, 1)
        case .keyword(.and): (.and, 1)
        case .eq: (.equal, 1)
        case .ne: (.notEqual, 1)
        case .lt: (.less, 1)
        case .le: (.lessOrEqual, 1)
        case .gt: (.greater, 1)
        case .ge: (.greaterOrEqual, 1)
        case .keyword(.in): (.in, 1)
        case .keyword(.not) where peek(1).is(.in): (.notIn, 2)
        case .keyword(.contains): (.contains, 1)
        case .keyword(.startswith): (.startswith, 1)
        case .keyword(.endswith): (.endswith, 1)
        case .keyword(.matches): (.matches, 1)
        case .plus: (.plus, 1)
        case .minus: (.minus, 1)
        default: nil
        }
    }

    private mutating func parsePrefix(minimum: Int) throws(Abandon) -> Expr {
        if current.is(.not) {
            let start = advance()
            let operand = try parseExpression(minimum: 4)
            return Expr(id: makeID(), span: start.span.to(operand.span), kind: .unary(.not, operand))
        }
        if current.kind == .minus {
            let start = advance()
            let operand = try parseExpression(minimum: 6)
            return Expr(id: makeID(), span: start.span.to(operand.span), kind: .unary(.negate, operand))
        }
        return try parsePostfix()
    }

    private mutating func parsePostfix() throws(Abandon) -> Expr {
        var expr = try parsePrimary()
        while true {
            if current.kind == .dot {
                advance()
                guard current.kind == .identifier || isKeyword(current) else {
                    throw error(.expectedToken, "expected a field name after `.`, found \(describe(current))")
                }
                let name = advance()
                // `token.site.startswith("A")`: an operator (or no function at all) written as a
                // method is read as a call with the receiver first, for the checker to explain.
                if current.kind == .lparen, current.newlinesBefore == 0,
                    [.keyword(.contains), .keyword(.startswith), .keyword(.endswith), .keyword(.matches)].contains(
                        name.kind) || (name.kind == .identifier && Schema.functions[name.text] == nil)
                {
                    let call = try parseCall(name)
                    guard case .call(_, let nameSpan, let arguments) = call.kind else { return call }
                    expr = Expr(
                        id: makeID(), span: expr.span.to(call.span),
                        kind: .call(name.text, nameSpan: nameSpan, arguments: [expr] + arguments))
                    continue
                }
                expr = Expr(
                    id: makeID(), span: expr.span.to(name.span),
                    kind: .field(expr, name: name.text, nameSpan: name.span))
            } else if current.kind == .lbracket, current.newlinesBefore == 0 {
                advance()
                let key = try parseExpression()
                try expect(.rbracket, "`]` to close the index")
                expr = Expr(id: makeID(), span: expr.span.to(previous.span), kind: .index(expr, key))
            } else {
                return expr
            }
        }
    }

    private mutating func parsePrimary() throws(Abandon) -> Expr {
        let token = current
        switch token.kind {
        case .string:
            advance()
            return Expr(id: makeID(), span: token.span, kind: .string(token.text))
        case .number:
            advance()
            return try parseNumber(token)
        case .keyword(.true), .keyword(.false):
            advance()
            return Expr(id: makeID(), span: token.span, kind: .bool(token.is(.true)))
        case .lbracket:
            let open = index
            advance()
            var items: [Expr] = []
            while current.kind != .rbracket {
                items.append(try parseExpression())
                if current.kind != .comma { break }
                advance()
            }
            try expectClosing(open, "`,` or `]` in the list that starts at line \(line(of: token))")
            return Expr(id: makeID(), span: token.span.to(previous.span), kind: .list(items))
        case .lbrace:
            let open = index
            advance()
            var entries: [MapEntry] = []
            while current.kind != .rbrace {
                guard current.kind == .identifier || current.kind == .string || isKeyword(current) else {
                    throw error(
                        .expectedToken,
                        "expected a key or `}` in the map that starts at line \(line(of: token)), found \(describe(current))"
                    )
                }
                let key = advance()
                try expect(.colon, "`:` after the key `\(key.text)`")
                entries.append(MapEntry(key: key.text, keySpan: key.span, value: try parseExpression()))
                if current.kind != .comma { break }
                advance()
            }
            try expectClosing(open, "`,` or `}` in the map that starts at line \(line(of: token))")
            return Expr(id: makeID(), span: token.span.to(previous.span), kind: .map(entries))
        case .lparen:
            let open = index
            advance()
            let inner = try parseExpression()
            try expectClosing(open, "`)` to close the `(` at line \(line(of: token))")
            return Expr(id: makeID(), span: token.span.to(previous.span), kind: .group(inner))
        case .keyword(.any), .keyword(.all):
            return try parseQuantifier()
        case .keyword(let keyword)
        where [.contains, .startswith, .endswith, .matches, .in].contains(keyword) && peek(1).kind == .lparen
            && peek(1).newlinesBefore == 0:
            // `startswith(x, "a")`: read as a call, so the checker can show the operator form.
            return try parseCall(advance())
        case .identifier, .keyword(.command):
            advance()
            if current.kind == .lparen, current.newlinesBefore == 0 {
                return try parseCall(token)
            }
            return Expr(id: makeID(), span: token.span, kind: .name(token.text))
        default:
            var hint: String?
            if case .keyword(let keyword) = token.kind, Self.statementKeywords.contains(token.kind) || keyword == .when
            {
                hint = "the condition before `\(keyword.rawValue)` is missing or incomplete"
            }
            throw error(.expectedExpression, "expected an expression, found \(describe(token))", hint: hint)
        }
    }

    /// `name(arguments…)`, the name already read and the cursor on `(`.
    private mutating func parseCall(_ token: Token) throws(Abandon) -> Expr {
        let open = index
        advance()
        var arguments: [Expr] = []
        while current.kind != .rparen {
            arguments.append(try parseExpression())
            if current.kind != .comma { break }
            advance()
        }
        try expectClosing(open, "`,` or `)` in the call to `\(token.text)`")
        return Expr(
            id: makeID(), span: token.span.to(previous.span),
            kind: .call(token.text, nameSpan: token.span, arguments: arguments))
    }

    /// A number, with a unit if one follows on the same line: `5m`, `256 KiB`.
    private mutating func parseNumber(_ token: Token) throws(Abandon) -> Expr {
        let value = Double(token.text.replacing("_", with: "")) ?? .infinity
        if current.kind == .identifier, current.newlinesBefore == 0 {
            if let unit = QuantityUnit(rawValue: current.text) {
                let unitToken = advance()
                return Expr(
                    id: makeID(), span: token.span.to(unitToken.span),
                    kind: .quantity(value * unit.factor, lexeme: token.text, unit: unit))
            }
            let adjacent = current.span.start == token.span.end
            let near =
                QuantityUnit.allCases.first { $0.rawValue.lowercased() == current.text.lowercased() }
                ?? closest(to: current.text, among: QuantityUnit.allCases.map(\.rawValue)).flatMap(QuantityUnit.init)
            if adjacent || near != nil {
                let units = QuantityUnit.allCases.map(\.rawValue).joined(separator: ", ")
                throw error(
                    .unknownUnit, "unknown unit `\(current.text)`",
                    hint: near.map { "did you mean `\($0.rawValue)`?" } ?? "the units are \(units)")
            }
        }
        return Expr(id: makeID(), span: token.span, kind: .number(value, lexeme: token.text))
    }

    /// `any(x in list: condition)` / `all(…)`.
    private mutating func parseQuantifier() throws(Abandon) -> Expr {
        let start = advance()
        let quantifier: Quantifier = start.is(.any) ? .any : .all
        let open = index
        try expect(.lparen, "`(` after `\(quantifier)`, as in `\(quantifier)(r in token.roles: r == \"x\")`")
        let variable = try expectName(what: "a variable name in `\(quantifier)(…)`")
        try expect(.keyword(.in), "`in` after `\(variable.text)`")
        let list = try parseExpression()
        try expect(.colon, "`:` before the condition of `\(quantifier)(…)`")
        let body = try parseExpression()
        try expectClosing(open, "`)` to close `\(quantifier)(` at line \(line(of: start))")
        return Expr(
            id: makeID(), span: start.span.to(previous.span),
            kind: .quantifier(quantifier, variable: variable.text, variableSpan: variable.span, list: list, body: body))
    }

    // MARK: Tokens

    private var current: Token { tokens[index] }
    private var previous: Token { tokens[max(0, index - 1)] }
    private var startLine: Int { line(of: tokens[statementStart]) }

    private func peek(_ offset: Int) -> Token { tokens[min(index + offset, tokens.count - 1)] }

    @discardableResult
    private mutating func advance() -> Token {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    private mutating func makeID() -> NodeID {
        nextID += 1
        return NodeID(raw: nextID)
    }

    private func line(of token: Token) -> Int { source.location(of: token.span.start).line }

    private func isKeyword(_ token: Token) -> Bool {
        if case .keyword = token.kind { return true }
        return false
    }

    private mutating func expect(_ kind: TokenKind, _ what: String) throws(Abandon) {
        guard current.kind == kind else {
            var hint: String?
            if case .keyword(let keyword) = kind, current.kind == .identifier,
                editDistance(current.text, keyword.rawValue) <= 2
            {
                hint = "did you mean `\(keyword.rawValue)`?"
            }
            throw error(.expectedToken, "expected \(what), found \(describe(current))", hint: hint)
        }
        advance()
    }

    /// The partner of the bracket at token `open`. If it is missing, the statement ends without
    /// it: the error points at the bracket ("this `(` is never closed"), with where the parser
    /// stopped as a note; if it comes later, something else is in the way, and that is reported.
    private mutating func expectClosing(_ open: Int, _ what: String) throws(Abandon) {
        let opener = tokens[open]
        let closer: TokenKind =
            switch opener.kind {
            case .lbracket: .rbracket
            case .lbrace: .rbrace
            default: .rparen
            }
        if current.kind == closer {
            advance()
            return
        }
        var depth = 0
        for token in tokens[open...] {
            if token.kind == .eof { break }
            if token.span.start > opener.span.start, Self.statementKeywords.contains(token.kind),
                token.newlinesBefore > 0
            {
                break
            }
            if token.kind == opener.kind { depth += 1 }
            if token.kind == closer {
                depth -= 1
                if depth == 0 { throw error(.expectedToken, "expected \(what), found \(describe(current))") }
            }
        }
        let symbol = source.text(of: opener.span)
        let closing = closer == .rparen ? ")" : closer == .rbracket ? "]" : "}"
        var stop = current.span
        if current.kind == .eof, index > 0 { stop = Span(file: file, start: previous.span.end, end: previous.span.end) }
        let statementBegin = tokens[statementStart].span.start
        if !lexicalErrors.contains(where: { $0 >= statementBegin && $0 <= max(current.span.end, stop.end) }) {
            diagnostics.append(
                Diagnostic(
                    .unclosedDelimiter, .error, "this `\(symbol)` is never closed", at: opener.span,
                    hint: "add `\(closing)` where the part it opens ends",
                    related: [.init(message: "expected `\(closing)` before \(describe(current))", span: stop)]))
        }
        throw Abandon()
    }

    private mutating func expectString(what: String) throws(Abandon) -> Located {
        guard current.kind == .string else {
            let hint = current.kind == .identifier ? "write it in quotes: \"\(current.text)\"" : nil
            throw error(.expectedToken, "expected \(what), found \(describe(current))", hint: hint)
        }
        let token = advance()
        return Located(text: token.text, span: token.span)
    }

    private mutating func expectName(what: String) throws(Abandon) -> Located {
        if case .keyword(let keyword) = current.kind {
            throw error(
                .reservedWord, "`\(keyword.rawValue)` is a reserved word and cannot be used as a name",
                hint: "choose another name")
        }
        guard current.kind == .identifier else {
            throw error(.expectedToken, "expected \(what), found \(describe(current))")
        }
        let token = advance()
        return Located(text: token.text, span: token.span)
    }

    /// A destination: a name (`upstream`) or a string (`"cold-storage"`).
    private mutating func expectDestination() throws(Abandon) -> Located {
        if current.kind == .string || current.kind == .identifier {
            let token = advance()
            return Located(text: token.text, span: token.span)
        }
        throw error(.expectedToken, "expected a destination after `to`, found \(describe(current))")
    }

    private mutating func error(_ id: Diagnostic.ID, _ message: String, hint: String? = nil) -> Abandon {
        var span = current.span
        if current.kind == .eof, index > 0 {
            // Point just past the last token rather than at the end of a trailing comment.
            span = Span(file: file, start: previous.span.end, end: previous.span.end)
        }
        let statementBegin = tokens[statementStart].span.start
        let reach = max(current.span.end, span.end)
        if !lexicalErrors.contains(where: { $0 >= statementBegin && $0 <= reach }) {
            diagnostics.error(id, message, at: span, hint: hint)
        }
        return Abandon()
    }

    private func describe(_ token: Token) -> String {
        switch token.kind {
        case .eof: "the end of the file"
        case .string: "the string \"\(token.text.count > 24 ? String(token.text.prefix(24)) + "…" : token.text)\""
        case .number: "the number `\(token.text)`"
        case .identifier: "`\(token.text)`"
        case .keyword(let keyword): "`\(keyword.rawValue)`"
        default: "`\(source.text(of: token.span))`"
        }
    }
}
