/// The values rules see: JSON's, because tokens are JSON claims and device twins are JSON
/// documents. Durations and sizes are numbers at run time (seconds and bytes); the checker
/// keeps their units apart. A field that is not there is *missing*, which is not a value: the
/// evaluator carries it as `nil`, and a JSON `null` reads as missing too.
public enum Value: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case list([Value])
    case map([String: Value])

    /// The value at `key` if this is a map, else nil.
    public subscript(key: String) -> Value? {
        if case .map(let map) = self { return map[key] }
        return nil
    }

    /// A short name of the kind of value, for messages ("cannot compare a string with a number").
    var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .list: "list"
        case .map: "map"
        }
    }
}

extension Value: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: Value...) { self = .list(elements) }
    public init(nilLiteral: ()) { self = .null }
    public init(dictionaryLiteral elements: (String, Value)...) {
        self = .map(Dictionary(elements, uniquingKeysWith: { _, last in last }))
    }
}

extension Value: CustomStringConvertible {
    /// Compact JSON with sorted keys: what explanations and test output show.
    public var description: String {
        var out = ""
        write(to: &out)
        return out
    }

    /// The JSON text of this value (keys sorted, so the output is deterministic).
    public var json: String { description }

    func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += formatNumber(n)
        case .string(let s): writeJSONString(s, to: &out)
        case .list(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                item.write(to: &out)
            }
            out += "]"
        case .map(let map):
            out += "{"
            for (i, key) in map.keys.sorted().enumerated() {
                if i > 0 { out += ", " }
                writeJSONString(key, to: &out)
                out += ": "
                map[key]!.write(to: &out)
            }
            out += "}"
        }
    }
}

/// Integers print without a fraction; everything else in Swift's shortest round-trip form.
func formatNumber(_ n: Double) -> String {
    if n.isFinite, n == n.rounded(), abs(n) < 1e15 { return String(Int64(n)) }
    if n.isNaN { return "NaN" }
    return "\(n)"
}

func writeJSONString(_ s: String, to out: inout String) {
    out += "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    out += "\""
}

// MARK: JSON

/// Why a JSON text could not be read.
public struct JSONError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

extension Value {
    /// Parses JSON (RFC 8259). Nesting is limited to 128 levels so no input exhausts the stack.
    public init(json text: String) throws(JSONError) {
        var parser = JSONParser(bytes: Array(text.utf8))
        self = try parser.parseDocument()
    }
}

private struct JSONParser {
    let bytes: [UInt8]
    var position = 0
    var depth = 0

    mutating func parseDocument() throws(JSONError) -> Value {
        let value = try parseValue()
        skipWhitespace()
        guard position == bytes.count else { throw fail("unexpected text after the value") }
        return value
    }

    func fail(_ message: String) -> JSONError { JSONError(message: message, offset: position) }

    mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[position]) { position += 1 }
    }

    mutating func parseValue() throws(JSONError) -> Value {
        skipWhitespace()
        guard position < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[position] {
        case UInt8(ascii: "{"):
            depth += 1
            defer { depth -= 1 }
            guard depth <= 128 else { throw fail("nested too deeply") }
            position += 1
            var map: [String: Value] = [:]
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "}") {
                position += 1
                return .map(map)
            }
            while true {
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: "\"") else {
                    throw fail("expected a key")
                }
                let key = try parseString()
                skipWhitespace()
                guard position < bytes.count, bytes[position] == UInt8(ascii: ":") else { throw fail("expected `:`") }
                position += 1
                map[key] = try parseValue()
                skipWhitespace()
                guard position < bytes.count else { throw fail("unexpected end of input") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                    continue
                }
                guard bytes[position] == UInt8(ascii: "}") else { throw fail("expected `,` or `}`") }
                position += 1
                return .map(map)
            }
        case UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth <= 128 else { throw fail("nested too deeply") }
            position += 1
            var items: [Value] = []
            skipWhitespace()
            if position < bytes.count, bytes[position] == UInt8(ascii: "]") {
                position += 1
                return .list(items)
            }
            while true {
                items.append(try parseValue())
                skipWhitespace()
                guard position < bytes.count else { throw fail("unexpected end of input") }
                if bytes[position] == UInt8(ascii: ",") {
                    position += 1
                    continue
                }
                guard bytes[position] == UInt8(ascii: "]") else { throw fail("expected `,` or `]`") }
                position += 1
                return .list(items)
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        default:
            return try parseNumber()
        }
    }

    mutating func literal(_ word: String, _ value: Value) throws(JSONError) -> Value {
        let utf8 = Array(word.utf8)
        guard position + utf8.count <= bytes.count, Array(bytes[position..<position + utf8.count]) == utf8 else {
            throw fail("unexpected character")
        }
        position += utf8.count
        return value
    }

    mutating func parseNumber() throws(JSONError) -> Value {
        let start = position
        func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
        if position < bytes.count, bytes[position] == UInt8(ascii: "-") { position += 1 }
        guard position < bytes.count, isDigit(bytes[position]) else { throw fail("unexpected character") }
        while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            guard position < bytes.count, isDigit(bytes[position]) else { throw fail("expected a digit") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                position += 1
            }
            guard position < bytes.count, isDigit(bytes[position]) else { throw fail("expected a digit") }
            while position < bytes.count, isDigit(bytes[position]) { position += 1 }
        }
        guard let number = Double(String(decoding: bytes[start..<position], as: UTF8.self)) else {
            throw fail("invalid number")
        }
        return .number(number)
    }

    mutating func parseString() throws(JSONError) -> String {
        position += 1
        var out: [UInt8] = []
        while true {
            guard position < bytes.count else { throw fail("unterminated string") }
            let byte = bytes[position]
            position += 1
            if byte == UInt8(ascii: "\"") { break }
            if byte < 0x20 { throw fail("control character in a string") }
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                continue
            }
            guard position < bytes.count else { throw fail("unterminated string") }
            let escaped = bytes[position]
            position += 1
            switch escaped {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800..<0xDC00).contains(code), position + 1 < bytes.count, bytes[position] == UInt8(ascii: "\\"),
                    bytes[position + 1] == UInt8(ascii: "u")
                {
                    position += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid surrogate pair") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                }
                guard let scalar = Unicode.Scalar(code) else { throw fail("invalid code point") }
                out += Array(String(Character(scalar)).utf8)
            default:
                throw fail("invalid escape")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    mutating func hex4() throws(JSONError) -> UInt32 {
        guard position + 4 <= bytes.count else { throw fail("expected four hex digits") }
        var code: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[position]
            let digit: UInt32
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(b - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(b - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(b - UInt8(ascii: "A") + 10)
            default: throw fail("expected a hex digit")
            }
            code = code * 16 + digit
            position += 1
        }
        return code
    }
}

// MARK: Time

extension Value {
    /// The `now` input for a moment, computed without a calendar library so it is the same on
    /// every platform: `{unix, hour, minute, second, weekday ("mon"…"sun"), date ("2025-11-24")}`.
    /// `utcOffset` (seconds) shifts into the site's local time; the daemon passes it from config.
    public static func now(unixSeconds: Int64, utcOffset: Int64 = 0) -> Value {
        let local = unixSeconds + utcOffset
        let days = local >= 0 ? local / 86400 : (local - 86399) / 86400
        let secondOfDay = local - days * 86400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let weekdays = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"]  // 1970-01-01 was a Thursday
        let weekday = weekdays[Int(((days % 7) + 7) % 7)]
        func pad(_ n: Int64, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return .map([
            "unix": .number(Double(unixSeconds)),
            "hour": .number(Double(secondOfDay / 3600)),
            "minute": .number(Double(secondOfDay % 3600 / 60)),
            "second": .number(Double(secondOfDay % 60)),
            "weekday": .string(weekday),
            "date": .string("\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))"),
        ])
    }
}
