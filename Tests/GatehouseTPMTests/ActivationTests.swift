import Foundation
import GatehouseTestSupport
import Testing

@testable import GatehouseTPM

/// DPS TPM attestation's device side, with the service side computed offline by
/// `tpm2_makecredential --tcti none` and (for the duplicate) openssl.
@Suite(.enabled(if: SoftwareTPM.isAvailable, "needs swtpm, tpm2-tools and openssl (scripts/setup)"))
struct ActivationTests {
    /// The EK public and SRK name of a fresh TPM, and an open context.
    struct Fixture {
        let tpm: SoftwareTPM
        let context: TPMContext
        let endorsementKeyFile: String
        let storageRootKeyName: Data

        init() throws {
            tpm = try SoftwareTPM()
            context = try TPMContext(tcti: tpm.tcti)
            endorsementKeyFile = tpm.dir.file("ek.pub")
            try context.endorsementKeyPublic().write(to: URL(fileURLWithPath: endorsementKeyFile))
            storageRootKeyName = try context.storageRootKeyName()
        }

        /// `tpm2_makecredential --tcti none`: (credentialBlob, secret) contents, from its file
        /// (magic, version, then TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET).
        func makeCredential(secret: [UInt8], name: Data? = nil) throws -> (Data, Data) {
            let secretFile = tpm.dir.file("secret.bin")
            let output = tpm.dir.file("cred.out")
            try Data(secret).write(to: URL(fileURLWithPath: secretFile))
            try tpm.tool(
                "tpm2_makecredential",
                [
                    "--tcti", "none", "-u", endorsementKeyFile, "-s", secretFile, "-n", hex(name ?? storageRootKeyName),
                    "-o", output,
                ], tcti: false)
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
            #expect(Array(bytes[0..<4]) == [0xBA, 0xDC, 0xC0, 0xDE])
            var offset = 8
            func next() -> Data {
                let size = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
                defer { offset += 2 + size }
                return Data(bytes[offset + 2..<offset + 2 + size])
            }
            return (next(), next())
        }
    }

    @Test func activationRecoversTheSecretOfTPM2MakeCredential() throws {
        let fixture = try Fixture()
        let secret = randomBytes(32)
        let (credential, encryptedSecret) = try fixture.makeCredential(secret: secret)
        let recovered = try fixture.context.activateCredential(credentialBlob: credential, secret: encryptedSecret)
        #expect([UInt8](recovered) == secret)
        #expect(try fixture.context.loadedHandleCount() == 0)
    }

    @Test func tamperedCredentialIsRefused() throws {
        let fixture = try Fixture()
        let (credential, encryptedSecret) = try fixture.makeCredential(secret: randomBytes(32))

        var alteredCredential = [UInt8](credential)
        alteredCredential[alteredCredential.count - 1] ^= 0x01
        let error = try #require(throws: TPMError.self) {
            try fixture.context.activateCredential(credentialBlob: Data(alteredCredential), secret: encryptedSecret)
        }
        #expect(error.operation == "Esys_ActivateCredential")
        #expect(error.code ~= .integrity)
        #expect(
            error.description.contains("the credential was altered, or was not made for this TPM's EK and SRK name"))

        var alteredSecret = [UInt8](encryptedSecret)
        alteredSecret[10] ^= 0x80
        #expect(throws: TPMError.self) {
            try fixture.context.activateCredential(credentialBlob: credential, secret: Data(alteredSecret))
        }

        // Bound to another object's name: the TPM refuses it for the SRK.
        let (other, otherSecret) = try fixture.makeCredential(
            secret: randomBytes(32), name: Data([0x00, 0x0B] + randomBytes(32)))
        #expect(throws: TPMError.self) {
            try fixture.context.activateCredential(credentialBlob: other, secret: otherSecret)
        }
        #expect(try fixture.context.loadedHandleCount() == 0)
        // And the TPM still works.
        let (good, goodSecret) = try fixture.makeCredential(secret: [1, 2, 3])
        #expect(try fixture.context.activateCredential(credentialBlob: good, secret: goodSecret) == Data([1, 2, 3]))
    }

    @Test func authenticationKeyIsImportedPersistedAndSigns() throws {
        let fixture = try Fixture()
        let hmacKey = randomBytes(32)
        let innerKey = randomBytes(16)
        let (credential, encryptedSecret) = try fixture.makeCredential(secret: innerKey)
        let (duplicate, publicArea) = try Duplicate.innerWrapped(hmacKey: hmacKey, innerKey: innerKey)
        let blob = AuthenticationKeyBlob(
            credentialBlob: credential, secret: encryptedSecret, duplicate: duplicate, encryptedSeed: Data(),
            publicArea: publicArea)
        // Through the wire form DPS uses (base64 of the five TPM2Bs).
        let parsed = try AuthenticationKeyBlob(base64: blob.encoded.base64EncodedString())
        #expect(parsed == blob)

        let wrapped = try fixture.context.importAuthenticationKey(parsed)
        #expect(try fixture.context.persistentHandles().contains(TPMContext.authenticationKeyHandle))
        let sr = "0ne00000001%2Fregistrations%2Fgateway-1\n1700000000"
        let expected = try OpenSSL.hmac(key: hmacKey, message: Array(sr.utf8))
        #expect(
            [UInt8](try fixture.context.hmac(persistentKey: TPMContext.authenticationKeyHandle, Data(sr.utf8)))
                == expected)
        #expect([UInt8](try fixture.context.hmac(wrapped, Data(sr.utf8))) == expected)
        let token = try SharedAccessSignature.make(
            resource: "0ne00000001/registrations/gateway-1", expiry: 1_700_000_000, policyName: "registration",
            context: fixture.context)
        #expect(token.hasSuffix("&se=1700000000&skn=registration"))
        #expect(token.contains("sig=\(SharedAccessSignature.percentEncode(Data(expected).base64EncodedString()))"))

        // A second blob (DPS sends one again in the assigned registration state) replaces it.
        let secondKey = randomBytes(32)
        let (credential2, secret2) = try fixture.makeCredential(secret: innerKey)
        let (duplicate2, public2) = try Duplicate.innerWrapped(hmacKey: secondKey, innerKey: innerKey)
        try fixture.context.importAuthenticationKey(
            AuthenticationKeyBlob(
                credentialBlob: credential2, secret: secret2, duplicate: duplicate2, encryptedSeed: Data(),
                publicArea: public2))
        #expect(
            [UInt8](try fixture.context.hmac(persistentKey: TPMContext.authenticationKeyHandle, Data("x".utf8)))
                == (try OpenSSL.hmac(key: secondKey, message: [0x78])))
        #expect(try fixture.context.persistentHandles().count == 3)
        #expect(try fixture.context.loadedHandleCount() == 0)
    }

    @Test func tamperedDuplicateIsRefused() throws {
        let fixture = try Fixture()
        let innerKey = randomBytes(16)
        let (credential, encryptedSecret) = try fixture.makeCredential(secret: innerKey)
        let (duplicate, publicArea) = try Duplicate.innerWrapped(hmacKey: randomBytes(32), innerKey: innerKey)
        var altered = [UInt8](duplicate)
        altered[40] ^= 0x01
        let error = try #require(throws: TPMError.self) {
            try fixture.context.importAuthenticationKey(
                AuthenticationKeyBlob(
                    credentialBlob: credential, secret: encryptedSecret, duplicate: Data(altered),
                    encryptedSeed: Data(),
                    publicArea: publicArea))
        }
        #expect(error.operation == "Esys_Import")
        #expect(error.code ~= .integrity)
        #expect(!(try fixture.context.persistentHandles().contains(TPMContext.authenticationKeyHandle)))
        #expect(try fixture.context.loadedHandleCount() == 0)
    }
}

/// The service side of TPM2_Import, built here with openssl: a keyed-hash HMAC key in a
/// duplicate with an inner wrapper (AES-128-CFB with `innerKey`, zero IV) and no outer wrapper
/// (TPM 2.0 Part 1, "Inner Duplication Wrapper"; allowed when encryptedDuplication is clear).
enum Duplicate {
    /// Returns (TPM2B_PRIVATE contents, TPM2B_PUBLIC contents).
    static func innerWrapped(hmacKey: [UInt8], innerKey: [UInt8]) throws -> (Data, Data) {
        let seed = randomBytes(32)
        // TPMT_PUBLIC: keyedHash, SHA-256, userWithAuth | noDA | sign (not fixedTPM/fixedParent:
        // a duplicated object cannot have them), empty policy, HMAC-SHA256,
        // unique = SHA-256(seed || key).
        var publicArea: [UInt8] = [0x00, 0x08, 0x00, 0x0B, 0x00, 0x04, 0x04, 0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0B]
        publicArea += sized(try OpenSSL.sha256(seed + hmacKey))
        let name: [UInt8] = [0x00, 0x0B] + (try OpenSSL.sha256(publicArea))
        // TPM2B_SENSITIVE: keyedHash, empty authValue, seedValue, the key.
        let sensitive = sized([0x00, 0x08] + sized([]) + sized(seed) + sized(hmacKey))
        let integrity = try OpenSSL.sha256(sensitive + name)
        let encrypted = try OpenSSL.aes128CFB(key: innerKey, sized(integrity) + sensitive)
        return (Data(encrypted), Data(publicArea))
    }

    static func sized(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes }
}
