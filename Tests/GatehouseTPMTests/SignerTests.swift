import Foundation
import GatehouseTestSupport
import Testing

@testable import GatehouseTPM

@Suite(.enabled(if: SoftwareTPM.isAvailable, "needs swtpm, tpm2-tools and openssl (scripts/setup)"))
struct TPMSignerTests {
    @Test func deviceTokensAreSignedWithKeysDerivedInTheTPM() throws {
        let tpm = try SoftwareTPM()
        let context = try TPMContext(tcti: tpm.tcti)
        let groupKey = randomBytes(64)
        let signer = TPMSigner(context: context, groupKey: try context.importHMACKey(groupKey))
        let ids = (0..<20).map { "leaf-\($0)" }
        try signer.derive(ids)
        #expect(signer.count == 20)

        let deviceKey = try OpenSSL.hmac(key: groupKey, message: Array("leaf-7".utf8))
        let token = try signer.sasToken(
            registrationID: "leaf-7", resource: "Hub.Example.net/devices/leaf-7", expiry: 1_700_000_123)
        let signature = try OpenSSL.hmac(
            key: deviceKey, message: Array("hub.example.net%2Fdevices%2Fleaf-7\n1700000123".utf8))
        #expect(
            token == "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fleaf-7&sig="
                + SharedAccessSignature.percentEncode(Data(signature).base64EncodedString()) + "&se=1700000123")

        // DPS registration tokens use the same key.
        let dps = try signer.sasToken(
            registrationID: "leaf-7", resource: "0ne00000001/registrations/leaf-7", expiry: 5,
            policyName: "registration")
        #expect(dps.hasPrefix("SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fleaf-7&sig="))
        #expect(dps.hasSuffix("&se=5&skn=registration"))

        // A device's key signs only its own resources.
        #expect(throws: TPMError.self) {
            try signer.sasToken(registrationID: "leaf-7", resource: "hub.example.net/devices/leaf-8", expiry: 1)
        }
        // Derived on demand, forgotten on request.
        #expect(
            [UInt8](try signer.mac(registrationID: "late", Data("m".utf8)))
                == (try OpenSSL.hmac(key: try OpenSSL.hmac(key: groupKey, message: Array("late".utf8)), message: [0x6D]))
        )
        signer.forget("late")
        #expect(!signer.hasKey(for: "late"))
        #expect(try context.loadedHandleCount() == 0)
    }
}

/// Parsing and formatting that need no TPM.
struct TPMFormatTests {
    @Test func authenticationKeyBlobRoundTripsAndToleratesTrailingBytes() throws {
        let blob = AuthenticationKeyBlob(
            credentialBlob: Data([1, 2, 3]), secret: Data(repeating: 4, count: 256), duplicate: Data([5]),
            encryptedSeed: Data(), publicArea: Data([6, 7]))
        #expect(try AuthenticationKeyBlob(blob.encoded) == blob)
        #expect(try AuthenticationKeyBlob(blob.encoded + Data([0, 2, 9, 9])) == blob)
    }

    @Test func truncatedAuthenticationKeyNamesTheItem() throws {
        let blob = AuthenticationKeyBlob(
            credentialBlob: Data([1, 2, 3]), secret: Data([4]), duplicate: Data([5, 5, 5, 5]), encryptedSeed: Data(),
            publicArea: Data([6, 7]))
        let encoded = blob.encoded
        let error = try #require(throws: TPMError.self) { try AuthenticationKeyBlob(encoded.prefix(12)) }
        #expect(error.code == .malformedBlob)
        #expect(error.message == "item 3 of 5, duplicate (TPM2B_PRIVATE), claims 4 bytes but 2 remain")
        #expect(throws: TPMError.self) { try AuthenticationKeyBlob(base64: "not base64!") }
        #expect(throws: TPMError.self) { try AuthenticationKeyBlob(Data([0, 0])) }
    }

    @Test func returnCodesMatchTheirFamily() {
        let integrityOfParameter1 = TPMError.Code(rawValue: 0x1DF)
        #expect(integrityOfParameter1 ~= .integrity)
        #expect(!(integrityOfParameter1 ~= .policyFail))
        #expect(TPMError.Code.tctiIOError ~= .tctiLayer)
        #expect(!(TPMError.Code.integrity ~= .tctiLayer))
        #expect(TPMError.Code(rawValue: 0x902) ~= .objectMemory)
        let error = TPMError(rc: 0x902, operation: "Esys_Load")
        #expect(error.description == "Esys_Load failed: tpm:warn(2.0): out of memory for object contexts (0x00000902)")
    }

    @Test func defaultRegistrationIDIsBase32OfTheEKDigest() throws {
        // SHA-256("abc") = ba7816bf…; RFC 4648 base32, lowercase, no padding.
        #expect(
            TPMContext.defaultRegistrationID(endorsementKey: Data("abc".utf8))
                == "xj4bnp4pahh6uqkbidpf3lrceoyagyndsylxvhfucd7wd4qacwwq")
    }

    @Test func percentEncodingMatchesTheDocumentedForm() {
        #expect(SharedAccessSignature.percentEncode("a/b+c=d e~$") == "a%2Fb%2Bc%3Dd%20e~$")
    }
}
