/// Why a text is not JSON gatehouse accepts, and where: the byte offset from the start.
///
/// The message names the rule that was broken and never quotes the input, which may hold a
/// token or a key, so an error is safe to log and to return to whoever sent the document.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        /// The text ends before the value does (or is empty).
        case unexpectedEnd
        /// A byte that cannot stand here; `expected` says what could ("a value", "`,` or `}`").
        case unexpectedCharacter(expected: String)
        /// A number that breaks RFC 8259's grammar: a leading zero, `1.`, `.5`, `+1`, `1e`.
        case invalidNumber
        /// A number whose magnitude is beyond `Double`'s range (`1e400`): no reader could use it.
        case numberOutOfRange
        /// A backslash escape that RFC 8259 does not define (`\x`, `\u12`).
        case invalidEscape
        /// A `\uD800`–`\uDFFF` escape that is not half of a surrogate pair.
        case loneSurrogate
        /// A byte below 0x20 inside a string, where it must be escaped.
        case controlCharacter
        /// A string's bytes are not valid UTF-8 (RFC 8259 §8.1).
        case invalidUTF8
        /// An object names the same member twice, after escapes are decoded (`"a"` and `"\u0061"`)
        /// and as Swift compares strings (canonical equivalence: `"é"` and `"e\u0301"`). Readers
        /// disagree on which one counts, so neither does.
        case duplicateMemberName
        /// Arrays and objects nested deeper than `limit`.
        case tooDeep(limit: Int)
        /// Something other than whitespace follows the value.
        case trailingData
    }

    /// Where the problem is: the offset of the offending byte, or of the start of the string,
    /// escape, number, member name or bracket it belongs to.
    public var offset: Int
    public var reason: Reason

    public init(offset: Int, reason: Reason) {
        self.offset = offset
        self.reason = reason
    }

    /// What is wrong, without the offset.
    public var message: String {
        switch reason {
        case .unexpectedEnd: "the text ends before the value does"
        case .unexpectedCharacter(let expected): "expected \(expected)"
        case .invalidNumber: "not a JSON number (no leading zeros, + signs, or bare . or e)"
        case .numberOutOfRange: "a number beyond the range of a 64-bit floating point number"
        case .invalidEscape: "an invalid escape in a string"
        case .loneSurrogate: "a \\u escape of half a surrogate pair without the other half"
        case .controlCharacter: "an unescaped control character in a string"
        case .invalidUTF8: "a string that is not valid UTF-8"
        case .duplicateMemberName: "a member name that the object already has"
        case .tooDeep(let limit): "arrays and objects nested deeper than \(limit)"
        case .trailingData: "more text after the value"
        }
    }

    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

extension JSONValue {
    /// Parses exactly one JSON value, with optional whitespace around it.
    ///
    /// The grammar is RFC 8259's, strictly: no comments, no trailing commas, no single quotes,
    /// no leading zeros, no `NaN`; and beyond it, every string is valid UTF-8 without lone
    /// surrogate escapes, no object repeats a member name, no number overflows a `Double`, and
    /// arrays and objects nest at most `maximumDepth` deep (so no input can exhaust the stack).
    public init(parsing bytes: some Collection<UInt8>, maximumDepth: Int = defaultMaximumDepth)
        throws(JSONParseError)
    {
        var parser = JSONParser(Array(bytes), maximumDepth: maximumDepth)
        self = try parser.parseDocument()
    }

    /// Parses the UTF-8 of `text`, as ``init(parsing:maximumDepth:)`` does bytes.
    public init(parsing text: String, maximumDepth: Int = defaultMaximumDepth) throws(JSONParseError) {
        try self.init(parsing: text.utf8, maximumDepth: maximumDepth)
    }
}

/// A recursive-descent parser over bytes; recursion is bounded by `maximumDepth`.
struct JSONParser {
    private let bytes: [UInt8]
    private let maximumDepth: Int
    private var index = 0

    init(_ bytes: [UInt8], maximumDepth: Int) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
    }

    var isAtEnd: Bool { index == bytes.count }

    private func fail(_ reason: JSONParseError.Reason, at offset: Int? = nil) -> JSONParseError {
        JSONParseError(offset: offset ?? index, reason: reason)
    }

    /// The byte at the current index, or nil at the end.
    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    /// A failure at the current index: the end of the text, or a byte other than `expected`.
    private func unexpected(_ expected: String) -> JSONParseError {
        fail(index < bytes.count ? .unexpectedCharacter(expected: expected) : .unexpectedEnd)
    }

    mutating func parseDocument() throws(JSONParseError) -> JSONValue {
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard isAtEnd else { throw fail(.trailingData) }
        return value
    }

    private mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    /// `depth` is the nesting of the value's container (0 at the top).
    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard let byte = current else { throw fail(.unexpectedEnd) }
        switch byte {
        case UInt8(ascii: "{"): return .object(try parseObject(depth: depth + 1))
        case UInt8(ascii: "["): return .array(try parseArray(depth: depth + 1))
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        case UInt8(ascii: "t"):
            try parseWord("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try parseWord("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try parseWord("null")
            return .null
        default: throw unexpected("a value")
        }
    }

    private mutating func parseWord(_ word: StaticString) throws(JSONParseError) {
        for offset in 0..<word.utf8CodeUnitCount {
            guard current == word.utf8Start[offset] else { throw unexpected("`\(word)`") }
            index += 1
        }
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONObject {
        var object = JSONObject()
        guard try !openContainer(depth: depth, closing: UInt8(ascii: "}")) else { return object }
        repeat {
            guard current == UInt8(ascii: "\"") else { throw unexpected("a member name") }
            let nameOffset = index
            let name = try parseString()
            skipWhitespace()
            guard current == UInt8(ascii: ":") else { throw unexpected("`:`") }
            index += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            guard object.insertNew(name, value) else { throw fail(.duplicateMemberName, at: nameOffset) }
        } while try !closeOrContinue(closing: UInt8(ascii: "}"), expected: "`,` or `}`")
        return object
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> [JSONValue] {
        var elements: [JSONValue] = []
        guard try !openContainer(depth: depth, closing: UInt8(ascii: "]")) else { return elements }
        repeat {
            elements.append(try parseValue(depth: depth))
        } while try !closeOrContinue(closing: UInt8(ascii: "]"), expected: "`,` or `]`")
        return elements
    }

    /// Past the opening bracket of a container at `depth`: true when it closes at once (`{}`, `[]`).
    private mutating func openContainer(depth: Int, closing: UInt8) throws(JSONParseError) -> Bool {
        guard depth <= maximumDepth else { throw fail(.tooDeep(limit: maximumDepth)) }
        index += 1
        skipWhitespace()
        guard current == closing else { return false }
        index += 1
        return true
    }

    /// After a member or element: true past the closing bracket, false past a comma.
    private mutating func closeOrContinue(closing: UInt8, expected: String) throws(JSONParseError) -> Bool {
        skipWhitespace()
        switch current {
        case UInt8(ascii: ","):
            index += 1
            skipWhitespace()
            return false
        case closing:
            index += 1
            return true
        default: throw unexpected(expected)
        }
    }

    /// The number at the index: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, finite.
    mutating func parseNumber() throws(JSONParseError) -> JSONNumber {
        let start = index
        if current == UInt8(ascii: "-") { index += 1 }
        let integerStart = index
        switch current {
        case UInt8(ascii: "0"):
            index += 1
            if let byte = current, Self.isDigit(byte) { throw fail(.invalidNumber, at: start) }
        case let byte? where Self.isDigit(byte): skipDigits()
        case _: throw fail(index < bytes.count ? .invalidNumber : .unexpectedEnd, at: start)
        }
        let integerDigits = index - integerStart
        if current == UInt8(ascii: ".") {
            index += 1
            guard skipDigits() > 0 else { throw fail(.invalidNumber, at: start) }
        }
        var hasExponent = false
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            hasExponent = true
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard skipDigits() > 0 else { throw fail(.invalidNumber, at: start) }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        // Without an exponent, 308 integer digits stay below 10^308 < Double.greatestFiniteMagnitude.
        if hasExponent || integerDigits > 308 {
            guard let value = Double(text), value.isFinite else { throw fail(.numberOutOfRange, at: start) }
        }
        return JSONNumber(validated: text)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    @discardableResult
    private mutating func skipDigits() -> Int {
        let start = index
        while let byte = current, Self.isDigit(byte) { index += 1 }
        return index - start
    }

    /// The string at the index (its opening quote), escapes decoded.
    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1
        var runStart = index
        // Filled only once an escape is met; until then the string is a slice of the input.
        var decoded: [UInt8] = []
        var escaped = false
        while let byte = current {
            switch byte {
            case UInt8(ascii: "\""):
                try checkUTF8(runStart..<index)
                let end = index
                index += 1
                guard escaped else { return String(decoding: bytes[runStart..<end], as: UTF8.self) }
                decoded.append(contentsOf: bytes[runStart..<end])
                return String(decoding: decoded, as: UTF8.self)
            case UInt8(ascii: "\\"):
                try checkUTF8(runStart..<index)
                decoded.append(contentsOf: bytes[runStart..<index])
                escaped = true
                try parseEscape(into: &decoded)
                runStart = index
            case 0..<0x20:
                throw fail(.controlCharacter)
            default:
                index += 1
            }
        }
        throw fail(.unexpectedEnd)
    }

    /// Refuses bytes in `range` that are not UTF-8, naming the first bad one.
    private func checkUTF8(_ range: Range<Int>) throws(JSONParseError) {
        var offset = range.lowerBound
        while offset < range.upperBound, bytes[offset] < 0x80 { offset += 1 }
        guard offset < range.upperBound else { return }
        var iterator = bytes[offset..<range.upperBound].makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar): offset += scalar.count
            case .emptyInput: return
            case .error: throw fail(.invalidUTF8, at: offset)
            }
        }
    }

    /// The escape at the index (its backslash), appended to `output` as UTF-8.
    private mutating func parseEscape(into output: inout [UInt8]) throws(JSONParseError) {
        let start = index
        index += 1
        guard let byte = current else { throw fail(.unexpectedEnd) }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.append(byte)
        case UInt8(ascii: "b"): output.append(0x08)
        case UInt8(ascii: "f"): output.append(0x0C)
        case UInt8(ascii: "n"): output.append(0x0A)
        case UInt8(ascii: "r"): output.append(0x0D)
        case UInt8(ascii: "t"): output.append(0x09)
        case UInt8(ascii: "u"):
            var value = try parseHex4(escapeStart: start)
            if (0xD800..<0xDC00).contains(value) {
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                else { throw fail(.loneSurrogate, at: start) }
                index += 2
                let low = try parseHex4(escapeStart: start)
                guard (0xDC00..<0xE000).contains(low) else { throw fail(.loneSurrogate, at: start) }
                value = 0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)
            }
            // Nil only for a low surrogate standing alone.
            guard let scalar = Unicode.Scalar(value) else { throw fail(.loneSurrogate, at: start) }
            output.append(contentsOf: scalar.utf8)
        default:
            throw fail(.invalidEscape, at: start)
        }
    }

    /// Four hex digits after `\u`.
    private mutating func parseHex4(escapeStart: Int) throws(JSONParseError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = current else { throw fail(.unexpectedEnd) }
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw fail(.invalidEscape, at: escapeStart)
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }
}
