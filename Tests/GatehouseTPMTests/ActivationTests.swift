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

        /// The SRK public key as PEM, written by tpm2_readpublic (for the outer wrapper).
        let storageRootKeyPEM: String

        init() throws {
            tpm = try SoftwareTPM()
            let first = try TPMContext(tcti: tpm.tcti)
            endorsementKeyFile = tpm.dir.file("ek.pub")
            try first.endorsementKeyPublic().write(to: URL(fileURLWithPath: endorsementKeyFile))
            storageRootKeyName = try first.storageRootKeyName()
            first.close()  // swtpm serves one client: let tpm2-tools in
            storageRootKeyPEM = tpm.dir.file("srk.pem")
            try tpm.tool("tpm2_readpublic", ["-c", "0x81000001", "-f", "pem", "-o", storageRootKeyPEM])
            context = try TPMContext(tcti: tpm.tcti)
        }

        /// A complete `authenticationKey` for `hmacKey`, as the service would build it.
        func authenticationKey(hmacKey: [UInt8], outerWrapper: Bool) throws -> AuthenticationKeyBlob {
            let innerKey = randomBytes(16)
            let (credential, encryptedSecret) = try makeCredential(secret: innerKey)
            let duplicate = try Duplicate(
                hmacKey: hmacKey, innerKey: innerKey, parentPEM: outerWrapper ? storageRootKeyPEM : nil)
            return AuthenticationKeyBlob(
                credentialBlob: credential, secret: encryptedSecret, duplicate: duplicate.duplicate,
                encryptedSeed: duplicate.encryptedSeed, publicArea: duplicate.publicArea)
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

    @Test(arguments: [true, false])
    func authenticationKeyIsImportedPersistedAndSigns(outerWrapper: Bool) throws {
        let fixture = try Fixture()
        let hmacKey = randomBytes(32)
        let blob = try fixture.authenticationKey(hmacKey: hmacKey, outerWrapper: outerWrapper)
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
        try fixture.context.importAuthenticationKey(
            try fixture.authenticationKey(hmacKey: secondKey, outerWrapper: outerWrapper))
        #expect(
            [UInt8](try fixture.context.hmac(persistentKey: TPMContext.authenticationKeyHandle, Data("x".utf8)))
                == (try OpenSSL.hmac(key: secondKey, message: [0x78])))
        #expect(try fixture.context.persistentHandles().count == 3)
        #expect(try fixture.context.loadedHandleCount() == 0)
    }

    @Test(arguments: [true, false])
    func tamperedDuplicateIsRefused(outerWrapper: Bool) throws {
        let fixture = try Fixture()
        let blob = try fixture.authenticationKey(hmacKey: randomBytes(32), outerWrapper: outerWrapper)
        for index in [3, 40, blob.duplicate.count - 1] {  // outer HMAC, inner integrity, key bytes
            var altered = blob
            var bytes = [UInt8](blob.duplicate)
            bytes[index] ^= 0x01
            altered.duplicate = Data(bytes)
            let error = try #require(throws: TPMError.self) { try fixture.context.importAuthenticationKey(altered) }
            #expect(error.operation == "Esys_Import")
            #expect(error.code ~= .integrity)
        }
        if outerWrapper {
            var altered = blob
            altered.encryptedSeed = Data(blob.encryptedSeed.reversed())
            let error = try #require(throws: TPMError.self) { try fixture.context.importAuthenticationKey(altered) }
            #expect(error.operation == "Esys_Import")
        }
        #expect(!(try fixture.context.persistentHandles().contains(TPMContext.authenticationKeyHandle)))
        #expect(try fixture.context.loadedHandleCount() == 0)
        // The untouched blob still imports.
        try fixture.context.importAuthenticationKey(blob)
    }
}

/// The service side of TPM2_Import, built here with openssl (TPM 2.0 Part 1, "Duplication"):
/// a keyed-hash HMAC key in an inner wrapper (AES-128-CFB with `innerKey`, zero IV, integrity
/// SHA-256) and, with `parentPEM`, an outer wrapper to the SRK (a seed encrypted with RSA-OAEP,
/// label "DUPLICATE", from which KDFa derives the AES-128-CFB key ("STORAGE") and the HMAC key
/// ("INTEGRITY")). Without the outer wrapper the seed is empty, which TPM2_Import allows when
/// encryptedDuplication is clear.
struct Duplicate {
    var duplicate: Data
    var encryptedSeed: Data
    var publicArea: Data

    init(hmacKey: [UInt8], innerKey: [UInt8], parentPEM: String?) throws {
        let obfuscation = randomBytes(32)
        // TPMT_PUBLIC: keyedHash, SHA-256, userWithAuth | noDA | sign (not fixedTPM/fixedParent:
        // a duplicated object cannot have them), empty policy, HMAC-SHA256,
        // unique = SHA-256(seedValue || key).
        var objectPublic: [UInt8] = [
            0x00, 0x08, 0x00, 0x0B, 0x00, 0x04, 0x04, 0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0B,
        ]
        objectPublic += Self.sized(try OpenSSL.sha256(obfuscation + hmacKey))
        let name: [UInt8] = [0x00, 0x0B] + (try OpenSSL.sha256(objectPublic))
        // TPM2B_SENSITIVE: keyedHash, empty authValue, seedValue, the key.
        let sensitive = Self.sized([0x00, 0x08] + Self.sized([]) + Self.sized(obfuscation) + Self.sized(hmacKey))
        let innerIntegrity = try OpenSSL.sha256(sensitive + name)
        let inner = try OpenSSL.aes128CFB(key: innerKey, Self.sized(innerIntegrity) + sensitive)
        publicArea = Data(objectPublic)
        guard let parentPEM else {
            duplicate = Data(inner)
            encryptedSeed = Data()
            return
        }
        let seed = randomBytes(32)
        encryptedSeed = Data(try OpenSSL.rsaOAEP(publicKeyPEM: parentPEM, seed, label: Array("DUPLICATE\0".utf8)))
        let storageKey = Array(try Self.kdfa(seed, label: "STORAGE", contextU: name, bits: 128))
        let integrityKey = try Self.kdfa(seed, label: "INTEGRITY", contextU: [], bits: 256)
        let outer = try OpenSSL.aes128CFB(key: storageKey, inner)
        let outerHMAC = try OpenSSL.hmac(key: integrityKey, message: outer + name)
        duplicate = Data(Self.sized(outerHMAC) + outer)
    }

    /// KDFa with SHA-256 (TPM 2.0 Part 1, 11.4.10.2), for up to 256 bits (one HMAC).
    static func kdfa(_ key: [UInt8], label: String, contextU: [UInt8], bits: Int) throws -> [UInt8] {
        let bitsBE: [UInt8] = [
            UInt8(bits >> 24 & 0xFF), UInt8(bits >> 16 & 0xFF), UInt8(bits >> 8 & 0xFF), UInt8(bits & 0xFF),
        ]
        let block = try OpenSSL.hmac(key: key, message: [0, 0, 0, 1] + Array(label.utf8) + [0] + contextU + bitsBE)
        return Array(block.prefix(bits / 8))
    }

    static func sized(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes }
}
