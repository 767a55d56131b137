import StrictJSON

/// The bytes the grammar names.
enum ASCII {
    static let tab: UInt8 = 0x09
    static let lineFeed: UInt8 = 0x0A
    static let carriageReturn: UInt8 = 0x0D
    static let space: UInt8 = 0x20
    static let quote = UInt8(ascii: "\"")
    static let apostrophe = UInt8(ascii: "'")
    static let hash = UInt8(ascii: "#")
    static let comma = UInt8(ascii: ",")
    static let dot = UInt8(ascii: ".")
    static let equals = UInt8(ascii: "=")
    static let backslash = UInt8(ascii: "\\")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")
    static let openBrace = UInt8(ascii: "{")
    static let closeBrace = UInt8(ascii: "}")
    static let delete: UInt8 = 0x7F

    /// A-Z, a-z, 0-9, `_` and `-`: what a bare key is made of.
    static func isBareKey(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// The control characters TOML allows in no string and no comment (all but tab).
    static func isControl(_ byte: UInt8) -> Bool { (byte < 0x20 && byte != tab) || byte == delete }
}

/// One simple key of a dotted key, and where it starts.
struct KeySegment {
    var name: String
    var offset: Int
    var position: TOMLPosition
}

/// Reads a document front to back. The cursor, `index`, only moves forward; every method
/// either consumes what it names or throws.
struct Parser {
    let bytes: [UInt8]
    var index = 0
    /// The offset of the first byte of each line, for positions.
    private let lineStarts: [Int]
    /// The last position worked out. Keys are placed in the order they are read, so counting
    /// columns on from it, not from the start of the line, keeps long lines linear.
    private let lastPosition = LastPosition()

    private final class LastPosition {
        var offset = 0
        var line = 0
        var column = 1
    }

    private init(_ bytes: [UInt8]) {
        self.bytes = bytes
        var starts = [0]
        for (offset, byte) in bytes.enumerated() where byte == ASCII.lineFeed { starts.append(offset + 1) }
        lineStarts = starts
    }

    static func parse(_ bytes: [UInt8], validatingUTF8: Bool) throws(TOMLError) -> TOMLTable {
        var parser = Parser(bytes)
        if validatingUTF8 { try parser.validateUTF8() }
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { parser.index = 3 }
        return try parser.parseDocument()
    }

    // MARK: The document

    /// Lines: blank, a comment, `key = value`, `[table]` or `[[array.of.tables]]`; each may end
    /// with a comment.
    private mutating func parseDocument() throws(TOMLError) -> TOMLTable {
        let root = Node(origin: .header, position: nil, path: [])
        var section = root
        while true {
            skipWhitespace()
            try skipComment()
            if try skipNewline() { continue }
            guard let byte = peek() else { break }
            if byte == ASCII.openBracket {
                section = try parseHeader(root: root)
                try expectLineEnd(after: "the table header")
            } else {
                let path = try parseKeyValue(in: section)
                try expectLineEnd(after: "the value of key \(display(path))")
            }
        }
        return root.table(inline: false)
    }

    /// `[a.b]` or `[[a.b]]`; returns the table the following key/value pairs go into.
    private mutating func parseHeader(root: Node) throws(TOMLError) -> Node {
        let start = index
        let header = position(of: start)
        let isArray = peek(1) == ASCII.openBracket
        index += isArray ? 2 : 1
        let path = try parseKey()
        if isArray {
            guard peek() == ASCII.closeBracket, peek(1) == ASCII.closeBracket else {
                let found = peek() == ASCII.closeBracket ? index + 1 : index
                let header = "[[\(spelling(path))]]"
                throw error(
                    "expected ']]' to close the array-of-tables header \(header), found \(describe(at: found))",
                    at: found)
            }
            index += 2
            return try appendTable(path, root: root, header: header, at: start)
        }
        guard peek() == ASCII.closeBracket else {
            throw error(
                "expected ']' to close the table header [\(spelling(path))], found \(describe(at: index))", at: index)
        }
        index += 1
        return try defineTable(path, root: root, header: header, at: start)
    }

    /// A key: simple keys (bare, "basic" or 'literal') joined by dots, with whitespace allowed
    /// around each. Skips the whitespace before and after it.
    mutating func parseKey() throws(TOMLError) -> [KeySegment] {
        var path: [KeySegment] = []
        while true {
            skipWhitespace()
            let start = index
            let name: String
            switch peek() {
            case ASCII.quote?:
                if peek(1) == ASCII.quote, peek(2) == ASCII.quote {
                    throw error("a multi-line string cannot be a key", at: start)
                }
                name = try parseBasicString()
            case ASCII.apostrophe?:
                if peek(1) == ASCII.apostrophe, peek(2) == ASCII.apostrophe {
                    throw error("a multi-line string cannot be a key", at: start)
                }
                name = try parseLiteralString()
            case let byte? where ASCII.isBareKey(byte):
                while let byte = peek(), ASCII.isBareKey(byte) { index += 1 }
                name = String(decoding: bytes[start..<index], as: UTF8.self)
            default:
                let after = path.isEmpty ? "" : " after '.'"
                let found = describe(at: start)
                throw error(
                    "expected a key\(after) (letters, digits, '_', '-' or a quoted string), found \(found)", at: start)
            }
            path.append(KeySegment(name: name, offset: start, position: position(of: start)))
            skipWhitespace()
            guard peek() == ASCII.dot else { return path }
            index += 1
        }
    }

    /// `key = value`, the value set in `table` (a section's table or an inline table being
    /// read). Returns the key.
    @discardableResult
    mutating func parseKeyValue(in table: Node) throws(TOMLError) -> [KeySegment] {
        let path = try parseKey()
        guard peek() == ASCII.equals else {
            throw error("expected '=' after key \(display(path)), found \(describe(at: index))", at: index)
        }
        index += 1
        skipWhitespace()
        if isAtLineEnd {
            throw error("expected a value after '=' for key \(display(path)), found \(describe(at: index))", at: index)
        }
        let value = try parseValue(depth: table.depth + path.count)
        try assign(value, to: path, in: table)
        return path
    }

    // MARK: Whitespace, comments, newlines

    func peek(_ ahead: Int = 0) -> UInt8? {
        let offset = index + ahead
        return offset < bytes.count ? bytes[offset] : nil
    }

    /// At a newline, a comment or the end of the input.
    var isAtLineEnd: Bool {
        guard let byte = peek() else { return true }
        return byte == ASCII.lineFeed || byte == ASCII.carriageReturn || byte == ASCII.hash
    }

    mutating func skipWhitespace() {
        while let byte = peek(), byte == ASCII.space || byte == ASCII.tab { index += 1 }
    }

    /// A comment, if one starts here, up to (not including) the end of its line.
    mutating func skipComment() throws(TOMLError) {
        guard peek() == ASCII.hash else { return }
        index += 1
        while let byte = peek(), byte != ASCII.lineFeed {
            if byte == ASCII.carriageReturn, peek(1) == ASCII.lineFeed { return }
            if byte == ASCII.carriageReturn || ASCII.isControl(byte) {
                throw error("\(describe(at: index)) is not allowed in a comment", at: index)
            }
            index += 1
        }
    }

    /// A line feed or CR LF, if one is here; a carriage return alone is an error.
    mutating func skipNewline() throws(TOMLError) -> Bool {
        switch peek() {
        case ASCII.lineFeed?:
            index += 1
            return true
        case ASCII.carriageReturn?:
            guard peek(1) == ASCII.lineFeed else {
                throw error("a carriage return must be followed by a line feed", at: index)
            }
            index += 2
            return true
        default:
            return false
        }
    }

    /// Whitespace, comments and newlines, as arrays allow between their elements.
    mutating func skipBlankLines() throws(TOMLError) {
        repeat {
            skipWhitespace()
            try skipComment()
        } while try skipNewline()
    }

    /// The rest of a line after a header or a key/value pair: whitespace, perhaps a comment.
    private mutating func expectLineEnd(after what: String) throws(TOMLError) {
        skipWhitespace()
        try skipComment()
        if peek() == nil { return }
        if try skipNewline() { return }
        throw error("expected a newline or a comment after \(what), found \(describe(at: index))", at: index)
    }

    // MARK: Positions and errors

    /// The line and column of `offset`; columns count Unicode scalars.
    func position(of offset: Int) -> TOMLPosition {
        let offset = min(max(offset, 0), bytes.count)
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if lineStarts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        var (from, column) = (lineStarts[low], 1)
        let last = lastPosition
        if last.line == low, last.offset >= from, last.offset <= offset { (from, column) = (last.offset, last.column) }
        for byte in bytes[from..<offset] where byte & 0xC0 != 0x80 { column += 1 }
        (last.offset, last.line, last.column) = (offset, low, column)
        return TOMLPosition(line: low + 1, column: column)
    }

    func error(_ message: String, at offset: Int) -> TOMLError {
        let place = position(of: offset)
        return TOMLError(line: place.line, column: place.column, message: message)
    }

    /// What is at `offset`, for "found …" in messages.
    func describe(at offset: Int) -> String {
        guard offset < bytes.count else { return "end of input" }
        let byte = bytes[offset]
        switch byte {
        case ASCII.lineFeed: return "end of line"
        case ASCII.carriageReturn:
            return offset + 1 < bytes.count && bytes[offset + 1] == ASCII.lineFeed ? "end of line" : "a carriage return"
        case ASCII.tab: return "a tab"
        case ASCII.space: return "a space"
        case ..<0x20, ASCII.delete: return "control character \(Self.hex(UInt32(byte), digits: 4))"
        case ..<0x80: return "'\(Character(Unicode.Scalar(byte)))'"
        default:
            let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2
            let scalarBytes = bytes[offset..<min(offset + length, bytes.count)]
            return "'\(String(decoding: scalarBytes, as: UTF8.self))'"
        }
    }

    /// `U+001F`, `U+1F600`.
    static func hex(_ value: UInt32, digits: Int) -> String {
        let text = String(value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    /// A key as TOML writes it: `port`, `a.b`, `site."my key"`.
    func spelling(_ path: some Collection<KeySegment>) -> String {
        spelling(names: path.map(\.name))
    }

    func spelling(names: [String]) -> String {
        names.map { isBare($0) ? $0 : JSONValue.string($0).description }.joined(separator: ".")
    }

    /// A key in a message: `"port"`, `"a.b"`; keys that need quotes in TOML as TOML writes them
    /// (`site."my key"`).
    func display(_ path: some Collection<KeySegment>) -> String {
        path.allSatisfy { isBare($0.name) } ? "\"\(spelling(path))\"" : spelling(path)
    }

    private func isBare(_ name: String) -> Bool { !name.isEmpty && name.utf8.allSatisfy(ASCII.isBareKey) }

    // MARK: UTF-8

    /// Checks that the input is UTF-8: no stray continuation bytes, overlong forms, surrogates
    /// or scalars past U+10FFFF.
    private func validateUTF8() throws(TOMLError) {
        var offset = 0
        while offset < bytes.count {
            let lead = bytes[offset]
            if lead < 0x80 {
                offset += 1
                continue
            }
            let length: Int
            var scalar: UInt32
            switch lead {
            case 0xC2...0xDF: (length, scalar) = (2, UInt32(lead & 0x1F))
            case 0xE0...0xEF: (length, scalar) = (3, UInt32(lead & 0x0F))
            case 0xF0...0xF4: (length, scalar) = (4, UInt32(lead & 0x07))
            default: throw error("invalid UTF-8: byte 0x\(String(lead, radix: 16, uppercase: true))", at: offset)
            }
            guard offset + length <= bytes.count else { throw error("invalid UTF-8: truncated sequence", at: offset) }
            for continuation in bytes[(offset + 1)..<(offset + length)] {
                guard continuation & 0xC0 == 0x80 else {
                    throw error("invalid UTF-8: a sequence is cut short", at: offset)
                }
                scalar = scalar << 6 | UInt32(continuation & 0x3F)
            }
            let valid =
                switch length {
                case 3: scalar >= 0x800 && !(0xD800...0xDFFF).contains(scalar)
                case 4: (0x10000...0x10FFFF).contains(scalar)
                default: true
                }
            guard valid else {
                throw error("invalid UTF-8: overlong form, surrogate or value past U+10FFFF", at: offset)
            }
            offset += length
        }
    }
}
