/// One message property of an IoT Hub property bag (docs/protocols.md §2.2), decoded.
///
/// `value` is nil for a key written without `=` (C2D's "null" form); an empty string is `key=`.
public struct MessageProperty: Sendable, Equatable {
    public var name: String
    public var value: String?

    public init(_ name: String, _ value: String?) {
        self.name = name
        self.value = value
    }
}

/// The `key=value&key2=value2` encoding of IoT Hub topic suffixes and `?$rid=…` queries:
/// RFC 3986 percent-encoding, `+` left as `+` (IoT Hub and the SDKs do not use form encoding).
public enum PropertyBag {
    /// Splits a property bag into its properties, in order, percent-decoding keys and values.
    /// Empty segments (`a=1&&b=2`, a trailing `&`) are skipped.
    public static func decode(_ bag: Substring) -> [MessageProperty] {
        var properties: [MessageProperty] = []
        for segment in bag.split(separator: "&", omittingEmptySubsequences: true) {
            if let equals = segment.firstIndex(of: "=") {
                properties.append(
                    MessageProperty(
                        percentDecode(segment[..<equals]),
                        percentDecode(segment[segment.index(after: equals)...])))
            } else {
                properties.append(MessageProperty(percentDecode(segment), nil))
            }
        }
        return properties
    }

    /// The property bag text for `properties`, each key and value percent-encoded.
    public static func encode(_ properties: [MessageProperty]) -> String {
        properties.map { property in
            guard let value = property.value else { return percentEncode(property.name) }
            return percentEncode(property.name) + "=" + percentEncode(value)
        }.joined(separator: "&")
    }

    /// The query parameters after the first `?` of a topic such as
    /// `$iothub/twin/res/200/?$rid=1&$version=3`, keys with any leading `$` removed.
    public static func query(ofTopic topic: String) -> [String: String] {
        guard let question = topic.firstIndex(of: "?") else { return [:] }
        var result: [String: String] = [:]
        for property in decode(topic[topic.index(after: question)...]) {
            var name = Substring(property.name)
            while name.first == "$" { name = name.dropFirst() }
            result[String(name)] = property.value ?? ""
        }
        return result
    }

    /// Percent-decodes `text`. A `%` not followed by two hex digits is kept as it is, and bytes
    /// that are not UTF-8 become U+FFFD: a device's odd encoding is recorded, never refused.
    public static func percentDecode(_ text: Substring) -> String {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return String(text) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        let utf8 = Array(text.utf8)
        var index = 0
        while index < utf8.count {
            if utf8[index] == UInt8(ascii: "%"), index + 2 < utf8.count,
                let high = hexValue(utf8[index + 1]), let low = hexValue(utf8[index + 2])
            {
                bytes.append(high << 4 | low)
                index += 3
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func percentDecode(_ text: String) -> String { percentDecode(text[...]) }

    /// Percent-encodes everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
    public static func percentEncode(_ text: String) -> String {
        var output = ""
        output.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"):
                output.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                output += "%"
                output.unicodeScalars.append(Unicode.Scalar(hexDigits[Int(byte >> 4)]))
                output.unicodeScalars.append(Unicode.Scalar(hexDigits[Int(byte & 0x0F)]))
            }
        }
        return output
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
