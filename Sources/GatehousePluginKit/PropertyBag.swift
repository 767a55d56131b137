/// The IoT Hub MQTT property bag: `key=value&key2=value2`, each key and value percent-encoded
/// as in a URL query (docs/protocols.md §2.2). Used in telemetry and C2D topic suffixes.
public enum PropertyBag {
    /// Encodes properties in order. Unreserved characters (RFC 3986: A–Z a–z 0–9 - . _ ~) and
    /// the `$` of system properties (`$.ct`) stay as they are; everything else is %XX.
    public static func encode(_ properties: [PluginMessage.Property]) -> String {
        var out = ""
        for (index, property) in properties.enumerated() {
            if index > 0 { out += "&" }
            out += percentEncode(property.key)
            out += "="
            out += percentEncode(property.value)
        }
        return out
    }

    /// Decodes a bag. A key without `=` has an empty value (C2D's null form). Malformed
    /// percent-escapes are kept literally rather than rejected: a leaf device's topic is data,
    /// not something to fail a whole batch over.
    public static func decode(_ bag: Substring) -> [PluginMessage.Property] {
        guard !bag.isEmpty else { return [] }
        return bag.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            if let equals = pair.firstIndex(of: "=") {
                return .init(percentDecode(pair[..<equals]), percentDecode(pair[pair.index(after: equals)...]))
            }
            return .init(percentDecode(pair), "")
        }
    }

    public static func decode(_ bag: String) -> [PluginMessage.Property] { decode(bag[...]) }

    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"), UInt8(ascii: "$"):
            return true
        default:
            return false
        }
    }

    public static func percentEncode(_ text: some StringProtocol) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) {
                bytes.append(byte)
            } else {
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0xF)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func percentDecode(_ text: some StringProtocol) -> String {
        let utf8 = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var index = 0
        while index < utf8.count {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%"), index + 2 < utf8.count,
                let high = hexValue(utf8[index + 1]), let low = hexValue(utf8[index + 2])
            {
                out.append(high << 4 | low)
                index += 3
            } else if byte == UInt8(ascii: "+") {
                out.append(UInt8(ascii: " "))
                index += 1
            } else {
                out.append(byte)
                index += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
