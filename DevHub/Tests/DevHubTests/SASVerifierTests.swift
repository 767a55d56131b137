import Crypto
import Foundation
import IoTHubWire
import Testing

@testable import DevHubKit

@Suite struct SASVerifierTests {
    let key = Array(repeating: UInt8(7), count: 32)
    let resource = "myhub.example/devices/dev-1"
    let future: Int64 = 4_102_444_800

    /// Signs `sr` exactly as given, the way each SDK variant does (docs/protocols.md §0).
    func token(
        sr: String, expiry: Int64, key: [UInt8], skn: String? = nil, fieldsReversed: Bool = false
    ) -> String {
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data("\(sr)\n\(expiry)".utf8), using: SymmetricKey(data: key))
        let sig = PropertyBag.percentEncode(Data(mac).base64EncodedString())
        var fields = ["sr=\(sr)", "sig=\(sig)", "se=\(expiry)"]
        if let skn { fields.append("skn=\(skn)") }
        if fieldsReversed { fields.reverse() }
        return "SharedAccessSignature " + fields.joined(separator: "&")
    }

    func verify(_ text: String, keys: [[UInt8]]? = nil, names: Set<String> = [""]) -> SASVerdict? {
        guard let parsed = SASToken(text) else { return nil }
        return SASVerifier.verify(
            parsed, expectedResource: resource, keys: keys ?? [key], allowedKeyNames: names)
    }

    @Test(arguments: [
        "myhub.example%2Fdevices%2Fdev-1",  // documented form and the Python SDK's
        "myhub.example/devices/dev-1",  // the C SDK: not encoded
        "myhub.example%2fdevices%2fdev-1",  // lowercase escapes
        "MYHUB.example%2Fdevices%2FDEV-1",  // case differs from the identity
    ])
    func acceptsEveryResourceEncoding(sr: String) {
        #expect(verify(token(sr: sr, expiry: future, key: key)) == .valid)
    }

    @Test func fieldOrderDoesNotMatterAndEmptySknIsAllowed() {
        #expect(
            verify(token(sr: resource, expiry: future, key: key, skn: "", fieldsReversed: true)) == .valid
        )
    }

    @Test func signatureOverTheEncodedFormDoesNotVerifyTheDecodedOne() {
        // The device signed "a/b" but sent "a%2Fb": the signature is over what was sent.
        let signedDecoded = token(sr: resource, expiry: future, key: key)
        let tampered = signedDecoded.replacingOccurrences(
            of: "sr=\(resource)", with: "sr=myhub.example%2Fdevices%2Fdev-1")
        #expect(verify(tampered) == .badSignature)
    }

    @Test func refusesWrongKeyWrongResourceExpiryAndPolicy() {
        let wrongKey = Array(repeating: UInt8(8), count: 32)
        #expect(verify(token(sr: resource, expiry: future, key: wrongKey)) == .badSignature)
        #expect(verify(token(sr: resource, expiry: future, key: key), keys: [wrongKey, key]) == .valid)
        #expect(
            verify(token(sr: "myhub.example/devices/dev-2", expiry: future, key: key))
                == .wrongResource("myhub.example/devices/dev-2"))
        // Segment prefixes do not count for a device identity.
        #expect(verify(token(sr: "myhub.example/devices/dev-1x", expiry: future, key: key)) != .valid)
        if case .expired = verify(token(sr: resource, expiry: 1_000, key: key)) {
        } else {
            Issue.record("an expired token was not refused as expired")
        }
        #expect(
            verify(token(sr: resource, expiry: future, key: key, skn: "iothubowner"))
                == .wrongKeyName("iothubowner"))
        #expect(
            verify(
                token(sr: resource, expiry: future, key: key, skn: "registration"),
                names: ["", "registration"])
                == .valid)
    }

    @Test(arguments: [
        "", "SharedAccessSignature", "sr=a&sig=b&se=1", "SharedAccessSignature sr=a&se=1",
        "SharedAccessSignature sr=a&sig=AAAA&se=1",  // not a 32-byte MAC
        "SharedAccessSignature sr=a&sig=\(String(repeating: "A", count: 43))%3D&se=x",
        "SharedAccessSignature sr=a&sr=b&sig=\(String(repeating: "A", count: 43))%3D&se=1",
        "SharedAccessSignature sr=a&sig=\(String(repeating: "A", count: 43))%3D&se=1&junk",
    ])
    func rejectsMalformedTokens(text: String) {
        #expect(SASToken(text) == nil)
    }

    @Test func makeTokenMatchesTheVerifierAndDescriptionHidesTheSignature() throws {
        let text = SASVerifier.makeToken(resource: resource, key: key, expiry: future)
        let parsed = try #require(SASToken(text))
        #expect(SASVerifier.verify(parsed, expectedResource: resource, keys: [key]) == .valid)
        let signature = text.components(separatedBy: "sig=")[1].components(separatedBy: "&")[0]
        #expect(!parsed.description.contains(signature))
        #expect(!"\(SymmetricKeyText(bytes: key))".contains(SymmetricKeyText(bytes: key).base64))
    }

    @Test func derivedKeyMatchesTheDocumentedRecipe() {
        // openssl-free check: HMAC-SHA256(base64decode(group key), registration id), docs/protocols.md §1.a.
        let group = SymmetricKeyText(base64: "AMZSwsi00cXEeHP3ZiEijVdeAM6hvLFfExU+cg4J37E=")!
        let derived = SASVerifier.deriveDeviceKey(groupKey: group.bytes, registrationID: "sdk-dev-1")
        let expected = HMAC<SHA256>.authenticationCode(
            for: Data("sdk-dev-1".utf8), using: SymmetricKey(data: group.bytes))
        #expect(derived == Array(expected))
        #expect(derived.count == 32)
    }
}
