import COpenSSL
import Crypto
import FoundationEssentials

// The service side of DPS TPM attestation (docs/protocols.md §1.b): what DPS computes so that only
// the TPM holding an enrolled endorsement key can install an HMAC key.
//
// `authenticationKey` = five TPM2Bs:
//   1–2. TPM2_MakeCredential to the EK, bound to the SRK's name, carrying a random 16-byte
//        "inner wrapper" key (the TPM gives it back only through TPM2_ActivateCredential);
//   3–5. a duplicate of a keyed-hash (HMAC-SHA256) object holding the key, inner-wrapped with
//        that inner key (AES-128-CFB) and outer-wrapped to the SRK (seed by RSA-OAEP, label
//        "DUPLICATE"), and the object's public area.
//
// Crypto: SHA-256 and HMAC from swift-crypto; RSA-OAEP with a label and AES-128-CFB from the
// system OpenSSL (`COpenSSL`), because swift-crypto offers neither an OAEP label nor CFB.

/// An RSA TPM public area (`TPM2B_PUBLIC` contents), as far as wrapping to it needs.
struct TPMPublicKey: Sendable, Equatable {
    /// The marshalled `TPMT_PUBLIC` (without the TPM2B size).
    var publicArea: [UInt8]
    var modulus: [UInt8]
    var exponent: UInt32
    /// The symmetric algorithm of a storage key: `(keyBits, mode)`; only AES is accepted.
    var symmetricKeyBits: Int
    /// The TPM name: nameAlg (SHA-256) || SHA-256(TPMT_PUBLIC).
    var name: [UInt8]

    static let rsa: UInt16 = 0x0001
    static let sha256: UInt16 = 0x000B
    static let aes: UInt16 = 0x0006
    static let cfb: UInt16 = 0x0043
    static let null: UInt16 = 0x0010

    /// Parses a marshalled `TPM2B_PUBLIC` (big-endian UINT16 size, then `TPMT_PUBLIC`) of an
    /// RSA storage key with nameAlg SHA-256 and AES-CFB, as TCG's EK template L-1 and the SRK
    /// template make. Throws `DevHubError(.badRequest)` naming what does not fit.
    init(tpm2bPublic bytes: [UInt8], role: String) throws {
        func fail(_ why: String) -> DevHubError { DevHubError(.badRequest, "the \(role) is not usable: \(why)") }
        var reader = TPMReader(bytes)
        guard let size = reader.u16(), Int(size) == bytes.count - 2 else {
            throw fail("not a TPM2B_PUBLIC (\(bytes.count) bytes; the size prefix disagrees)")
        }
        guard let type = reader.u16(), type == Self.rsa else { throw fail("not an RSA key (only RSA is supported)") }
        guard let nameAlg = reader.u16(), nameAlg == Self.sha256 else { throw fail("nameAlg is not SHA-256") }
        guard reader.u32() != nil, reader.sized() != nil else { throw fail("truncated attributes or policy") }
        guard let symmetric = reader.u16() else { throw fail("truncated parameters") }
        guard symmetric == Self.aes, let keyBits = reader.u16(), let mode = reader.u16(), mode == Self.cfb,
            keyBits == 128
        else { throw fail("its symmetric algorithm is not AES-128-CFB") }
        guard let scheme = reader.u16() else { throw fail("truncated RSA scheme") }
        if scheme != Self.null { _ = reader.u16() }
        guard let rsaBits = reader.u16(), let exponent = reader.u32(), let modulus = reader.sized(),
            modulus.count * 8 == Int(rsaBits), reader.atEnd
        else { throw fail("malformed RSA parameters or modulus") }
        publicArea = Array(bytes.dropFirst(2))
        self.modulus = modulus
        self.exponent = exponent == 0 ? 65537 : exponent
        symmetricKeyBits = Int(keyBits)
        name = [0x00, 0x0B] + Array(SHA256.hash(data: publicArea))
    }

    /// Parses the base64 text DPS receives.
    init(base64 text: String, role: String) throws {
        guard let data = Data(base64Encoded: text) else {
            throw DevHubError(.badRequest, "the \(role) is not base64")
        }
        try self.init(tpm2bPublic: [UInt8](data), role: role)
    }

    /// RSA-OAEP(SHA-256) of `plaintext` to this key with `label` (NUL included by the caller).
    func oaepEncrypt(_ plaintext: [UInt8], label: String) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: modulus.count)
        var outLength = out.count
        var error = [CChar](repeating: 0, count: 256)
        let labelBytes = Array(label.utf8)
        let ok = gh_rsa_oaep_sha256_encrypt(
            modulus, modulus.count, UInt(exponent), labelBytes, labelBytes.count, plaintext, plaintext.count, &out,
            &outLength, &error, error.count)
        guard ok == 1 else {
            throw DevHubError(
                .internalError,
                "RSA-OAEP encryption failed: \(String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))"
            )
        }
        return Array(out.prefix(outLength))
    }
}

/// The wrapping operations a TPM undoes, computed in software.
enum TPMWrap {
    /// KDFa with SHA-256 (TPM 2.0 Part 1, 11.4.10.2): counter-mode HMAC over
    /// `counter || label || 0x00 || contextU || contextV || bits`.
    static func kdfa(_ key: [UInt8], label: String, contextU: [UInt8], contextV: [UInt8] = [], bits: Int) -> [UInt8] {
        var out: [UInt8] = []
        var counter: UInt32 = 1
        let bitsBE = withUnsafeBytes(of: UInt32(bits).bigEndian, Array.init)
        while out.count * 8 < bits {
            let message =
                withUnsafeBytes(of: counter.bigEndian, Array.init) + Array(label.utf8) + [0] + contextU
                + contextV + bitsBE
            out += HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
            counter += 1
        }
        return Array(out.prefix(bits / 8))
    }

    static func aes128CFB(key: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8] {
        precondition(key.count == 16)
        var out = [UInt8](repeating: 0, count: plaintext.count)
        guard gh_aes128_cfb_encrypt(key, plaintext, Int32(plaintext.count), &out) == 1 else {
            throw DevHubError(.internalError, "AES-128-CFB encryption failed")
        }
        return out
    }

    static func hmac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    static func sized(_ bytes: [UInt8]) -> [UInt8] { [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes }

    static func random(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }

    /// TPM2_MakeCredential (TPM 2.0 Part 1, 24.4): `credential` for the object named
    /// `objectName`, activatable only with `endorsementKey`'s private part.
    /// Returns the contents of `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET`.
    static func makeCredential(
        _ credential: [UInt8], objectName: [UInt8], endorsementKey: TPMPublicKey
    ) throws -> (credentialBlob: [UInt8], secret: [UInt8]) {
        let seed = random(32)  // the size of the EK's nameAlg digest
        let secret = try endorsementKey.oaepEncrypt(seed, label: "IDENTITY\0")
        let storageKey = kdfa(seed, label: "STORAGE", contextU: objectName, bits: endorsementKey.symmetricKeyBits)
        let encryptedIdentity = try aes128CFB(key: storageKey, sized(credential))
        let integrityKey = kdfa(seed, label: "INTEGRITY", contextU: [], bits: 256)
        let integrity = hmac(integrityKey, encryptedIdentity + objectName)
        return (sized(integrity) + encryptedIdentity, secret)
    }

    /// The duplicate of a keyed-hash HMAC-SHA256 object holding `hmacKey` (TPM 2.0 Part 1,
    /// 23.3): inner wrapper with `innerKey` (AES-128-CFB, integrity SHA-256), outer wrapper to
    /// `parent`. The object has userWithAuth | noDA | sign and no fixedTPM/fixedParent (a
    /// duplicated object cannot). Returns `TPM2B_PRIVATE`, `TPM2B_ENCRYPTED_SECRET` and
    /// `TPM2B_PUBLIC` contents.
    static func duplicate(hmacKey: [UInt8], innerKey: [UInt8], parent: TPMPublicKey) throws -> (
        duplicate: [UInt8], encryptedSeed: [UInt8], publicArea: [UInt8]
    ) {
        let obfuscation = random(32)
        // type keyedHash, nameAlg SHA-256, attributes, empty authPolicy, scheme HMAC(SHA-256),
        // unique = SHA-256(seedValue || key).
        var objectPublic: [UInt8] = [
            0x00, 0x08, 0x00, 0x0B, 0x00, 0x04, 0x04, 0x40, 0x00, 0x00, 0x00, 0x05, 0x00, 0x0B,
        ]
        objectPublic += sized(Array(SHA256.hash(data: obfuscation + hmacKey)))
        let name: [UInt8] = [0x00, 0x0B] + Array(SHA256.hash(data: objectPublic))
        // TPM2B_SENSITIVE: keyedHash, empty authValue, seedValue, the key.
        let sensitive = sized([0x00, 0x08] + sized([]) + sized(obfuscation) + sized(hmacKey))
        let innerIntegrity = Array(SHA256.hash(data: sensitive + name))
        let inner = try aes128CFB(key: innerKey, sized(innerIntegrity) + sensitive)
        let seed = random(32)
        let encryptedSeed = try parent.oaepEncrypt(seed, label: "DUPLICATE\0")
        let storageKey = kdfa(seed, label: "STORAGE", contextU: name, bits: parent.symmetricKeyBits)
        let integrityKey = kdfa(seed, label: "INTEGRITY", contextU: [], bits: 256)
        let outer = try aes128CFB(key: storageKey, inner)
        let outerHMAC = hmac(integrityKey, outer + name)
        return (sized(outerHMAC) + outer, encryptedSeed, objectPublic)
    }

    /// A complete DPS `authenticationKey` (before base64) that installs `hmacKey` in the TPM of
    /// `endorsementKey` under `storageRootKey`.
    static func authenticationKey(
        hmacKey: [UInt8], endorsementKey: TPMPublicKey, storageRootKey: TPMPublicKey
    ) throws -> [UInt8] {
        let innerKey = random(16)
        let credential = try makeCredential(
            innerKey, objectName: storageRootKey.name, endorsementKey: endorsementKey)
        let wrapped = try duplicate(hmacKey: hmacKey, innerKey: innerKey, parent: storageRootKey)
        return sized(credential.credentialBlob) + sized(credential.secret) + sized(wrapped.duplicate)
            + sized(wrapped.encryptedSeed) + sized(wrapped.publicArea)
    }
}

/// Big-endian reads over TPM marshalling.
struct TPMReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { offset == bytes.count }

    mutating func u16() -> UInt16? {
        guard bytes.count - offset >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func u32() -> UInt32? {
        guard let high = u16(), let low = u16() else { return nil }
        return UInt32(high) << 16 | UInt32(low)
    }

    mutating func sized() -> [UInt8]? {
        guard let size = u16().map(Int.init), bytes.count - offset >= size else { return nil }
        defer { offset += size }
        return Array(bytes[offset..<offset + size])
    }
}
