/// The lexer: UTF-8 bytes in, tokens and comments out.
///
/// Newlines are not tokens — the grammar never needs them — but each token remembers how many
/// line breaks preceded it, which the parser uses to recover at the start of a line and the
/// formatter uses to keep blank lines. Comments are kept aside (with their positions) for the
/// formatter. A lexical error is reported once and lexing goes on, so the parser still sees the
/// rest of the file.

enum Keyword: String, CaseIterable, Sendable {
    case allow, deny, command, telemetry, route, drop, when, because, `let`, to, priority, `as`
    case and, or, not, `in`, contains, startswith, endswith, matches, `true`, `false`
    case test, expect, by, any, all
}

enum TokenKind: Hashable, Sendable {
    case identifier, string, number, eof
    case keyword(Keyword)
    case lparen, rparen, lbracket, rbracket, lbrace, rbrace
    case comma, dot, colon, assign, eq, ne, lt, le, gt, ge, plus, minus
}

struct Token: Sendable {
    var kind: TokenKind
    var span: Span
    /// Identifiers and numbers: the lexeme. Strings: the decoded value.
    var text: String
    /// Line breaks between the previous token (or comment) and this one.
    var newlinesBefore: Int

    func `is`(_ keyword: Keyword) -> Bool { kind == .keyword(keyword) }
}

struct Comment: Sendable {
    var span: Span
    /// The text after `#`, without the line break.
    var text: String
    /// True if nothing but blanks precedes it on its line.
    var ownLine: Bool
    var newlinesBefore: Int
}

struct LexedFile {
    var tokens: [Token]
    var comments: [Comment]
}

/// Files larger than this are refused: rule files are written by people.
let maximumFileSize = 1 << 20

struct Lexer {
    let file: Int
    let bytes: [UInt8]
    var diagnostics: DiagnosticBag
    private var position = 0
    private var newlines = 0
    private var sawTokenOnLine = false

    init(file: Int, source: SourceFile, diagnostics: DiagnosticBag = DiagnosticBag()) {
        self.file = file
        self.bytes = source.bytes
        self.diagnostics = diagnostics
    }

    static func lex(_ source: SourceFile, file: Int, diagnostics: inout DiagnosticBag) -> LexedFile {
        var lexer = Lexer(file: file, source: source)
        let result = lexer.run()
        diagnostics.items += lexer.diagnostics.items
        return result
    }

    /// The names a stretch of source mentions, and the names of the rules it would define
    /// (`"a, b"` for `allow command "a", "b"`, an `as` name, `drop telemetry`, `route to x`):
    /// what a statement that did not parse would have referred to.
    static func words(in source: SourceFile, span: Span) -> (names: [String], ruleNames: [String]) {
        var lexer = Lexer(file: 0, source: SourceFile(name: source.name, text: source.text(of: span)))
        let tokens = lexer.run().tokens
        let names = tokens.filter { $0.kind == .identifier }.map(\.text)
        var ruleNames = tokens.enumerated().filter { $0.element.kind == .string && $0.offset > 0 }
            .filter { tokens[$0.offset - 1].is(.as) || tokens[$0.offset - 1].is(.command) }.map(\.element.text)
        if let command = tokens.firstIndex(where: { $0.is(.command) }) {
            var patterns: [String] = []
            var index = command + 1
            while index < tokens.count, tokens[index].kind == .string {
                patterns.append(tokens[index].text)
                index += 1
                guard index < tokens.count, tokens[index].kind == .comma else { break }
                index += 1
            }
            ruleNames.append(patterns.joined(separator: ", "))
        }
        if tokens.first?.is(.drop) == true { ruleNames.append("drop telemetry") }
        if tokens.first?.is(.route) == true, let to = tokens.firstIndex(where: { $0.is(.to) }) {
            let destinations = tokens[(to + 1)...].prefix {
                $0.kind == .identifier || $0.kind == .string || $0.kind == .comma
            }
            .filter { $0.kind != .comma }.map(\.text)
            ruleNames.append("route to " + destinations.joined(separator: ", "))
        }
        return (names, ruleNames)
    }

    mutating func run() -> LexedFile {
        var tokens: [Token] = []
        var comments: [Comment] = []
        if bytes.count > maximumFileSize {
            diagnostics.error(
                .fileTooLarge, "the file is \(bytes.count) bytes; rule files may be at most \(maximumFileSize)",
                at: span(0, 0))
            return LexedFile(tokens: [Token(kind: .eof, span: span(0, 0), text: "", newlinesBefore: 0)], comments: [])
        }
        // A byte-order mark that an editor put at the start of the file is not the author's text.
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }
        while true {
            skipBlanks()
            guard position < bytes.count else { break }
            let byte = bytes[position]
            if byte == UInt8(ascii: "#") {
                let start = position
                while position < bytes.count, bytes[position] != UInt8(ascii: "\n") { position += 1 }
                var end = position
                if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                let text = String(decoding: bytes[(start + 1)..<max(start + 1, end)], as: UTF8.self)
                comments.append(
                    Comment(span: span(start, end), text: text, ownLine: !sawTokenOnLine, newlinesBefore: newlines))
                newlines = 0
                continue
            }
            if let token = nextToken() {
                tokens.append(token)
                newlines = 0
                sawTokenOnLine = true
            }
        }
        tokens.append(Token(kind: .eof, span: span(bytes.count, bytes.count), text: "", newlinesBefore: newlines))
        return LexedFile(tokens: tokens, comments: comments)
    }

    private func span(_ start: Int, _ end: Int) -> Span { Span(file: file, start: start, end: end) }

    private mutating func skipBlanks() {
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: "\n"):
                newlines += 1
                sawTokenOnLine = false
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                break
            default:
                return
            }
            position += 1
        }
    }

    private mutating func nextToken() -> Token? {
        let start = position
        let byte = bytes[position]
        func make(_ kind: TokenKind, length: Int) -> Token {
            position += length
            return Token(kind: kind, span: span(start, position), text: "", newlinesBefore: newlines)
        }
        func peek(_ offset: Int) -> UInt8? {
            position + offset < bytes.count ? bytes[position + offset] : nil
        }
        switch byte {
        case UInt8(ascii: "("): return make(.lparen, length: 1)
        case UInt8(ascii: ")"): return make(.rparen, length: 1)
        case UInt8(ascii: "["): return make(.lbracket, length: 1)
        case UInt8(ascii: "]"): return make(.rbracket, length: 1)
        case UInt8(ascii: "{"): return make(.lbrace, length: 1)
        case UInt8(ascii: "}"): return make(.rbrace, length: 1)
        case UInt8(ascii: ","): return make(.comma, length: 1)
        case UInt8(ascii: "."): return make(.dot, length: 1)
        case UInt8(ascii: ":"): return make(.colon, length: 1)
        case UInt8(ascii: "+"): return make(.plus, length: 1)
        case UInt8(ascii: "-"): return make(.minus, length: 1)
        case UInt8(ascii: "="): return peek(1) == UInt8(ascii: "=") ? make(.eq, length: 2) : make(.assign, length: 1)
        case UInt8(ascii: "<"): return peek(1) == UInt8(ascii: "=") ? make(.le, length: 2) : make(.lt, length: 1)
        case UInt8(ascii: ">"): return peek(1) == UInt8(ascii: "=") ? make(.ge, length: 2) : make(.gt, length: 1)
        case UInt8(ascii: "!"):
            if peek(1) == UInt8(ascii: "=") { return make(.ne, length: 2) }
            diagnostics.error(
                .unexpectedCharacter, "unexpected character `!`", at: span(start, start + 1),
                hint: "negate a condition with `not`")
            // Read on as if `not` had been written, so the parser reports nothing more.
            var token = make(.keyword(.not), length: 1)
            token.text = "not"
            return token
        case UInt8(ascii: "&"), UInt8(ascii: "|"):
            let keyword: Keyword = byte == UInt8(ascii: "&") ? .and : .or
            let length = peek(1) == byte ? 2 : 1
            diagnostics.error(
                .unexpectedCharacter,
                "unexpected character `\(String(decoding: bytes[start..<(start + length)], as: UTF8.self))`",
                at: span(start, start + length), hint: "write `\(keyword.rawValue)`")
            var token = make(.keyword(keyword), length: length)
            token.text = keyword.rawValue
            return token
        case UInt8(ascii: "\""):
            return lexString()
        case UInt8(ascii: "'"):
            diagnostics.error(
                .unexpectedCharacter, "unexpected character `'`", at: span(start, start + 1),
                hint: "strings are written in double quotes, as in \"reboot\"")
            return lexString()
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            return lexNumber()
        default:
            if isIdentifierStart(byte) { return lexIdentifier() }
            if byte >= 0x80 { return lexNonASCII() }
            // Swallow a run of unexpected characters and report it once.
            while position < bytes.count, !isIdentifierStart(bytes[position]), !isKnownStart(bytes[position]),
                bytes[position] < 0x80
            {
                position += 1
            }
            let text = String(decoding: bytes[start..<position], as: UTF8.self)
            diagnostics.error(.unexpectedCharacter, "unexpected character `\(text)`", at: span(start, position))
            return nil
        }
    }

    private func isIdentifierStart(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || byte == UInt8(ascii: "_")
    }

    private func isIdentifierContinue(_ byte: UInt8) -> Bool {
        isIdentifierStart(byte) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
    }

    /// Bytes that start some token, a comment or a blank: where a run of junk stops.
    private func isKnownStart(_ byte: UInt8) -> Bool {
        byte < 0x80 && "()[]{},.:+-=<>!&|\"'#0123456789 \t\r\n".utf8.contains(byte)
    }

    /// A name or keyword. A letter that only looks like an ASCII one (Cyrillic `о`, fullwidth
    /// `ｔ`) is reported and read as that letter, so `tоken` still resolves.
    private mutating func lexIdentifier() -> Token {
        let start = position
        var text: [UInt8] = []
        while position < bytes.count {
            let byte = bytes[position]
            if isIdentifierContinue(byte) {
                text.append(byte)
                position += 1
                continue
            }
            guard byte >= 0x80 else { break }
            let next = scalar(at: position)
            guard case .letter(let ascii)? = LookAlike.kind(of: next.scalar) else { break }
            reportLookAlike(next.scalar, at: position, length: next.length)
            text.append(ascii)
            position += next.length
        }
        let word = String(decoding: text, as: UTF8.self)
        let kind: TokenKind = Keyword(rawValue: word).map { .keyword($0) } ?? .identifier
        return Token(kind: kind, span: span(start, position), text: word, newlinesBefore: newlines)
    }

    /// The scalar starting at a byte offset, and its length in bytes.
    private func scalar(at offset: Int) -> (scalar: Unicode.Scalar, length: Int) {
        var end = offset + 1
        while end < bytes.count, end - offset < 4, bytes[end] & 0xC0 == 0x80 { end += 1 }
        let decoded = String(decoding: bytes[offset..<end], as: UTF8.self).unicodeScalars.first ?? "\u{FFFD}"
        return (decoded, end - offset)
    }

    private mutating func reportLookAlike(_ scalar: Unicode.Scalar, at offset: Int, length: Int) {
        guard let kind = LookAlike.kind(of: scalar) else { return }
        diagnostics.error(
            .lookAlikeCharacter, "unexpected \(LookAlike.name(scalar)) — \(kind.advice)",
            at: span(offset, offset + length), hint: kind.hint)
    }

    /// A non-ASCII character outside strings and comments. A look-alike of an ASCII character is
    /// reported with what to write instead and then read as that character, so one pasted smart
    /// quote gives one error; any other character is reported with its code point and skipped.
    private mutating func lexNonASCII() -> Token? {
        let start = position
        let first = scalar(at: position)
        if let kind = LookAlike.kind(of: first.scalar) {
            switch kind {
            case .doubleQuote, .singleQuote:
                reportLookAlike(first.scalar, at: start, length: first.length)
                return lexString()
            case .letter:
                return lexIdentifier()
            case .blank, .invisible:
                reportLookAlike(first.scalar, at: start, length: first.length)
                position += first.length
                return nil
            case .punctuation(var ascii):
                reportLookAlike(first.scalar, at: start, length: first.length)
                position += first.length
                // `＝＝`, `<＝`: the second half of a two-character operator.
                if ["=", "<", ">", "!"].contains(ascii), position < bytes.count {
                    let next = scalar(at: position)
                    if next.scalar == "=" {
                        ascii += "="
                        position += 1
                    } else if LookAlike.kind(of: next.scalar) == .punctuation("=") {
                        reportLookAlike(next.scalar, at: position, length: next.length)
                        ascii += "="
                        position += next.length
                    }
                }
                let kind: TokenKind? =
                    switch ascii {
                    case "(": .lparen
                    case ")": .rparen
                    case "[": .lbracket
                    case "]": .rbracket
                    case "{": .lbrace
                    case "}": .rbrace
                    case ",": .comma
                    case ".": .dot
                    case ":": .colon
                    case "+": .plus
                    case "-": .minus
                    case "=": .assign
                    case "==": .eq
                    case "!=": .ne
                    case "<": .lt
                    case "<=": .le
                    case ">": .gt
                    case ">=": .ge
                    default: nil
                    }
                return kind.map { Token(kind: $0, span: span(start, position), text: "", newlinesBefore: newlines) }
            }
        }
        // A run of other non-ASCII characters is reported once, naming each code point.
        var names: [String] = []
        while position < bytes.count, bytes[position] >= 0x80 {
            let next = scalar(at: position)
            if LookAlike.kind(of: next.scalar) != nil { break }
            let name = LookAlike.name(next.scalar)
            if !names.contains(name) { names.append(name) }
            position += next.length
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        let shown = names.count > 3 ? names.prefix(3).joined(separator: ", ") + ", …" : names.joined(separator: ", ")
        diagnostics.error(
            .nonASCIICharacter, "unexpected character `\(text)` (\(shown))", at: span(start, position),
            hint: "outside strings and comments rules are ASCII: names are letters, digits and `_`; "
                + "put other text in quotes")
        return nil
    }

    /// Digits with optional `_` separators and one optional fraction: `42`, `1_000`, `0.5`.
    /// A unit (`256 KiB`, `5m`) is a separate identifier token; the parser joins them.
    private mutating func lexNumber() -> Token {
        let start = position
        func digits() {
            while position < bytes.count,
                (bytes[position] >= UInt8(ascii: "0") && bytes[position] <= UInt8(ascii: "9"))
                    || bytes[position] == UInt8(ascii: "_")
            {
                position += 1
            }
        }
        digits()
        if position + 1 < bytes.count, bytes[position] == UInt8(ascii: "."),
            bytes[position + 1] >= UInt8(ascii: "0"), bytes[position + 1] <= UInt8(ascii: "9")
        {
            position += 1
            digits()
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if text.hasSuffix("_") || text.contains("__") || text.contains("_.") || text.contains("._") {
            diagnostics.error(
                .invalidNumber, "`\(text)` is not a number", at: span(start, position),
                hint: "`_` may only separate digits, as in `1_000`")
        }
        return Token(kind: .number, span: span(start, position), text: text, newlinesBefore: newlines)
    }

    /// A double-quoted string on one line, with escapes `\"`, `\\`, `\n`, `\t`, `\r`, `\u{…}`.
    ///
    /// A string opened with a look-alike of a quote (`“`, `‘`, `'`; already reported) is read as
    /// one too, up to a quote of the same family, so the rest of the line still parses.
    private mutating func lexString() -> Token {
        let start = position
        let opening = scalar(at: position)
        position += opening.length
        let family = LookAlike.quoteFamily(opening.scalar)
        var value: [UInt8] = []
        while true {
            guard position < bytes.count, bytes[position] != UInt8(ascii: "\n") else {
                var end = position
                if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                // `"reboot”` at the end of a line: the look-alike was meant to close the string.
                var last = end - 1
                while last > start, bytes[last] & 0xC0 == 0x80 { last -= 1 }
                let closing = scalar(at: last)
                if last > start, closing.scalar != "\"", LookAlike.kind(of: closing.scalar) == .doubleQuote,
                    last + closing.length == end, value.count >= closing.length
                {
                    reportLookAlike(closing.scalar, at: last, length: closing.length)
                    value.removeLast(closing.length)
                    position = end
                    return Token(
                        kind: .string, span: span(start, end), text: String(decoding: value, as: UTF8.self),
                        newlinesBefore: newlines)
                }
                let curly = String(decoding: value, as: UTF8.self).unicodeScalars.last {
                    LookAlike.kind(of: $0) == .doubleQuote
                }
                diagnostics.error(
                    .unterminatedString, "this string is not closed before the end of the line",
                    at: span(start, end),
                    hint: curly.map { "it holds \(LookAlike.name($0)), which does not close it: use `\"`" }
                        ?? "add a closing `\"`; strings cannot span lines")
                break
            }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                break
            }
            if opening.scalar != "\"", byte == UInt8(ascii: "'") || byte >= 0x80 {
                // A closing look-alike quote ends the string it opened (and is reported).
                let closing = scalar(at: position)
                if LookAlike.quoteFamily(closing.scalar) == family {
                    if closing.scalar != "'" { reportLookAlike(closing.scalar, at: position, length: closing.length) }
                    position += closing.length
                    break
                }
            }
            if byte != UInt8(ascii: "\\") {
                value.append(byte)
                position += 1
                continue
            }
            let escapeStart = position
            position += 1
            guard position < bytes.count else { continue }
            let escaped = bytes[position]
            position += 1
            switch escaped {
            case UInt8(ascii: "\""): value.append(escaped)
            case UInt8(ascii: "\\"): value.append(escaped)
            case UInt8(ascii: "n"): value.append(UInt8(ascii: "\n"))
            case UInt8(ascii: "t"): value.append(UInt8(ascii: "\t"))
            case UInt8(ascii: "r"): value.append(UInt8(ascii: "\r"))
            case UInt8(ascii: "u"):
                if let scalar = lexUnicodeEscape() {
                    value += Array(String(Character(scalar)).utf8)
                } else {
                    diagnostics.error(
                        .invalidEscape, "invalid unicode escape", at: span(escapeStart, position),
                        hint: "write a code point in hex, as in `\\u{e9}`")
                }
            case UInt8(ascii: "\n"):
                position -= 1
                diagnostics.error(
                    .invalidEscape, "invalid escape `\\` at the end of a line", at: span(escapeStart, position))
            default:
                // Kept as written, so that a pattern such as "config\..*" reaches the checker,
                // which explains it as a regular expression (docs/rules.md#diagnostics).
                if Glob.regexEscapes.contains(escaped) { value += [UInt8(ascii: "\\"), escaped] }
                // Step over a whole multi-byte character so the message shows it intact.
                while position < bytes.count, bytes[position] & 0xC0 == 0x80 { position += 1 }
                let shown = String(decoding: bytes[escapeStart..<position], as: UTF8.self)
                diagnostics.error(
                    .invalidEscape, "invalid escape `\(shown)`", at: span(escapeStart, position),
                    hint: "the escapes are `\\\"`, `\\\\`, `\\n`, `\\t`, `\\r` and `\\u{…}`")
            }
        }
        return Token(
            kind: .string, span: span(start, position), text: String(decoding: value, as: UTF8.self),
            newlinesBefore: newlines)
    }

    /// `{hex}` after `\u`; nil (with the position past what was read) if malformed.
    private mutating func lexUnicodeEscape() -> Unicode.Scalar? {
        guard position < bytes.count, bytes[position] == UInt8(ascii: "{") else { return nil }
        position += 1
        var code: UInt32 = 0
        var count = 0
        while position < bytes.count, let digit = hexValue(bytes[position]) {
            if count < 8 { code = code &* 16 &+ UInt32(digit) }
            count += 1
            position += 1
        }
        guard position < bytes.count, bytes[position] == UInt8(ascii: "}") else { return nil }
        position += 1
        guard count >= 1, count <= 6 else { return nil }
        return Unicode.Scalar(code)
    }

    private func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Non-ASCII characters that look like ASCII ones — what word processors, chat apps and web
/// pages put into pasted text — and what to write instead (docs/rules.md#diagnostics).
enum LookAlike: Equatable {
    case doubleQuote
    /// `'` or a look-alike of it: strings take double quotes.
    case singleQuote
    case blank
    case invisible
    /// An ASCII letter, digit or `_`.
    case letter(UInt8)
    /// An ASCII operator or punctuation mark, such as `-` or `<=`.
    case punctuation(String)

    enum QuoteFamily { case double, single }

    /// Homoglyphs of ASCII letters among Cyrillic and Greek letters.
    private static let letters: [UInt32: Character] = [
        0x0430: "a", 0x0435: "e", 0x043E: "o", 0x0440: "p", 0x0441: "c", 0x0443: "y", 0x0445: "x", 0x0455: "s",
        0x0456: "i", 0x0458: "j", 0x0410: "A", 0x0412: "B", 0x0415: "E", 0x041A: "K", 0x041C: "M", 0x041D: "H",
        0x041E: "O", 0x0420: "P", 0x0421: "C", 0x0422: "T", 0x0425: "X", 0x03BF: "o", 0x03B1: "a", 0x0391: "A",
        0x0392: "B", 0x0395: "E", 0x0397: "H", 0x0399: "I", 0x039A: "K", 0x039C: "M", 0x039D: "N", 0x039F: "O",
        0x03A1: "P", 0x03A4: "T", 0x03A7: "X", 0x03A5: "Y", 0x0131: "i",
    ]

    static func kind(of scalar: Unicode.Scalar) -> LookAlike? {
        let value = scalar.value
        switch value {
        case 0x27: return .singleQuote
        case 0x201C, 0x201D, 0x201E, 0x201F, 0x2033, 0x00AB, 0x00BB, 0xFF02: return .doubleQuote
        case 0x2018, 0x2019, 0x201A, 0x201B, 0x2032, 0x00B4, 0xFF07: return .singleQuote
        case 0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2015, 0x2212, 0xFE58, 0xFE63: return .punctuation("-")
        case 0x2264: return .punctuation("<=")
        case 0x2265: return .punctuation(">=")
        case 0x2260: return .punctuation("!=")
        case 0x2024: return .punctuation(".")
        case 0x2236: return .punctuation(":")
        case 0x00A0, 0x1680, 0x2000...0x200A, 0x202F, 0x205F, 0x3000, 0x2028, 0x2029, 0x0085: return .blank
        case 0x200B...0x200F, 0x202A...0x202E, 0x2060...0x2064, 0x2066...0x2069, 0xFEFF, 0x00AD, 0x180E:
            return .invisible
        case 0xFF01...0xFF5E:
            let ascii = UInt8(value - 0xFEE0)
            if ascii == UInt8(ascii: "_") || (ascii >= 0x30 && ascii <= 0x39)
                || (ascii | 0x20 >= 0x61 && ascii | 0x20 <= 0x7A)
            {
                return .letter(ascii)
            }
            return .punctuation(String(UnicodeScalar(ascii)))
        default:
            return letters[value].map { .letter($0.asciiValue!) }
        }
    }

    /// Which quotes can close a string this one opened; nil if it is not a quote.
    static func quoteFamily(_ scalar: Unicode.Scalar) -> QuoteFamily? {
        if scalar == "\"" { return .double }
        switch kind(of: scalar) {
        case .doubleQuote?: return .double
        case .singleQuote?: return .single
        default: return nil
        }
    }

    /// `U+201C LEFT DOUBLE QUOTATION MARK`.
    static func name(_ scalar: Unicode.Scalar) -> String {
        var hex = String(scalar.value, radix: 16, uppercase: true)
        if hex.count < 4 { hex = String(repeating: "0", count: 4 - hex.count) + hex }
        let controls: [UInt32: String] = [
            0x00: "NULL", 0x09: "CHARACTER TABULATION", 0x0A: "LINE FEED", 0x0D: "CARRIAGE RETURN", 0x1B: "ESCAPE",
            0x7F: "DELETE",
        ]
        let name = scalar.properties.name ?? scalar.properties.nameAlias ?? controls[scalar.value]
        return "U+\(hex)" + (name.map { " " + $0 } ?? "")
    }

    /// The ASCII it stands for (`"` for every quote).
    var ascii: String {
        switch self {
        case .doubleQuote, .singleQuote: "\""
        case .blank: " "
        case .invisible: ""
        case .letter(let ascii): String(UnicodeScalar(ascii))
        case .punctuation(let ascii): ascii
        }
    }

    /// What to write instead, after the character's name.
    var advice: String {
        switch self {
        case .doubleQuote: "use `\"`"
        case .singleQuote: "use `\"`"
        case .blank: "use a plain space"
        case .invisible: "delete it"
        case .letter(let ascii): "use `\(String(UnicodeScalar(ascii)))`"
        case .punctuation(let ascii): "use `\(ascii)`"
        }
    }

    var hint: String {
        switch self {
        case .doubleQuote: "editors and chat apps turn `\"` into curly quotes; rules are plain ASCII text"
        case .singleQuote: "strings are written in double quotes, as in \"reboot\""
        case .blank: "it looks like a space, but only ASCII spaces and tabs separate words"
        case .invisible: "it is invisible; pasted text often carries it"
        case .letter: "it looks like an ASCII letter, but names are written in ASCII"
        case .punctuation(let ascii):
            "only the ASCII `\(ascii)` is understood; word processors and web pages put look-alikes into pasted text"
        }
    }
}
