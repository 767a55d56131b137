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

    mutating func run() -> LexedFile {
        var tokens: [Token] = []
        var comments: [Comment] = []
        if bytes.count > maximumFileSize {
            diagnostics.error(
                .fileTooLarge, "the file is \(bytes.count) bytes; rule files may be at most \(maximumFileSize)",
                at: span(0, 0))
            return LexedFile(tokens: [Token(kind: .eof, span: span(0, 0), text: "", newlinesBefore: 0)], comments: [])
        }
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
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            return lexNumber()
        default:
            if isIdentifierStart(byte) { return lexIdentifier() }
            // Swallow a run of unexpected characters and report it once.
            while position < bytes.count, !isIdentifierStart(bytes[position]), !isKnownStart(bytes[position]) {
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
        byte < 0x80 && "()[]{},.:+-=<>!&|\"#0123456789 \t\r\n".utf8.contains(byte)
    }

    private mutating func lexIdentifier() -> Token {
        let start = position
        while position < bytes.count, isIdentifierContinue(bytes[position]) { position += 1 }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        let kind: TokenKind = Keyword(rawValue: text).map { .keyword($0) } ?? .identifier
        return Token(kind: kind, span: span(start, position), text: text, newlinesBefore: newlines)
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
    private mutating func lexString() -> Token {
        let start = position
        position += 1
        var value: [UInt8] = []
        while true {
            guard position < bytes.count, bytes[position] != UInt8(ascii: "\n") else {
                var end = position
                if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                diagnostics.error(
                    .unterminatedString, "this string is not closed before the end of the line",
                    at: span(start, end), hint: "add a closing `\"`; strings cannot span lines")
                break
            }
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                break
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
