/// Diagnostics: what the pipeline says about a rule set, collected (never thrown) so that one
/// pass reports every independent problem.
///
/// Each diagnostic has a stable id (`rules.parse.expected-token`) that docs, tests and
/// integrators' scripts can point at; the message may be reworded, the id may not.
public struct Diagnostic: Sendable, Hashable {
    public enum Severity: String, Sendable, Hashable {
        case error, warning
    }

    /// A stable identifier. New ids may be added; existing ones keep their meaning.
    public struct ID: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Reading files.
        public static let ioRead = ID(rawValue: "rules.io.read-failed")
        public static let ioEmpty = ID(rawValue: "rules.io.no-rule-files")
        // Lexer.
        public static let unexpectedCharacter = ID(rawValue: "rules.lex.unexpected-character")
        public static let unterminatedString = ID(rawValue: "rules.lex.unterminated-string")
        public static let invalidEscape = ID(rawValue: "rules.lex.invalid-escape")
        public static let invalidNumber = ID(rawValue: "rules.lex.invalid-number")
        public static let fileTooLarge = ID(rawValue: "rules.lex.file-too-large")
        public static let lookAlikeCharacter = ID(rawValue: "rules.lex.look-alike-character")
        public static let nonASCIICharacter = ID(rawValue: "rules.lex.non-ascii-character")
        // Parser.
        public static let expectedToken = ID(rawValue: "rules.parse.expected-token")
        public static let expectedExpression = ID(rawValue: "rules.parse.expected-expression")
        public static let expectedStatement = ID(rawValue: "rules.parse.expected-statement")
        public static let unknownUnit = ID(rawValue: "rules.parse.unknown-unit")
        public static let chainedComparison = ID(rawValue: "rules.parse.chained-comparison")
        public static let tooDeep = ID(rawValue: "rules.parse.too-deep")
        public static let reservedWord = ID(rawValue: "rules.parse.reserved-word")
        public static let unclosedDelimiter = ID(rawValue: "rules.parse.unclosed-delimiter")
        // Checker.
        public static let unknownRoot = ID(rawValue: "rules.check.unknown-name")
        public static let unknownField = ID(rawValue: "rules.check.unknown-field")
        public static let unknownClaim = ID(rawValue: "rules.check.unknown-claim")
        public static let unavailableRoot = ID(rawValue: "rules.check.unavailable-input")
        public static let unknownFunction = ID(rawValue: "rules.check.unknown-function")
        public static let wrongArity = ID(rawValue: "rules.check.wrong-arity")
        public static let typeMismatch = ID(rawValue: "rules.check.type-mismatch")
        public static let notBoolean = ID(rawValue: "rules.check.not-a-condition")
        public static let hasNeedsPath = ID(rawValue: "rules.check.has-needs-field")
        public static let invalidGlob = ID(rawValue: "rules.check.invalid-glob")
        public static let duplicateRule = ID(rawValue: "rules.check.duplicate-rule")
        public static let duplicateLet = ID(rawValue: "rules.check.duplicate-let")
        public static let duplicateTest = ID(rawValue: "rules.check.duplicate-test")
        public static let letCycle = ID(rawValue: "rules.check.let-cycle")
        public static let letTooDeep = ID(rawValue: "rules.check.let-too-deep")
        public static let unusedLet = ID(rawValue: "rules.check.unused-let")
        public static let shadowing = ID(rawValue: "rules.check.shadowed-name")
        public static let quantifierDepth = ID(rawValue: "rules.check.quantifier-depth")
        public static let unknownPriority = ID(rawValue: "rules.check.unknown-priority")
        public static let unknownDestination = ID(rawValue: "rules.check.unknown-destination")
        public static let invalidTTL = ID(rawValue: "rules.check.invalid-ttl")
        public static let emptyPattern = ID(rawValue: "rules.check.empty-command-pattern")
        public static let testNotConstant = ID(rawValue: "rules.check.test-value-not-constant")
        public static let testUnknownRule = ID(rawValue: "rules.check.test-unknown-rule")
        public static let testSection = ID(rawValue: "rules.check.test-section")
        public static let costTooHigh = ID(rawValue: "rules.check.cost-too-high")
        public static let numberOutOfRange = ID(rawValue: "rules.check.number-out-of-range")
        public static let numberInexact = ID(rawValue: "rules.check.number-inexact")
        public static let regexPattern = ID(rawValue: "rules.check.regex-pattern")
        public static let patternNeverMatches = ID(rawValue: "rules.check.pattern-never-matches")
    }

    /// Another place worth showing, such as where a duplicate was first defined.
    public struct Related: Sendable, Hashable {
        public let message: String
        public let span: Span
    }

    public let id: ID
    public let severity: Severity
    public let message: String
    public let span: Span?
    public let hint: String?
    public let related: [Related]

    public init(
        _ id: ID, _ severity: Severity = .error, _ message: String, at span: Span?, hint: String? = nil,
        related: [Related] = []
    ) {
        self.id = id
        self.severity = severity
        self.message = message
        self.span = span
        self.hint = hint
        self.related = related
    }

    public var isError: Bool { severity == .error }
}

/// Where diagnostics accumulate during one pass.
struct DiagnosticBag {
    var items: [Diagnostic] = []
    var hasErrors: Bool { items.contains { $0.isError } }

    mutating func error(_ id: Diagnostic.ID, _ message: String, at span: Span?, hint: String? = nil) {
        items.append(Diagnostic(id, .error, message, at: span, hint: hint))
    }

    mutating func warning(_ id: Diagnostic.ID, _ message: String, at span: Span?, hint: String? = nil) {
        items.append(Diagnostic(id, .warning, message, at: span, hint: hint))
    }

    mutating func append(_ diagnostic: Diagnostic) { items.append(diagnostic) }
}

/// Renders diagnostics the way a good compiler does:
///
/// ```
/// site.rules:3:24: error[rules.check.unknown-field]: `device` has no field `tag`
///   |
/// 3 | allow command "x" when device.tag == "a"
///   |                               ^^^
///   = hint: did you mean `device.tags`?
/// ```
public struct DiagnosticRenderer: Sendable {
    public let files: [SourceFile]

    public init(files: [SourceFile]) { self.files = files }

    /// All diagnostics, each followed by a blank line, in the order given.
    public func render(_ diagnostics: [Diagnostic]) -> String {
        diagnostics.map { render($0) + "\n" }.joined(separator: "\n")
    }

    public func render(_ diagnostic: Diagnostic) -> String {
        let kind = "\(diagnostic.severity.rawValue)[\(diagnostic.id)]"
        guard let span = diagnostic.span, span.file >= 0, span.file < files.count else {
            var out = "\(kind): \(diagnostic.message)"
            if let hint = diagnostic.hint { out += "\n  = hint: \(hint)" }
            return out
        }
        let file = files[span.file]
        let (line, column) = file.location(of: span.start)
        let lineText = file.lineText(line)
        let gutter = String(repeating: " ", count: String(line).count)
        var out = "\(file.name):\(line):\(column): \(kind): \(diagnostic.message)\n"
        out += "\(gutter) |\n"
        out += "\(line) | \(lineText)\n"
        out += "\(gutter) | \(caret(lineText: lineText, column: column, span: span, file: file))"
        if let hint = diagnostic.hint { out += "\n\(gutter) = hint: \(hint)" }
        for related in diagnostic.related where related.span.file < files.count {
            let other = files[related.span.file]
            let (l, c) = other.location(of: related.span.start)
            out += "\n\(gutter) = note: \(related.message) at \(other.name):\(l):\(c)"
        }
        return out
    }

    /// Spaces up to the column (tabs kept, so the caret lines up), then one `^` a character of
    /// the span, clipped to the end of the line and at least one wide.
    private func caret(lineText: String, column: Int, span: Span, file: SourceFile) -> String {
        let characters = Array(lineText)
        var pad = ""
        for index in 0..<min(column - 1, characters.count) {
            pad.append(characters[index] == "\t" ? "\t" : " ")
        }
        let spanCharacters = file.characterCount(from: span.start, to: min(span.end, file.bytes.count))
        let room = max(1, characters.count - (column - 1))
        let width = max(1, min(spanCharacters, room))
        return pad + String(repeating: "^", count: width)
    }
}

/// The closest candidate to a misspelt name, for "did you mean" hints; nil if none is close.
func closest(to name: String, among candidates: some Sequence<String>) -> String? {
    let limit = max(1, name.count / 3)
    // Ties go to the candidate of the same length (a transposition), then alphabetically.
    var best: (String, Int, Int)?
    for candidate in candidates where candidate != name {
        let distance = editDistance(name.lowercased(), candidate.lowercased())
        let lengthGap = abs(candidate.count - name.count)
        guard distance <= limit else { continue }
        if let (bestName, bestDistance, bestGap) = best {
            if (distance, lengthGap, candidate) >= (bestDistance, bestGap, bestName) { continue }
        }
        best = (candidate, distance, lengthGap)
    }
    return best?.0
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transposition).
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.unicodeScalars)
    let b = Array(b.unicodeScalars)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    if abs(a.count - b.count) > 8 { return abs(a.count - b.count) }
    var previous2 = [Int](repeating: 0, count: b.count + 1)
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                current[j] = min(current[j], previous2[j - 2] + 1)
            }
        }
        (previous2, previous, current) = (previous, current, previous2)
    }
    return previous[b.count]
}
