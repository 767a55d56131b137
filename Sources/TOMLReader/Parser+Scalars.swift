import StrictJSON

/// Values written without quotes or brackets: booleans, integers, floats, dates and times.
extension Parser {
    /// `true`, `42`, `0xff`, `1_000`, `6.02e23`, `inf`, `1979-05-27T07:32:00Z`, …:
    /// read up to the next whitespace, `,`, `]`, `}` or `#`, then checked as a whole.
    mutating func parseBareValue() throws(TOMLError) -> TOMLValue {
        let start = index
        skipBareValue()
        // A date and a time may be separated by a space: `1979-05-27 07:32:00`.
        if index - start == 10, isDate(start), peek() == ASCII.space, let next = peek(1), ASCII.isDigit(next) {
            index += 1
            skipBareValue()
        }
        let end = index
        guard start < end else { throw error("expected a value, found \(describe(at: start))", at: start) }
        let text = String(decoding: bytes[start..<end], as: UTF8.self)
        switch text {
        case "true": return .boolean(true)
        case "false": return .boolean(false)
        case "inf", "+inf": return .float(.infinity)
        case "-inf": return .float(-.infinity)
        case "nan", "+nan": return .float(.nan)
        case "-nan": return .float(-.nan)
        default: break
        }
        if startsDateOrTime(start, end) {
            try checkDateTime(start, end, text)
            return .dateTime(text)
        }
        let first = bytes[start]
        if first == ASCII.dot {
            throw error("invalid number \(Self.shown(text)): a float needs a digit before '.'", at: start)
        }
        if ASCII.isDigit(first) || first == UInt8(ascii: "+") || first == UInt8(ascii: "-") {
            return try parseNumber(start, end, text)
        }
        throw error(
            "invalid value \(Self.shown(text)): a string needs quotes, a boolean is true or false", at: start)
    }

    private mutating func skipBareValue() {
        while let byte = peek() {
            switch byte {
            case ASCII.space, ASCII.tab, ASCII.lineFeed, ASCII.carriageReturn, ASCII.comma, ASCII.closeBracket,
                ASCII.closeBrace, ASCII.hash:
                return
            default:
                index += 1
            }
        }
    }

    /// A value in a message, cut short if it is long.
    static func shown(_ text: String) -> String {
        JSONValue.string(text.unicodeScalars.count > 40 ? String(text.unicodeScalars.prefix(40)) + "…" : text)
            .description
    }

    // MARK: Numbers

    /// Decimal integers (no leading zeros), `0x` `0o` `0b` integers (no sign), and floats: an
    /// integer part, then a fraction, an exponent or both. `_` only between two digits.
    private func parseNumber(_ start: Int, _ end: Int, _ text: String) throws(TOMLError) -> TOMLValue {
        var offset = start
        let negative = bytes[start] == UInt8(ascii: "-")
        if negative || bytes[start] == UInt8(ascii: "+") { offset += 1 }
        if offset + 1 < end, bytes[offset] == UInt8(ascii: "0"), let radix = Self.radix(bytes[offset + 1]) {
            guard offset == start else {
                throw error(
                    "invalid number \(Self.shown(text)): hexadecimal, octal and binary integers take no sign",
                    at: start)
            }
            return .integer(try parseRadixInteger(from: offset + 2, to: end, radix: radix, text: text))
        }
        let integerEnd = try digitRun(from: offset, to: end, radix: 10, text: text, after: "")
        if bytes[offset] == UInt8(ascii: "0"), integerEnd > offset + 1 {
            throw error("invalid number \(Self.shown(text)): leading zeros are not allowed", at: start)
        }
        if integerEnd == end { return .integer(try decimalInteger(offset..<end, negative: negative, text: text)) }
        var cursor = integerEnd
        if bytes[cursor] == ASCII.dot {
            cursor = try digitRun(from: cursor + 1, to: end, radix: 10, text: text, after: " after '.'")
        }
        if cursor < end, bytes[cursor] == UInt8(ascii: "e") || bytes[cursor] == UInt8(ascii: "E") {
            cursor += 1
            if cursor < end, bytes[cursor] == UInt8(ascii: "+") || bytes[cursor] == UInt8(ascii: "-") { cursor += 1 }
            cursor = try digitRun(from: cursor, to: end, radix: 10, text: text, after: " in the exponent")
        }
        guard cursor == end else {
            throw error("invalid number \(Self.shown(text)): unexpected \(describe(at: cursor))", at: start)
        }
        let literal = bytes[start..<end].filter { $0 != UInt8(ascii: "_") }
        guard let value = Double(String(decoding: literal, as: UTF8.self)) else {
            throw error("invalid number \(Self.shown(text))", at: start)
        }
        return .float(value)
    }

    /// `DIGIT *( DIGIT / "_" DIGIT )` from `offset`; returns where it ends.
    private func digitRun(from offset: Int, to end: Int, radix: Int, text: String, after: String) throws(TOMLError)
        -> Int
    {
        func isDigit(_ byte: UInt8) -> Bool { Self.hexValue(byte).map { $0 < radix } ?? false }
        guard offset < end, isDigit(bytes[offset]) else {
            let found = offset < end ? describe(at: offset) : "the end of the number"
            let kind = [16: "a hexadecimal digit", 8: "an octal digit", 2: "a binary digit"][radix] ?? "a digit"
            throw error("invalid number \(Self.shown(text)): expected \(kind)\(after), found \(found)", at: offset)
        }
        var cursor = offset + 1
        while cursor < end {
            if isDigit(bytes[cursor]) {
                cursor += 1
            } else if bytes[cursor] == UInt8(ascii: "_") {
                guard cursor + 1 < end, isDigit(bytes[cursor + 1]) else {
                    throw error("invalid number \(Self.shown(text)): '_' must be between two digits", at: cursor)
                }
                cursor += 2
            } else {
                break
            }
        }
        return cursor
    }

    private func decimalInteger(_ digits: Range<Int>, negative: Bool, text: String) throws(TOMLError) -> Int64 {
        // Accumulated negatively: Int64.min has no positive counterpart.
        var value: Int64 = 0
        for byte in bytes[digits] where byte != UInt8(ascii: "_") {
            let (product, overflow) = value.multipliedReportingOverflow(by: 10)
            let (sum, underflow) = product.subtractingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            guard !overflow, !underflow else { throw outOfRange(text, at: digits.lowerBound) }
            value = sum
        }
        if negative { return value }
        guard value != .min else { throw outOfRange(text, at: digits.lowerBound) }
        return -value
    }

    private func parseRadixInteger(from offset: Int, to end: Int, radix: Int, text: String) throws(TOMLError)
        -> Int64
    {
        let runEnd = try digitRun(from: offset, to: end, radix: radix, text: text, after: "")
        guard runEnd == end else {
            throw error("invalid number \(Self.shown(text)): unexpected \(describe(at: runEnd))", at: runEnd)
        }
        var value: UInt64 = 0
        for byte in bytes[offset..<end] {
            guard let digit = Self.hexValue(byte) else { continue }  // `_`
            let (product, overflow) = value.multipliedReportingOverflow(by: UInt64(radix))
            guard !overflow, product <= UInt64(Int64.max) - UInt64(digit) else { throw outOfRange(text, at: offset) }
            value = product + UInt64(digit)
        }
        return Int64(value)
    }

    private static func radix(_ letter: UInt8) -> Int? {
        switch letter {
        case UInt8(ascii: "x"): 16
        case UInt8(ascii: "o"): 8
        case UInt8(ascii: "b"): 2
        default: nil
        }
    }

    private func outOfRange(_ text: String, at offset: Int) -> TOMLError {
        error(
            "integer \(Self.shown(text)) does not fit in 64 bits (-9223372036854775808 to 9223372036854775807)",
            at: offset)
    }

    // MARK: Dates and times

    /// `dddd-` or `dd:`, which no number starts with.
    private func startsDateOrTime(_ start: Int, _ end: Int) -> Bool {
        func digits(_ range: Range<Int>) -> Bool { range.allSatisfy { ASCII.isDigit(bytes[start + $0]) } }
        if end - start >= 3, digits(0..<2), bytes[start + 2] == UInt8(ascii: ":") { return true }
        return end - start >= 5 && digits(0..<4) && bytes[start + 4] == UInt8(ascii: "-")
    }

    /// `dddd-dd-dd` at `start` (ten bytes are there).
    private func isDate(_ start: Int) -> Bool {
        (0..<10).allSatisfy { position in
            let byte = bytes[start + position]
            return position == 4 || position == 7 ? byte == UInt8(ascii: "-") : ASCII.isDigit(byte)
        }
    }

    /// RFC 3339 as TOML 1.0 takes it: `1979-05-27`, `07:32:00(.999)`, a date and a time
    /// separated by `T`, `t` or a space, with an offset (`Z`, `z`, `+05:30`, `-08:00`) or without.
    /// Seconds are required; a leap second (`:60`) is not accepted.
    private func checkDateTime(_ start: Int, _ end: Int, _ text: String) throws(TOMLError) {
        var cursor = start
        func invalid(_ reason: String) -> TOMLError {
            error("invalid date-time \(Self.shown(text)): \(reason)", at: start)
        }
        func found() -> String { cursor < end ? describe(at: cursor) : "the end of the value" }
        func number(_ count: Int, _ range: ClosedRange<Int>, _ name: String) throws(TOMLError) -> Int {
            var value = 0
            for _ in 0..<count {
                guard cursor < end, ASCII.isDigit(bytes[cursor]) else {
                    throw invalid("expected \(count) digits for the \(name), found \(found())")
                }
                value = value * 10 + Int(bytes[cursor] - UInt8(ascii: "0"))
                cursor += 1
            }
            guard range.contains(value) else {
                throw invalid("the \(name) must be \(range.lowerBound) to \(range.upperBound), not \(value)")
            }
            return value
        }
        func expect(_ separator: Character, after name: String) throws(TOMLError) {
            guard cursor < end, bytes[cursor] == separator.asciiValue else {
                throw invalid("expected '\(separator)' after the \(name), found \(found())")
            }
            cursor += 1
        }
        func time() throws(TOMLError) {
            _ = try number(2, 0...23, "hour")
            try expect(":", after: "hour")
            _ = try number(2, 0...59, "minute")
            try expect(":", after: "minute (seconds are required)")
            _ = try number(2, 0...59, "second")
            if cursor < end, bytes[cursor] == ASCII.dot {
                cursor += 1
                guard cursor < end, ASCII.isDigit(bytes[cursor]) else {
                    throw invalid("expected digits after '.', found \(found())")
                }
                while cursor < end, ASCII.isDigit(bytes[cursor]) { cursor += 1 }
            }
        }

        if bytes[start + 2] == UInt8(ascii: ":") {
            try time()
            guard cursor == end else { throw invalid("unexpected \(found()) after a local time") }
            return
        }
        let year = try number(4, 0...9999, "year")
        try expect("-", after: "year")
        let month = try number(2, 1...12, "month")
        try expect("-", after: "month")
        let day = try number(2, 1...31, "day")
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        guard day <= days else { throw invalid("day \(day) is past the end of the month (\(days) days)") }
        guard cursor < end else { return }
        guard bytes[cursor] == UInt8(ascii: "T") || bytes[cursor] == UInt8(ascii: "t") || bytes[cursor] == ASCII.space
        else {
            throw invalid("expected 'T' or a space between the date and the time, found \(found())")
        }
        cursor += 1
        try time()
        guard cursor < end else { return }
        switch bytes[cursor] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            cursor += 1
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            cursor += 1
            _ = try number(2, 0...23, "offset's hours")
            try expect(":", after: "offset's hours")
            _ = try number(2, 0...59, "offset's minutes")
        default:
            throw invalid("expected an offset (Z, +hh:mm or -hh:mm) or the end of the value, found \(found())")
        }
        guard cursor == end else { throw invalid("unexpected \(found()) after the offset") }
    }
}
