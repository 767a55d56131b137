/// The four kinds of string. The input is UTF-8 already (checked, or a Swift `String`), so
/// bytes are copied as they are; only escapes, newlines and control characters need care.
extension Parser {
    /// `"basic \t string"`: one line, with escapes.
    mutating func parseBasicString() throws(TOMLError) -> String {
        let open = index
        index += 1
        var text: [UInt8] = []
        while true {
            guard let byte = peek() else { throw unterminated("string", opened: open, closer: "\"") }
            switch byte {
            case ASCII.quote:
                index += 1
                return String(decoding: text, as: UTF8.self)
            case ASCII.backslash:
                try parseEscape(into: &text)
            case ASCII.lineFeed, ASCII.carriageReturn:
                let found = describe(at: index)
                throw error(
                    "expected '\"' to close the string, found \(found) (\"\"\" starts a multi-line string)", at: index)
            default:
                try checkNotControl(byte, literal: false)
                text.append(byte)
                index += 1
            }
        }
    }

    /// `"""multi-line basic"""`: escapes, newlines, and a backslash at the end of a line that
    /// trims the newline and the whitespace after it.
    mutating func parseMultilineBasicString() throws(TOMLError) -> String {
        let open = index
        index += 3
        try skipFirstNewline()
        var text: [UInt8] = []
        while true {
            guard let byte = peek() else { throw unterminated("multi-line string", opened: open, closer: "\"\"\"") }
            switch byte {
            case ASCII.quote:
                if try closeMultiline(ASCII.quote, into: &text) { return String(decoding: text, as: UTF8.self) }
            case ASCII.backslash:
                var after = index + 1
                while after < bytes.count, bytes[after] == ASCII.space || bytes[after] == ASCII.tab { after += 1 }
                if after < bytes.count, bytes[after] == ASCII.lineFeed || bytes[after] == ASCII.carriageReturn {
                    // A line-ending backslash: drop it, the newlines and the whitespace that follow.
                    index = after
                    while try skipNewline() { skipWhitespace() }
                } else {
                    try parseEscape(into: &text)
                }
            default:
                try appendMultilineByte(byte, literal: false, to: &text)
            }
        }
    }

    /// `'literal string'`: one line, no escapes.
    mutating func parseLiteralString() throws(TOMLError) -> String {
        let open = index
        index += 1
        let start = index
        while true {
            guard let byte = peek() else { throw unterminated("literal string", opened: open, closer: "'") }
            switch byte {
            case ASCII.apostrophe:
                index += 1
                return String(decoding: bytes[start..<(index - 1)], as: UTF8.self)
            case ASCII.lineFeed, ASCII.carriageReturn:
                throw error(
                    "expected \"'\" to close the literal string, found \(describe(at: index)) "
                        + "(''' starts a multi-line literal string)", at: index)
            default:
                try checkNotControl(byte, literal: true)
                index += 1
            }
        }
    }

    /// `'''multi-line literal'''`: newlines, no escapes.
    mutating func parseMultilineLiteralString() throws(TOMLError) -> String {
        let open = index
        index += 3
        try skipFirstNewline()
        var text: [UInt8] = []
        while true {
            guard let byte = peek() else {
                throw unterminated("multi-line literal string", opened: open, closer: "'''")
            }
            if byte == ASCII.apostrophe {
                if try closeMultiline(ASCII.apostrophe, into: &text) { return String(decoding: text, as: UTF8.self) }
            } else {
                try appendMultilineByte(byte, literal: true, to: &text)
            }
        }
    }

    /// A newline right after the opening `"""` or `'''` is not part of the string.
    private mutating func skipFirstNewline() throws(TOMLError) {
        _ = try skipNewline()
    }

    /// At a run of quotes in a multi-line string: one or two are text; three close the string,
    /// and up to two more before them are text too (`""""a""""` is `"a"`). Returns whether
    /// the string was closed.
    private mutating func closeMultiline(_ quote: UInt8, into text: inout [UInt8]) throws(TOMLError) -> Bool {
        var count = 0
        while peek(count) == quote { count += 1 }
        if count > 5 {
            throw error("too many quotes: at most two may come right before the closing three", at: index + 5)
        }
        let inText = count < 3 ? count : count - 3
        text.append(contentsOf: repeatElement(quote, count: inText))
        index += count
        return count >= 3
    }

    /// A byte of a multi-line string's text: CR LF is kept as a line feed.
    private mutating func appendMultilineByte(
        _ byte: UInt8, literal: Bool, to text: inout [UInt8]
    ) throws(TOMLError) {
        if byte == ASCII.lineFeed || byte == ASCII.carriageReturn {
            _ = try skipNewline()
            text.append(ASCII.lineFeed)
            return
        }
        try checkNotControl(byte, literal: literal)
        text.append(byte)
        index += 1
    }

    /// `\b \t \n \f \r \" \\ \uXXXX \UXXXXXXXX`, appended as UTF-8.
    private mutating func parseEscape(into text: inout [UInt8]) throws(TOMLError) {
        let start = index
        index += 1
        guard let letter = peek() else { throw error("expected an escape after '\\', found end of input", at: index) }
        index += 1
        switch letter {
        case UInt8(ascii: "b"): text.append(0x08)
        case UInt8(ascii: "t"): text.append(ASCII.tab)
        case UInt8(ascii: "n"): text.append(ASCII.lineFeed)
        case UInt8(ascii: "f"): text.append(0x0C)
        case UInt8(ascii: "r"): text.append(ASCII.carriageReturn)
        case ASCII.quote: text.append(ASCII.quote)
        case ASCII.backslash: text.append(ASCII.backslash)
        case UInt8(ascii: "u"): try parseUnicodeEscape(digits: 4, start: start, into: &text)
        case UInt8(ascii: "U"): try parseUnicodeEscape(digits: 8, start: start, into: &text)
        default:
            let found =
                letter > 0x20 && letter < 0x7F
                ? "'\\\(Unicode.Scalar(letter))'" : "'\\' followed by \(describe(at: index - 1))"
            throw error(
                "invalid escape \(found); the escapes are \\b \\t \\n \\f \\r \\\" \\\\ \\uXXXX and \\UXXXXXXXX",
                at: start)
        }
    }

    private mutating func parseUnicodeEscape(digits: Int, start: Int, into text: inout [UInt8]) throws(TOMLError) {
        let letter = digits == 4 ? "u" : "U"
        var value: UInt32 = 0
        for _ in 0..<digits {
            guard let byte = peek(), let digit = Self.hexValue(byte) else {
                throw error(
                    "\\\(letter) needs \(digits) hexadecimal digits, found \(describe(at: index))", at: index)
            }
            value = value << 4 | digit
            index += 1
        }
        guard let scalar = Unicode.Scalar(value) else {
            let reason = value <= 0xDFFF ? "a surrogate" : "past U+10FFFF"
            throw error(
                "\\\(letter) escape \(Self.hex(value, digits: 4)) is \(reason), not a Unicode scalar value", at: start)
        }
        UTF8.encode(scalar) { text.append($0) }
    }

    static func hexValue(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    /// Control characters other than tab must be escaped, which literal strings cannot do.
    private func checkNotControl(_ byte: UInt8, literal: Bool) throws(TOMLError) {
        guard ASCII.isControl(byte) else { return }
        let escape = "\\u" + String(Self.hex(UInt32(byte), digits: 4).dropFirst(2))
        let hint = literal ? "a basic string can write it as \(escape)" : "write it as \(escape)"
        throw error(
            "\(describe(at: index)) is not allowed in \(literal ? "a literal" : "a") string; \(hint)", at: index)
    }

    private func unterminated(_ what: String, opened open: Int, closer: String) -> TOMLError {
        let place = position(of: open)
        return error(
            "unterminated \(what) (opened at line \(place.line), column \(place.column)): expected \(closer), "
                + "found end of input", at: index)
    }
}
