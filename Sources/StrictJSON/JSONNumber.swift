/// A JSON number kept exactly as it was written.
///
/// The text is an RFC 8259 number literal (`12`, `-0.5`, `1E+3`) whose value is within
/// `Double`'s range, so writing a parsed number back gives the same bytes and no digit is lost
/// to rounding. Reading it as a Swift number is explicit about exactness:
///
/// - ``int64Value``, ``uint64Value``, ``intValue``: the integer, or nil when the number is not
///   an integer or does not fit (`1e3` is 1000; `1.5` and `18446744073709551616` give nil);
/// - ``exactDoubleValue``: the `Double` that *is* the number, or nil (`0.5` reads, `0.1` and
///   `9007199254740993` do not);
/// - ``doubleValue``: the nearest `Double`, for values where rounding is acceptable.
///
/// Two numbers are equal when their values are (`1.0 == 1 == 1e0`, `-0 == 0`), whatever their
/// text; ``text`` tells them apart.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// The literal, as written.
    public let text: String

    /// The literal `text`, or nil when it is not an RFC 8259 number (no `+`, no leading zero,
    /// no `.5` or `1.`, no `NaN`) or its magnitude is beyond `Double`'s range (`1e400`).
    public init?(_ text: String) {
        var parser = JSONParser(Array(text.utf8), maximumDepth: 0)
        guard (try? parser.parseNumber()) != nil, parser.isAtEnd else { return nil }
        self.text = text
    }

    /// An integer, exactly.
    public init(_ value: some BinaryInteger) {
        text = String(value)
    }

    /// A finite `Double` as its shortest text that reads back as the same `Double` (`0.1`,
    /// `1e-05`, `100.0`); nil for infinities and NaN, which JSON cannot write.
    public init?(_ value: Double) {
        guard value.isFinite else { return nil }
        text = value.description
    }

    /// Already checked by the parser.
    init(validated text: String) {
        self.text = text
    }

    public var description: String { text }

    /// The nearest `Double` (correctly rounded). Never infinite: such literals are refused.
    public var doubleValue: Double { Double(text) ?? .nan }

    /// The `Double` whose value is exactly this number, or nil when rounding would change it.
    public var exactDoubleValue: Double? {
        let double = doubleValue
        guard let decimal = ExactDecimal(literal: text), decimal == ExactDecimal(double) else { return nil }
        return double
    }

    /// The number as an `Int64` if it is an integer in range (`-9223372036854775808` to
    /// `9223372036854775807`), else nil.
    public var int64Value: Int64? {
        guard let decimal = ExactDecimal(literal: text), let magnitude = decimal.integerMagnitude else { return nil }
        if !decimal.negative { return Int64(exactly: magnitude) }
        if magnitude == UInt64(Int64.max) + 1 { return .min }
        return Int64(exactly: magnitude).map { -$0 }
    }

    /// The number as a `UInt64` if it is a non-negative integer in range, else nil.
    public var uint64Value: UInt64? {
        guard let decimal = ExactDecimal(literal: text), let magnitude = decimal.integerMagnitude else { return nil }
        return decimal.negative && magnitude != 0 ? nil : magnitude
    }

    /// The number as an `Int` if it is an integer in range, else nil.
    public var intValue: Int? { int64Value.flatMap { Int(exactly: $0) } }

    public static func == (lhs: JSONNumber, rhs: JSONNumber) -> Bool {
        if lhs.text == rhs.text { return true }
        // Two literals whose exponents do not fit an Int are equal only as text (see ExactDecimal).
        guard let left = ExactDecimal(literal: lhs.text), let right = ExactDecimal(literal: rhs.text) else {
            return false
        }
        return left == right
    }

    public func hash(into hasher: inout Hasher) {
        if let decimal = ExactDecimal(literal: text) {
            hasher.combine(decimal)
        } else {
            hasher.combine(text)
        }
    }
}

/// A number's exact value as `±digits × 10^exponent`, digits without leading or trailing zeros
/// (none at all for zero, which has no sign). Made from a literal, or from a `Double` by
/// expanding its binary value in full, so two values compare without rounding.
struct ExactDecimal: Hashable {
    var negative: Bool
    /// ASCII digits; the first and last are not "0".
    var digits: [UInt8]
    var exponent: Int

    static let zero = ExactDecimal(negative: false, digits: [], exponent: 0)

    /// Nil when the literal's exponent (or its shift by the fraction) does not fit an `Int`:
    /// such a number is either zero (handled before) or smaller than anything a `Double` holds.
    init?(literal: String) {
        var bytes = Array(literal.utf8)[...]
        let negative = bytes.first == UInt8(ascii: "-")
        if negative { bytes = bytes.dropFirst() }
        let mantissaEnd = bytes.firstIndex { $0 == UInt8(ascii: "e") || $0 == UInt8(ascii: "E") } ?? bytes.endIndex
        let mantissa = bytes[..<mantissaEnd]
        let point = mantissa.firstIndex(of: UInt8(ascii: "."))
        let fractionCount = point.map { mantissa.endIndex - $0 - 1 } ?? 0
        var digits = mantissa.filter { $0 != UInt8(ascii: ".") }[...]
        digits = digits.drop { $0 == UInt8(ascii: "0") }
        guard !digits.isEmpty else {
            self = .zero
            return
        }
        var exponent = 0
        if mantissaEnd < bytes.endIndex {
            var exponentDigits = bytes[(mantissaEnd + 1)...]
            let exponentNegative = exponentDigits.first == UInt8(ascii: "-")
            if exponentDigits.first == UInt8(ascii: "-") || exponentDigits.first == UInt8(ascii: "+") {
                exponentDigits = exponentDigits.dropFirst()
            }
            for digit in exponentDigits {
                let (times10, overflow1) = exponent.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times10.addingReportingOverflow(Int(digit - UInt8(ascii: "0")))
                guard !overflow1, !overflow2 else { return nil }
                exponent = sum
            }
            if exponentNegative { exponent = -exponent }
        }
        let (shifted, overflow) = exponent.subtractingReportingOverflow(fractionCount)
        guard !overflow else { return nil }
        exponent = shifted
        while digits.last == UInt8(ascii: "0") {
            digits = digits.dropLast()
            let (next, overflow) = exponent.addingReportingOverflow(1)
            guard !overflow else { return nil }
            exponent = next
        }
        self.init(negative: negative, digits: Array(digits), exponent: exponent)
    }

    /// The exact decimal expansion of a finite `Double`: `m × 2^e` is `m × 5^-e × 10^e` when
    /// `e < 0`, written out with a small base-10⁹ big integer.
    init(_ value: Double) {
        guard value != 0, value.isFinite else {
            self = .zero
            return
        }
        var significand =
            value.isNormal
            ? value.significandBitPattern | (1 << UInt64(Double.significandBitCount)) : value.significandBitPattern
        // The bias of an IEEE 754 binary64 exponent is 1023.
        var binaryExponent = (value.isNormal ? Int(value.exponentBitPattern) : 1) - 1023 - Double.significandBitCount
        while significand & 1 == 0 {
            significand >>= 1
            binaryExponent += 1
        }
        var limbs: [UInt64] = [significand % 1_000_000_000, significand / 1_000_000_000 % 1_000_000_000]
        limbs.append(significand / 1_000_000_000_000_000_000)
        let factor: UInt64 = binaryExponent >= 0 ? 2 : 5
        for _ in 0..<abs(binaryExponent) {
            var carry: UInt64 = 0
            for index in limbs.indices {
                let product = limbs[index] * factor + carry
                limbs[index] = product % 1_000_000_000
                carry = product / 1_000_000_000
            }
            if carry > 0 { limbs.append(carry) }
        }
        var text = ""
        for (index, limb) in limbs.reversed().enumerated() {
            let part = String(limb)
            text += index == 0 ? part : String(repeating: "0", count: 9 - part.count) + part
        }
        var digits = Array(text.utf8)[...].drop { $0 == UInt8(ascii: "0") }
        var exponent = min(binaryExponent, 0)
        while digits.last == UInt8(ascii: "0") {
            digits = digits.dropLast()
            exponent += 1
        }
        self.init(negative: value < 0, digits: Array(digits), exponent: exponent)
    }

    private init(negative: Bool, digits: [UInt8], exponent: Int) {
        self.negative = negative
        self.digits = digits
        self.exponent = exponent
    }

    /// The absolute value when it is an integer that fits a `UInt64`.
    var integerMagnitude: UInt64? {
        guard exponent >= 0, digits.count + exponent <= 20 else { return nil }
        var value: UInt64 = 0
        for digit in digits + Array(repeating: UInt8(ascii: "0"), count: exponent) {
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
        }
        return value
    }
}
