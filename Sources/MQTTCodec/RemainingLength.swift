/// The Remaining Length field of the fixed header, MQTT 3.1.1 §2.2.3.
///
/// A variable-length integer: 7 bits of value per byte, least significant group first, the
/// high bit of each byte saying "another byte follows". At most four bytes, so the largest
/// value is 268,435,455 (0xFF 0xFF 0xFF 0x7F).
///
/// The decoder accepts non-minimal encodings (for example 0x80 0x00 for 0): §2.2.3 does not
/// forbid them, and the four-byte bound is what keeps them harmless.
enum RemainingLength {
    /// The largest value four bytes can carry.
    static let maximum = 268_435_455

    /// The most bytes the field may take.
    static let maximumByteCount = 4

    /// The outcome of reading the field from a buffer that may not hold all of it yet.
    enum DecodeResult: Equatable {
        /// The buffer ends before the field does.
        case incomplete
        /// The field's value and how many bytes it took (1...4).
        case complete(value: Int, byteCount: Int)
    }

    /// Reads the field from `bytes[start..<end]` without reading outside that range.
    ///
    /// Throws ``MQTTProtocolError/Code/malformedRemainingLength`` as soon as a fourth byte
    /// still has its continuation bit set.
    static func decode(
        _ bytes: [UInt8], from start: Int, end: Int
    ) throws(MQTTProtocolError) -> DecodeResult {
        var value = 0
        var multiplier = 1
        var index = start
        for byteCount in 1...maximumByteCount {
            guard index < end else { return .incomplete }
            let byte = bytes[index]
            index += 1
            // At most 127 * 128^3 per step and four steps: far below Int.max even on 32-bit.
            value += Int(byte & 0x7F) * multiplier
            if byte & 0x80 == 0 {
                return .complete(value: value, byteCount: byteCount)
            }
            multiplier *= 128
        }
        throw MQTTProtocolError(
            .malformedRemainingLength,
            "the Remaining Length field continues past its fourth byte (MQTT 3.1.1 §2.2.3)")
    }

    /// How many bytes the minimal encoding of `value` takes.
    static func byteCount(of value: Int) -> Int {
        switch value {
        case ..<128: 1
        case ..<16_384: 2
        case ..<2_097_152: 3
        default: 4
        }
    }

    /// Appends the minimal encoding of `value` (the algorithm of §2.2.3).
    ///
    /// - Precondition: `0 <= value <= maximum`.
    static func encode(_ value: Int, into buffer: inout [UInt8]) {
        precondition(
            (0...maximum).contains(value),
            "MQTT remaining length \(value) is outside 0...\(maximum) (MQTT 3.1.1 §2.2.3)")
        var rest = value
        repeat {
            var byte = UInt8(rest % 128)
            rest /= 128
            if rest > 0 { byte |= 0x80 }
            buffer.append(byte)
        } while rest > 0
    }
}
