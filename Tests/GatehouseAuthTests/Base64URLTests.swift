import Foundation
import Testing

@testable import GatehouseAuth

@Suite("base64url and bearer parsing")
struct Base64URLTests {
    @Test("decodes what Foundation encodes, for 2,000 random inputs of every length class")
    func roundTrip() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<2000 {
            let bytes = (0..<(length % 97)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let encoded = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(Base64URL.decode(encoded[...]) == Data(bytes), "\(encoded)")
        }
    }

    @Test("refuses padding, the standard alphabet, impossible lengths and non-canonical tails")
    func strict() {
        for bad in ["QQ==", "a+b/", "A", "AAAAA", "QR", "QUJ", "QUI", "Q U", "Zm9v\n"] {
            let expected: Data? = bad == "QUI" ? Data("AB".utf8) : nil
            #expect(Base64URL.decode(bad[...]) == expected, "\(bad)")
        }
        #expect(Base64URL.decode("QQ"[...]) == Data("A".utf8))
    }

    @Test("Bearer tokens: scheme in any case, surrounding blanks, nothing else")
    func bearer() {
        #expect(TokenVerifier.bearerToken(fromAuthorization: "Bearer abc.def.ghi") == "abc.def.ghi")
        #expect(TokenVerifier.bearerToken(fromAuthorization: "  bEaReR \t abc  ") == "abc")
        for bad in ["Bearer", "Bearer ", "Basic abc", "Bearerabc", "", "   ", "Bear abc", "Béarer abc"] {
            #expect(TokenVerifier.bearerToken(fromAuthorization: bad) == nil, "\(bad)")
        }
    }
}
