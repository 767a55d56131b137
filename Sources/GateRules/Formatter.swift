/// The formatter: one canonical layout for a rule file, so reviews show changes of meaning,
/// not of spacing. It prints the syntax tree (so it cannot change what a rule means: the same
/// tree comes back when the output is parsed) and puts every comment back.
///
/// The layout:
/// - One statement a line when it fits in 80 columns; otherwise each clause (`when`, `to`,
///   `because`) on its own line, indented two spaces, and a `when` longer than 100 columns
///   broken before each top-level `and`/`or`.
/// - `test` blocks: one input or `expect` a line.
/// - Blank lines between statements are kept (at most one); inside statements they go.
/// - A comment stays on the line of the code it followed, or above the code it preceded. If
///   two comments would share a line, the later one moves above the statement.
public enum Formatter {
    static let oneLineWidth = 80
    static let conditionWidth = 100

    /// The formatted text, or nil and the syntax errors if the file does not parse.
    public static func format(_ source: SourceFile) -> (String?, [Diagnostic]) {
        var diagnostics = DiagnosticBag()
        var nextID = 0
        let syntax = Parser.parse(source, file: 0, nextID: &nextID, diagnostics: &diagnostics)
        if diagnostics.hasErrors { return (nil, diagnostics.items) }
        var printer = Printer(source: source, comments: syntax.comments)
        for statement in syntax.statements { printer.emit(statement) }
        printer.finish()
        return (printer.output, diagnostics.items)
    }

    /// Prints an expression on one line (also used to show clauses).
    static func text(of expr: Expr) -> String {
        switch expr.kind {
        case .string(let s): return quote(s)
        case .number(_, let lexeme): return lexeme
        case .quantity(_, let lexeme, let unit):
            return unit.isDuration ? lexeme + unit.rawValue : "\(lexeme) \(unit.rawValue)"
        case .bool(let b): return b ? "true" : "false"
        case .list(let items): return "[" + items.map(text(of:)).joined(separator: ", ") + "]"
        case .map(let entries):
            if entries.isEmpty { return "{}" }
            return "{ " + entries.map { "\(key($0.key)): \(text(of: $0.value))" }.joined(separator: ", ") + " }"
        case .name(let name): return name
        case .field(let base, let name, _): return text(of: base) + "." + name
        case .index(let base, let key): return text(of: base) + "[" + text(of: key) + "]"
        case .group(let inner): return "(" + text(of: inner) + ")"
        case .unary(.not, let operand): return "not " + text(of: operand)
        case .unary(.negate, let operand): return "-" + text(of: operand)
        case .binary(let op, let left, let right, _): return "\(text(of: left)) \(op.rawValue) \(text(of: right))"
        case .call(let name, _, let arguments):
            return name + "(" + arguments.map(text(of:)).joined(separator: ", ") + ")"
        case .quantifier(let q, let variable, _, let list, let body):
            return "\(q.rawValue)(\(variable) in \(text(of: list)): \(text(of: body)))"
        }
    }

    /// A string literal the lexer reads back as `s`.
    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// A map key or destination: bare if it is a plain word (destinations may not be keywords),
    /// else quoted.
    static func key(_ s: String, keywordsAllowed: Bool = true) -> String {
        guard let first = s.unicodeScalars.first, first.isASCIILetter || first == "_",
            s.unicodeScalars.allSatisfy({ $0.isASCIILetter || $0 == "_" || ("0"..."9").contains($0) }),
            keywordsAllowed || Keyword(rawValue: s) == nil
        else { return quote(s) }
        return s
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
}

/// A printed line and the source offset it starts at, so comments can find their line.
private struct Line {
    var text: String
    var anchor: Int
    var indent: String
    var comment: String?
}

private struct Printer {
    let source: SourceFile
    var comments: [Comment]
    var next = 0
    var output = ""
    var printedAny = false

    init(source: SourceFile, comments: [Comment]) {
        self.source = source
        self.comments = comments
    }

    /// True if a blank line precedes `offset` in the source.
    func blankLineBefore(_ offset: Int) -> Bool {
        var newlines = 0
        var index = offset - 1
        while index >= 0 {
            switch source.bytes[index] {
            case UInt8(ascii: "\n"): newlines += 1
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"): break
            default: return newlines >= 2
            }
            index -= 1
        }
        return false
    }

    mutating func separate(_ offset: Int) {
        if printedAny, blankLineBefore(offset) { output += "\n" }
        printedAny = true
    }

    mutating func emitComment(_ comment: Comment, indent: String = "") {
        separate(comment.span.start)
        output += indent + "#" + comment.text.trimmingTrailingBlanks + "\n"
    }

    mutating func emit(_ statement: Statement) {
        let span = statement.span
        // Comments before the statement.
        while next < comments.count, comments[next].span.start < span.start {
            emitComment(comments[next])
            next += 1
        }
        // Comments inside it, and the one trailing its last line.
        var inside: [Comment] = []
        while next < comments.count, comments[next].span.start < span.end {
            inside.append(comments[next])
            next += 1
        }
        if next < comments.count, !comments[next].ownLine,
            !source.bytes[span.end..<comments[next].span.start].contains(UInt8(ascii: "\n"))
        {
            inside.append(comments[next])
            next += 1
        }
        var lines = layout(statement)
        var above: [Comment] = []
        var between: [Int: [Comment]] = [:]
        for comment in inside {
            if comment.ownLine {
                // Above the first line that starts after it.
                if let line = lines.firstIndex(where: { $0.anchor > comment.span.start }), line > 0 {
                    between[line, default: []].append(comment)
                } else {
                    above.append(comment)
                }
            } else {
                let line = lines.lastIndex(where: { $0.anchor <= comment.span.start }) ?? 0
                if lines[line].comment == nil {
                    lines[line].comment = comment.text.trimmingTrailingBlanks
                } else {
                    above.append(comment)
                }
            }
        }
        separate(span.start)
        for comment in above { output += "#" + comment.text.trimmingTrailingBlanks + "\n" }
        for (index, line) in lines.enumerated() {
            for comment in between[index] ?? [] {
                output += line.indent + "#" + comment.text.trimmingTrailingBlanks + "\n"
            }
            output += line.indent + line.text
            if let comment = line.comment { output += "  #" + comment }
            output += "\n"
        }
    }

    mutating func finish() {
        while next < comments.count {
            emitComment(comments[next])
            next += 1
        }
    }

    // MARK: Layout

    func layout(_ statement: Statement) -> [Line] {
        switch statement {
        case .letDeclaration(let s):
            let head = "let \(s.name.text) = "
            let one = head + Formatter.text(of: s.value)
            if one.count <= Formatter.conditionWidth { return [Line(text: one, anchor: s.span.start, indent: "")] }
            return chain(s.value, first: head, indent: "", continuation: "  ", anchor: s.span.start)
        case .commandRule(let s):
            var head =
                "\(s.effect.rawValue) command " + s.patterns.map { Formatter.quote($0.text) }.joined(separator: ", ")
            if let name = s.name { head += " as " + Formatter.quote(name.text) }
            return clauses(
                head: head, start: s.span.start, condition: s.condition, middle: nil, because: s.because)
        case .telemetryRule(let s):
            var head = "\(s.action.rawValue) telemetry"
            if let name = s.name { head += " as " + Formatter.quote(name.text) }
            var middle: (String, Int)?
            if let first = s.destinations.first {
                var to =
                    "to "
                    + s.destinations.map { Formatter.key($0.text, keywordsAllowed: false) }.joined(separator: ", ")
                if let priority = s.priority { to += " priority \(priority.text)" }
                if let ttl = s.ttl { to += " ttl \(Formatter.text(of: ttl))" }
                // The `to` clause starts at the `to` keyword, just before the first destination.
                middle = (to, first.span.start - 1)
            }
            return clauses(head: head, start: s.span.start, condition: s.condition, middle: middle, because: s.because)
        case .test(let s):
            var lines = [Line(text: "test \(Formatter.quote(s.name.text)) {", anchor: s.span.start, indent: "")]
            for section in s.sections {
                lines.append(
                    Line(
                        text: "\(section.root.text) \(Formatter.text(of: section.value))",
                        anchor: section.root.span.start, indent: "  "))
            }
            if let e = s.expectation {
                var text = "expect \(e.outcome.rawValue)"
                if e.outcome == .route {
                    text +=
                        " to "
                        + e.routes.map { route in
                            Formatter.key(route.destination.text, keywordsAllowed: false)
                                + (route.priority.map { " priority \($0.text)" } ?? "")
                                + (route.ttl.map { " ttl \(Formatter.text(of: $0))" } ?? "")
                        }.joined(separator: ", ")
                }
                if let rules = e.rules {
                    text += " by " + rules.map { Formatter.quote($0.text) }.joined(separator: ", ")
                }
                // Keep the expectation where it was among the inputs.
                let line = Line(text: text, anchor: e.span.start, indent: "  ")
                let position = lines.lastIndex(where: { $0.anchor < e.span.start }).map { $0 + 1 } ?? lines.count
                lines.insert(line, at: position)
            }
            lines.append(Line(text: "}", anchor: s.span.end - 1, indent: ""))
            return lines
        case .broken:
            return [Line(text: source.text(of: statement.span), anchor: statement.span.start, indent: "")]
        }
    }

    /// A rule: on one line if it fits, else one clause a line.
    func clauses(head: String, start: Int, condition: Expr?, middle: (String, Int)?, because: Located?) -> [Line] {
        var one = head
        if let condition { one += " when " + Formatter.text(of: condition) }
        if let middle { one += " " + middle.0 }
        if let because { one += " because " + Formatter.quote(because.text) }
        if one.count <= Formatter.oneLineWidth { return [Line(text: one, anchor: start, indent: "")] }
        var lines = [Line(text: head, anchor: start, indent: "")]
        if let condition {
            let when = "when " + Formatter.text(of: condition)
            if when.count + 2 <= Formatter.conditionWidth {
                lines.append(Line(text: when, anchor: condition.span.start, indent: "  "))
            } else {
                lines += chain(
                    condition, first: "when ", indent: "  ", continuation: "    ", anchor: condition.span.start)
            }
        }
        if let middle { lines.append(Line(text: middle.0, anchor: middle.1, indent: "  ")) }
        if let because {
            lines.append(
                Line(text: "because " + Formatter.quote(because.text), anchor: because.span.start - 1, indent: "  "))
        }
        return lines
    }

    /// A long condition broken before each operator of its top-level `and`/`or` chain.
    func chain(_ expr: Expr, first: String, indent: String, continuation: String, anchor: Int) -> [Line] {
        guard case .binary(let op, _, _, _) = expr.kind, op == .and || op == .or else {
            return [Line(text: first + Formatter.text(of: expr), anchor: anchor, indent: indent)]
        }
        var operands: [Expr] = []
        func flatten(_ e: Expr) {
            if case .binary(let inner, let left, let right, _) = e.kind, inner == op {
                flatten(left)
                operands.append(right)
            } else {
                operands.append(e)
            }
        }
        flatten(expr)
        var lines = [Line(text: first + Formatter.text(of: operands[0]), anchor: anchor, indent: indent)]
        for operand in operands.dropFirst() {
            lines.append(
                Line(
                    text: "\(op.rawValue) " + Formatter.text(of: operand), anchor: operand.span.start,
                    indent: continuation))
        }
        return lines
    }
}

extension String {
    fileprivate var trimmingTrailingBlanks: String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\t" || last == "\r" { s = s.dropLast() }
        return String(s)
    }
}
