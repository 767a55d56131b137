import FoundationEssentials

/// base64url without padding (RFC 7515 §2), strictly: jwt-kit's decoder is internal to it, and
/// Foundation's wants the standard alphabet with padding. Anything outside the alphabet, any `=`
/// and an impossible length are refused rather than repaired. Decodes straight from UTF-8 bytes
/// through a table: it runs three times a command, on the gate's hot path.
enum Base64URL {
    /// 6-bit value of each byte, or 0xFF for a byte outside the base64url alphabet.
    private static let table: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8).enumerated()
        {
            table[Int(byte)] = UInt8(index)
        }
        return table
    }()

    static func decode(_ text: Substring) -> Data? {
        var text = text
        return text.withUTF8 { decode(UnsafeRawBufferPointer($0)) }
    }

    static func decode(_ input: UnsafeRawBufferPointer) -> Data? {
        let count = input.count
        guard count % 4 != 1 else { return nil }
        var output = [UInt8]()
        output.reserveCapacity(count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in input {
            let value = table[Int(byte)]
            guard value != 0xFF else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        // The unused low bits of the last character must be zero (a canonical encoding).
        guard accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return Data(output)
    }
}
