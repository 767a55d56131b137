import Testing

@testable import IoTHubWire

/// The property bag of docs/protocols.md §2.2. The first four tests are DevHub's former
/// `PropertyBagTests`, the fifth the core's former property-bag test in `SASTokenTests`.
@Suite struct PropertyBagTests {
    @Test func decodesInOrderWithNullsAndEscapes() {
        let bag = PropertyBag.decode(
            "%24.mid=42&%24.ct=application%2Fjson&b=2%20%2F%26%3D&flag&empty=&a+b=c+d&&")
        #expect(
            bag == [
                MessageProperty("$.mid", "42"), MessageProperty("$.ct", "application/json"),
                MessageProperty("b", "2 /&="), MessageProperty("flag", nil), MessageProperty("empty", ""),
                MessageProperty("a+b", "c+d"),
            ])
    }

    @Test func malformedEscapesAreKeptVerbatim() {
        #expect(PropertyBag.percentDecode("100%") == "100%")
        #expect(PropertyBag.percentDecode("%zz%4") == "%zz%4")
        #expect(PropertyBag.percentDecode("%C3%A9") == "é")
        #expect(PropertyBag.percentDecode("%FF") == "\u{FFFD}")
    }

    @Test func encodeRoundTrips() {
        let properties = [
            MessageProperty("$.to", "/devices/d/messages/deviceBound"), MessageProperty("ünï", "v=1&2"),
            MessageProperty("null", nil),
        ]
        let text = PropertyBag.encode(properties)
        #expect(!text.contains("/"))
        #expect(PropertyBag.decode(text[...]) == properties)
    }

    @Test func queryOfTopic() {
        #expect(
            PropertyBag.query(ofTopic: "$iothub/twin/res/204/?$rid=a%20b&$version=3") == [
                "rid": "a b", "version": "3",
            ])
        #expect(PropertyBag.query(ofTopic: "no/query") == [:])
    }

    @Test("property bags round-trip and encode as IoT Hub expects")
    func encodesAsIoTHubExpects() {
        let properties = [
            MessageProperty("$.ct", "application/json"), MessageProperty("alarm", "high & dry"),
            MessageProperty("ü", "="),
        ]
        let encoded = PropertyBag.encode(properties)
        #expect(encoded == "$.ct=application%2Fjson&alarm=high%20%26%20dry&%C3%BC=%3D")
        #expect(PropertyBag.decode(encoded) == properties)
        #expect(PropertyBag.decode("bad=%zz%4") == [MessageProperty("bad", "%zz%4")])  // kept literally, no crash
    }

    // MARK: Valueless keys

    @Test("a bare key is null, `key=` is empty, and each encodes back to itself")
    func valuelessKeys() {
        #expect(PropertyBag.decode("flag&k=") == [MessageProperty("flag", nil), MessageProperty("k", "")])
        #expect(PropertyBag.encode([MessageProperty("flag", nil)]) == "flag")
        #expect(PropertyBag.encode([MessageProperty("flag", "")]) == "flag=")
        for text in ["flag", "flag=", "a&b=&c=1", "a=&b", "$.mid&x"] {
            #expect(PropertyBag.encode(PropertyBag.decode(text)) == text)
        }
        // Only the first `=` separates: the rest belongs to the value.
        #expect(PropertyBag.decode("k==v=") == [MessageProperty("k", "=v=")])
        #expect(PropertyBag.decode("=v") == [MessageProperty("", "v")])
        #expect(PropertyBag.encode([MessageProperty("", nil)]).isEmpty)
    }

    // MARK: Percent-encoding

    @Test("reserved characters are escaped, unreserved ones and `$` are not")
    func reservedCharacters() {
        let reserved = ":/?#[]@!&'()*+,;=% \"<>\\^`{|}"
        for character in reserved {
            let encoded = PropertyBag.percentEncode(String(character))
            #expect(encoded.count == 3 && encoded.first == "%", "\(character) → \(encoded)")
            #expect(PropertyBag.percentDecode(encoded) == String(character))
        }
        let unreserved = "ABCXYZabcxyz0189-._~$"
        #expect(PropertyBag.percentEncode(unreserved) == unreserved)
        #expect(PropertyBag.percentEncode("a b+c") == "a%20b%2Bc")
        #expect(PropertyBag.percentEncode("é\u{0}\n") == "%C3%A9%00%0A")
        // `+` is a literal plus, never a space (no form encoding); hex case does not matter.
        #expect(PropertyBag.percentDecode("a+b%2b%2B") == "a+b++")
        #expect(PropertyBag.percentDecode("%2f%2F") == "//")
    }

    @Test(
        "any text survives encode then decode",
        arguments: ["", "plain", "&=&=", "%", "%%41", "100%25", "ünïcødé 🚀", "a\u{0}b", "$.ct", "+ +", "?$rid=1"])
    func roundTrip(text: String) {
        #expect(PropertyBag.percentDecode(PropertyBag.percentEncode(text)) == text)
        let property = MessageProperty(text, text)
        #expect(PropertyBag.decode(PropertyBag.encode([property])) == [property])
    }

    // MARK: Hostile input

    @Test(
        "malformed bags from a device or the hub never trap and keep what they cannot decode",
        arguments: [
            ("%", [MessageProperty("%", nil)]),
            ("%4", [MessageProperty("%4", nil)]),
            ("k=%G1", [MessageProperty("k", "%G1")]),
            ("k=%C3", [MessageProperty("k", "\u{FFFD}")]),  // a truncated UTF-8 sequence
            ("k=%ED%A0%80", [MessageProperty("k", "\u{FFFD}\u{FFFD}\u{FFFD}")]),  // a UTF-16 surrogate
            ("&&&", []),
            ("=", [MessageProperty("", "")]),
            ("k=%00", [MessageProperty("k", "\u{0}")]),
        ])
    func hostileBags(text: String, expected: [MessageProperty]) {
        #expect(PropertyBag.decode(text) == expected)
    }

    @Test("a long bag of many properties decodes in order")
    func manyProperties() {
        let properties = (0..<2000).map { MessageProperty("k\($0)", $0.isMultiple(of: 3) ? nil : "v\($0)") }
        #expect(PropertyBag.decode(PropertyBag.encode(properties)) == properties)
        let long = String(repeating: "%", count: 100_000)
        #expect(PropertyBag.decode(long) == [MessageProperty(long, nil)])
    }
}
