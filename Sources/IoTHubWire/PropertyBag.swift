/// One message property of an IoT Hub property bag (docs/protocols.md §2.2), decoded.
///
/// `value` is nil for a key written without `=` (C2D's "null" form); an empty string is `key=`.
public struct MessageProperty: Sendable, Hashable {
    public var name: String
    public var value: String?

    public init(_ name: String, _ value: String?) {
        self.name = name
        self.value = value
    }
}

/// The `key=value&key2=value2` encoding of IoT Hub topic suffixes and `?$rid=…` queries
/// (docs/protocols.md §2.2), the one implementation DevHub, the plugin kit, the relay and the
/// `mqtt` transport share.
///
/// **Keys without a value.** IoT Hub tells three cases apart in C2D topics (docs/protocols.md
/// §2.2): `key` (no `=`) is a null value, `key=` an empty one, `key=v` a value. Azure's Python
/// device SDK decodes them the same way (None, "", "v"). So this type does too, and encodes a
/// null value back as the bare `key` and an empty one as `key=`: decode and encode are inverse.
/// A side that cannot carry null (the plugin ABI's properties are byte strings) maps it to the
/// empty value, which then goes out as `key=`.
///
/// **Escapes.** RFC 3986 percent-encoding, uppercase hex. Everything is escaped except the
/// unreserved characters `A–Z a–z 0–9 - . _ ~` and `$`, which stays literal so system properties
/// read `$.ct` as in IoT Hub's documentation and SAS tokens match `SharedAccessSignature` of
/// GatehouseTPM (docs/protocols.md §0); `%24` is decoded to `$` all the same. `+` is a literal
/// plus in both directions: IoT Hub and the SDKs do not use form encoding.
///
/// **Hostile input.** Decoding never fails and never traps: a bag is data from a device or the
/// hub, recorded rather than refused. A `%` not followed by two hex digits is kept as it is,
/// bytes that are not UTF-8 become U+FFFD, empty segments (`a=1&&b=2`, a trailing `&`) are
/// skipped. Whole topics that are not IoT Hub's are refused by `IoTHubTopic`'s parsers.
public enum PropertyBag {
    /// Splits a property bag into its properties, in order, percent-decoding keys and values.
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

    public static func decode(_ bag: String) -> [MessageProperty] { decode(bag[...]) }

    /// The property bag text for `properties`, in order, each key and value percent-encoded.
    public static func encode(_ properties: [MessageProperty]) -> String {
        properties.map { property in
            guard let value = property.value else { return percentEncode(property.name) }
            return percentEncode(property.name) + "=" + percentEncode(value)
        }.joined(separator: "&")
    }

    /// The query parameters after the first `?` of a topic such as
    /// `$iothub/twin/res/200/?$rid=1&$version=3`, keys with any leading `$` removed; a null
    /// value reads as empty, and of a repeated key the last one wins.
    public static func query(ofTopic topic: some StringProtocol) -> [String: String] {
        guard let question = topic.firstIndex(of: "?") else { return [:] }
        var result: [String: String] = [:]
        for property in decode(Substring(topic[topic.index(after: question)...])) {
            var name = Substring(property.name)
            while name.first == "$" { name = name.dropFirst() }
            result[String(name)] = property.value ?? ""
        }
        return result
    }

    /// Percent-decodes `text`. A `%` not followed by two hex digits is kept as it is, and bytes
    /// that are not UTF-8 become U+FFFD: a device's odd encoding is recorded, never refused.
    public static func percentDecode(_ text: some StringProtocol) -> String {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return String(text) }
        let utf8 = Array(text.utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
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

    /// Percent-encodes everything but RFC 3986's unreserved characters and `$`.
    public static func percentEncode(_ text: some StringProtocol) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
                UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "$"):
                bytes.append(byte)
            default:
                bytes.append(UInt8(ascii: "%"))
                bytes.append(hexDigits[Int(byte >> 4)])
                bytes.append(hexDigits[Int(byte & 0x0F)])
            }
        }
        return String(decoding: bytes, as: UTF8.self)
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
