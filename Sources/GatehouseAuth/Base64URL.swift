import Foundation

/// base64url without padding (RFC 7515 §2), strictly: jwt-kit's decoder is internal to it, and
/// Foundation's wants the standard alphabet with padding. Anything outside the alphabet, any `=`
/// and an impossible length are refused rather than repaired.
enum Base64URL {
    static func decode(_ text: Substring) -> Data? {
        var standard = ""
        standard.reserveCapacity(text.utf8.count + 3)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                standard.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "-"): standard.append("+")
            case UInt8(ascii: "_"): standard.append("/")
            default: return nil
            }
        }
        switch standard.utf8.count % 4 {
        case 0: break
        case 2: standard.append("==")
        case 3: standard.append("=")
        default: return nil
        }
        return Data(base64Encoded: standard)
    }
}
