import Foundation
import GatehouseAuth
import Testing

@Suite("Strict JSON for headers and claims")
struct StrictJSONTests {
    @Test(
        "valid documents parse as Foundation's decoder reads them",
        arguments: [
            #"{}"#, #"[]"#, #" {"a" : [1, -2.5, 3e2, 0, -0.5e-1, true, false, null, "x"], "b": {"c": {}}} "#,
            #"{"s": "\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00 é"}"#, #""plain""#, #"12345678901234"#,
        ])
    func valid(_ text: String) throws {
        let data = Data(text.utf8)
        #expect(try JSONValue(parsingStrict: data) == JSONDecoder().decode(JSONValue.self, from: data))
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
        #expect(throws: (any Error).self) { try JSONValue(parsingStrict: Data(text.utf8)) }
    }

    @Test("numbers Foundation's decoder refuses but RFC 8259 allows")
    func numbers() throws {
        #expect(try JSONValue(parsingStrict: Data("[-0.0e-1, 1E+2]".utf8)) == [-0.0, 100])
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        #expect(throws: (any Error).self) { try JSONValue(parsingStrict: Data([0x22, 0xC3, 0x28, 0x22])) }
    }
}
