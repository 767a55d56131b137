import Foundation
import StrictJSON
import Testing

/// The parser against valid, invalid and hostile documents. The first suites are the former
/// `StrictJSONTests` of GatehouseAuth and `JSONValueTests` of DevHub, whose parsers this module
/// replaces; the cases of both hold for it.
@Suite("Strict JSON for headers and claims (formerly GatehouseAuth's)")
struct ClaimsParsingTests {
    /// How Foundation's `JSONDecoder` reads a document: objects as dictionaries, numbers as
    /// `Double` (GatehouseAuth's former `Codable` JSON value, kept here as the reference).
    enum FoundationReading: Decodable, Equatable {
        case null, bool(Bool), number(Double), string(String), array([Self]), object([String: Self])

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let value = try? container.decode(Bool.self) {
                self = .bool(value)
            } else if let value = try? container.decode(Double.self) {
                self = .number(value)
            } else if let value = try? container.decode(String.self) {
                self = .string(value)
            } else if let value = try? container.decode([Self].self) {
                self = .array(value)
            } else {
                self = .object(try container.decode([String: Self].self))
            }
        }

        init(_ value: JSONValue) {
            switch value {
            case .null: self = .null
            case .bool(let value): self = .bool(value)
            case .number(let number): self = .number(number.doubleValue)
            case .string(let value): self = .string(value)
            case .array(let values): self = .array(values.map(Self.init))
            case .object(let object):
                self = .object(Dictionary(uniqueKeysWithValues: object.map { ($0.key, Self($0.value)) }))
            }
        }
    }

    @Test(
        "valid documents parse as Foundation's decoder reads them",
        arguments: [
            #"{}"#, #"[]"#, #" {"a" : [1, -2.5, 3e2, 0, -0.5e-1, true, false, null, "x"], "b": {"c": {}}} "#,
            #"{"s": "\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00 é"}"#, #""plain""#, #"12345678901234"#,
        ])
    func valid(_ text: String) throws {
        let data = Data(text.utf8)
        #expect(
            FoundationReading(try JSONValue(parsing: data))
                == (try JSONDecoder().decode(FoundationReading.self, from: data)))
    }

    @Test(
        "invalid, ambiguous or hostile documents are refused",
        arguments: [
            "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "[01]", "[1.]", "[.5]", "[1e]", "[+1]",
            "[1e400]", "[tru]", "[nul]", "\"\u{01}\"", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\ud800\\u0041\"",
            "{\"a\":1,\"a\":2}", "{\"a\":1,\"\\u0061\":2}", "{\"x\":{\"k\":1,\"k\":1}}", "[1] [2]", "'a'",
            String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
        ])
    func invalid(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: Data(text.utf8)) }
    }

    @Test("numbers Foundation's decoder refuses but RFC 8259 allows")
    func numbers() throws {
        #expect(try JSONValue(parsing: Data("[-0.0e-1, 1E+2]".utf8)) == [-0.0, 100])
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: Data([0x22, 0xC3, 0x28, 0x22])) }
    }
}

@Suite("Order-preserving JSON (formerly DevHub's)")
struct DocumentParsingTests {
    @Test func keepsMemberOrderAndNumberText() throws {
        let text = #"{"z":1,"a":[true,false,null,-0.50,1E+3],"m":{"x":"\u00e9\n\"q\""}}"#
        let value = try JSONValue(parsing: text)
        #expect(value.description == #"{"z":1,"a":[true,false,null,-0.50,1E+3],"m":{"x":"é\n\"q\""}}"#)
        #expect(try JSONValue(parsing: value.prettyDescription) == value)
    }

    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "01", "1.", "-", "+1", "\"\\x\"", "\"\u{01}\"", "nul", "1 2",
        "{'a':1}",
        "\"\\ud800\"", String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
    ])
    func rejectsInvalidJSON(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: text) }
    }

    @Test func deepNestingIsRefusedWithoutRecursionBlowUp() {
        let bomb = String(repeating: "[", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: bomb) }
    }

    @Test func mergePatchFollowsRFC7396() throws {
        let target = try JSONValue(parsing: #"{"a":1,"b":{"c":2,"d":3},"e":[1]}"#)
        let patch = try JSONValue(parsing: #"{"a":null,"b":{"c":null,"f":4},"e":{"x":1},"g":"new"}"#)
        #expect(
            target.merging(patch: patch).description == #"{"b":{"d":3,"f":4},"e":{"x":1},"g":"new"}"#)
    }
}

/// Each refusal with its reason and the offset it names.
@Suite struct HostileInputTests {
    func refusal(_ bytes: [UInt8], maximumDepth: Int = JSONValue.defaultMaximumDepth) -> JSONParseError? {
        do {
            _ = try JSONValue(parsing: bytes, maximumDepth: maximumDepth)
            return nil
        } catch {
            return error
        }
    }

    func refusal(_ text: String, maximumDepth: Int = JSONValue.defaultMaximumDepth) -> JSONParseError? {
        refusal(Array(text.utf8), maximumDepth: maximumDepth)
    }

    @Test func duplicateMemberNamesAreRefusedWhereTheSecondStands() throws {
        #expect(refusal(#"{"a":1,"a":2}"#) == JSONParseError(offset: 7, reason: .duplicateMemberName))
        // The same name once escapes are decoded, in a nested object, with the same value.
        #expect(refusal(#"{"a":1,"\u0061":2}"#)?.reason == .duplicateMemberName)
        #expect(refusal(#"{"x":{"k":1,"k":1}}"#) == JSONParseError(offset: 12, reason: .duplicateMemberName))
        #expect(refusal(#"[{"aud":"us","aud":"them"}]"#)?.reason == .duplicateMemberName)
        // Names are Swift strings: different in case, different names; canonically equivalent
        // (é precomposed and decomposed), the same name.
        #expect(try JSONValue(parsing: #"{"a":1,"A":2}"#).objectValue?.count == 2)
        #expect(refusal("{\"\u{e9}\":1,\"e\u{301}\":2}") == JSONParseError(offset: 8, reason: .duplicateMemberName))
        #expect(refusal(#"{"\u00e9":1,"e\u0301":2}"#)?.reason == .duplicateMemberName)
        // The same name in sibling objects is fine.
        #expect(try JSONValue(parsing: #"[{"a":1},{"a":2}]"#).arrayValue?.count == 2)
    }

    @Test func theDepthLimitCountsArraysAndObjects() throws {
        func nested(_ depth: Int) -> String {
            String(repeating: #"{"a":["#, count: depth / 2) + (depth % 2 == 1 ? "[]" : "0")
                + String(repeating: "]}", count: depth / 2)
        }
        #expect(try JSONValue(parsing: nested(64)) != .null)
        #expect(refusal(nested(65)) == JSONParseError(offset: 6 * 32, reason: .tooDeep(limit: 64)))
        #expect(try JSONValue(parsing: "[[1]]", maximumDepth: 2) == [[1]])
        #expect(refusal("[[1]]", maximumDepth: 1) == JSONParseError(offset: 1, reason: .tooDeep(limit: 1)))
        #expect(refusal("{}", maximumDepth: 0)?.reason == .tooDeep(limit: 0))
        #expect(try JSONValue(parsing: "1", maximumDepth: 0) == 1)
        // Deep but invalid, and unclosed: refused for depth before the end is reached.
        #expect(refusal(String(repeating: "{\"a\":", count: 100_000))?.reason == .tooDeep(limit: 64))
    }

    @Test func surrogates() throws {
        #expect(try JSONValue(parsing: #""\ud83d\ude00""#) == "😀")
        #expect(try JSONValue(parsing: #""\uD83D\uDE00""#) == "😀")
        for lone in [
            #""\ud800""#, #""\ud800x""#, #""\ud800\u0041""#, #""\ud800\ud800""#, #""\udc00""#, #""\ude00\ud83d""#,
            #""a\udfff""#, #""\ud83d\n""#,
        ] {
            #expect(refusal(lone)?.reason == .loneSurrogate, "\(lone)")
        }
        #expect(refusal(#""ab\ud800""#)?.offset == 3)
        // A high surrogate at the very end of the input.
        #expect(refusal(#""\ud800"#)?.reason == .loneSurrogate)
        #expect(refusal(#""\ud800\u"#)?.reason == .unexpectedEnd)
    }

    @Test func invalidUTF8IsRefusedAtTheFirstBadByte() throws {
        for (bytes, offset) in [
            ([0x22, 0xC3, 0x28, 0x22], 1),  // a lead byte without its continuation
            ([0x22, 0x61, 0xC0, 0xAF, 0x22], 2),  // overlong "/"
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 1),  // a surrogate encoded in UTF-8
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 1),  // beyond U+10FFFF
            ([0x22, 0xE2, 0x82, 0x22], 1),  // truncated before the closing quote
            ([0x22, 0x5C, 0x6E, 0xFF, 0x22], 3),  // after an escape
            ([0x7B, 0x22, 0x80, 0x22, 0x3A, 0x31, 0x7D], 2),  // in a member name
        ] as [([UInt8], Int)] {
            #expect(refusal(bytes) == JSONParseError(offset: offset, reason: .invalidUTF8), "\(bytes)")
        }
        // Outside strings any non-ASCII byte is just unexpected.
        #expect(refusal([0xEF, 0xBB, 0xBF, 0x31])?.reason == .unexpectedCharacter(expected: "a value"))
        #expect(try JSONValue(parsing: [0x22, 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, 0x22]) == "é😀")
    }

    @Test func trailingDataIsRefused() {
        for (text, offset) in [("1 2", 2), ("{} x", 3), ("[1]]", 3), ("nullx", 4), ("\"a\"\"b\"", 3), ("0 ,", 2)] {
            #expect(refusal(text) == JSONParseError(offset: offset, reason: .trailingData), "\(text)")
        }
        #expect(refusal("[1] \u{0}")?.reason == .trailingData)
        #expect(throws: Never.self) { try JSONValue(parsing: " \t\r\n[1] \t\r\n") }
    }

    @Test func eachMistakeHasItsReason() {
        #expect(refusal("") == JSONParseError(offset: 0, reason: .unexpectedEnd))
        #expect(refusal("[1,") == JSONParseError(offset: 3, reason: .unexpectedEnd))
        #expect(refusal(#""abc"#) == JSONParseError(offset: 4, reason: .unexpectedEnd))
        #expect(refusal("[1,]") == JSONParseError(offset: 3, reason: .unexpectedCharacter(expected: "a value")))
        #expect(refusal("{a:1}") == JSONParseError(offset: 1, reason: .unexpectedCharacter(expected: "a member name")))
        #expect(refusal(#"{"a" 1}"#) == JSONParseError(offset: 5, reason: .unexpectedCharacter(expected: "`:`")))
        #expect(refusal("[1 2]") == JSONParseError(offset: 3, reason: .unexpectedCharacter(expected: "`,` or `]`")))
        #expect(refusal("tru") == JSONParseError(offset: 3, reason: .unexpectedEnd))
        #expect(refusal("trux") == JSONParseError(offset: 3, reason: .unexpectedCharacter(expected: "`true`")))
        #expect(refusal("[01]") == JSONParseError(offset: 1, reason: .invalidNumber))
        #expect(refusal("-") == JSONParseError(offset: 0, reason: .unexpectedEnd))
        #expect(refusal("-a") == JSONParseError(offset: 0, reason: .invalidNumber))
        #expect(refusal("1.e5") == JSONParseError(offset: 0, reason: .invalidNumber))
        #expect(refusal("[-1e400]") == JSONParseError(offset: 1, reason: .numberOutOfRange))
        #expect(
            refusal("1" + String(repeating: "0", count: 309)) == JSONParseError(offset: 0, reason: .numberOutOfRange))
        #expect(refusal(#"["a\x"]"#) == JSONParseError(offset: 3, reason: .invalidEscape))
        #expect(refusal(#""\u00G0""#) == JSONParseError(offset: 1, reason: .invalidEscape))
        #expect(refusal("\"a\tb\"") == JSONParseError(offset: 2, reason: .controlCharacter))
        #expect(refusal("\"a\u{7f}b\"") == nil)  // DEL is not a control character to JSON
    }

    @Test func messagesNameThePlaceAndNeverQuoteTheInput() {
        let secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln"
        for text in [
            #"{"authorization":"Bearer \#(secret)","authorization":"x"}"#, #"{"\#(secret)":1,"\#(secret)":2}"#,
            #"["\#(secret)\x"]"#, #""\#(secret)"#, #"[1] "\#(secret)""#, #"{"sig": \#(secret)}"#,
        ] {
            let error = refusal(text)
            #expect(error != nil)
            #expect(error?.description.hasPrefix("invalid JSON at byte ") == true)
            #expect(error?.description.contains("c2Vj") == false, "\(error?.description ?? "")")
        }
        #expect(
            JSONParseError(offset: 12, reason: .duplicateMemberName).description
                == "invalid JSON at byte 12: a member name that the object already has")
    }
}
