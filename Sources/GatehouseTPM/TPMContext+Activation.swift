import CTSS2
import FoundationEssentials
import GatehouseBasics

/// The `authenticationKey` blob of DPS TPM attestation (docs/protocols.md §1.b), base64-decoded:
/// five consecutive TPM2B structures, each a big-endian UINT16 size and that many bytes.
///
/// | # | TPM type | Role |
/// |---|---|---|
/// | 1 | `TPM2B_ID_OBJECT` | credentialBlob (the service's MakeCredential to the EK) |
/// | 2 | `TPM2B_ENCRYPTED_SECRET` | secret (the seed encrypted to the EK) |
/// | 3 | `TPM2B_PRIVATE` | duplicate (the wrapped HMAC key) |
/// | 4 | `TPM2B_ENCRYPTED_SECRET` | inSymSeed (the import seed encrypted to the SRK) |
/// | 5 | `TPM2B_PUBLIC` | objectPublic of the HMAC key |
///
/// Trailing bytes (the C SDK's optional encrypted data) are ignored. Each property holds the
/// structure's contents without its size prefix.
public struct AuthenticationKeyBlob: Sendable, Hashable {
    public var credentialBlob: Data
    public var secret: Data
    public var duplicate: Data
    public var encryptedSeed: Data
    public var publicArea: Data

    public init(credentialBlob: Data, secret: Data, duplicate: Data, encryptedSeed: Data, publicArea: Data) {
        self.credentialBlob = credentialBlob
        self.secret = secret
        self.duplicate = duplicate
        self.encryptedSeed = encryptedSeed
        self.publicArea = publicArea
    }

    static let items = [
        "credentialBlob (TPM2B_ID_OBJECT)", "secret (TPM2B_ENCRYPTED_SECRET)", "duplicate (TPM2B_PRIVATE)",
        "encrypted seed (TPM2B_ENCRYPTED_SECRET)", "key public (TPM2B_PUBLIC)",
    ]

    /// Parses the decoded blob.
    public init(_ blob: Data) throws(TPMError) {
        let bytes = [UInt8](blob)
        var offset = 0
        var fields: [Data] = []
        for (index, item) in Self.items.enumerated() {
            guard bytes.count - offset >= 2 else {
                throw TPMError(
                    code: .malformedBlob, operation: "parse authenticationKey",
                    message: "the blob ends (\(bytes.count) bytes) before item \(index + 1) of 5, \(item)")
            }
            let size = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            offset += 2
            guard size > 0 || index == 3, bytes.count - offset >= size else {
                throw TPMError(
                    code: .malformedBlob, operation: "parse authenticationKey",
                    message: size == 0
                        ? "item \(index + 1) of 5, \(item), is empty"
                        : "item \(index + 1) of 5, \(item), claims \(size) bytes but \(bytes.count - offset) remain")
            }
            fields.append(Data(bytes[offset..<offset + size]))
            offset += size
        }
        self.init(
            credentialBlob: fields[0], secret: fields[1], duplicate: fields[2], encryptedSeed: fields[3],
            publicArea: fields[4])
    }

    /// Parses the base64 text of DPS's `authenticationKey` field.
    public init(base64 text: String) throws(TPMError) {
        guard let data = Data(base64Encoded: text.trimmingWhitespace) else {
            throw TPMError(
                code: .malformedBlob, operation: "parse authenticationKey", message: "the text is not base64")
        }
        try self.init(data)
    }

    /// The wire form: the five structures, each with its UINT16 size.
    public var encoded: Data {
        var out = Data()
        for field in [credentialBlob, secret, duplicate, encryptedSeed, publicArea] {
            out.append(UInt8(field.count >> 8))
            out.append(UInt8(field.count & 0xFF))
            out.append(field)
        }
        return out
    }
}

/// DPS TPM attestation: ActivateCredential with the EK, then Import of the duplicated key.
extension TPMContext {
    /// Installs the HMAC key DPS sends in `authenticationKey` (aziot-tpmd's `import_auth_key`):
    ///
    /// 1. a policy session satisfying the EK's PolicySecret(endorsement);
    /// 2. `TPM2_ActivateCredential` (activate = SRK, key = EK) recovers the inner wrapper key;
    /// 3. `TPM2_Import` of the duplicate under the SRK with that key (AES-128-CFB);
    /// 4. `TPM2_Load`, and, with `persistAt`, `TPM2_EvictControl` to that handle (what was
    ///    there is evicted first), so `hmac(persistentKey:)` signs with it.
    ///
    /// Returns the key wrapped under the SRK, so it can also be stored and loaded later. The
    /// inner wrapper key travels encrypted (a session salted with the SRK) and is wiped after use.
    /// - Throws: `TPMError` with `.integrity` when the blob was altered or made for another
    ///   TPM; `.malformedBlob` when it does not parse.
    @discardableResult
    public func importAuthenticationKey(
        _ blob: AuthenticationKeyBlob, persistAt handle: UInt32? = TPMContext.authenticationKeyHandle
    ) throws(TPMError) -> WrappedKey {
        if let handle, handle == Self.endorsementKeyHandle || handle == Self.storageRootKeyHandle {
            throw TPMError(
                code: .invalidArgument, operation: "import the authentication key",
                message: "refusing to overwrite the EK or the SRK at \(hex(handle))")
        }
        return try withConnection("import the authentication key") { connection throws(TPMError) in
            var credential = try tpm2b(
                blob.credentialBlob, MU.idObjectUnmarshal, "TPM2B_ID_OBJECT", zero: TPM2B_ID_OBJECT())
            var secret = try tpm2b(
                blob.secret, MU.encryptedSecretUnmarshal, "TPM2B_ENCRYPTED_SECRET", zero: TPM2B_ENCRYPTED_SECRET())
            var duplicate = try tpm2b(blob.duplicate, MU.privateUnmarshal, "TPM2B_PRIVATE", zero: TPM2B_PRIVATE())
            var seed = try tpm2b(
                blob.encryptedSeed, MU.encryptedSecretUnmarshal, "TPM2B_ENCRYPTED_SECRET",
                zero: TPM2B_ENCRYPTED_SECRET())
            var keyPublic = try tpm2b(blob.publicArea, MU.publicUnmarshal, "TPM2B_PUBLIC", zero: TPM2B_PUBLIC())

            var innerKey = try connection.activateCredential(&credential, &secret)
            defer { wipe(&innerKey) }
            var keyPrivate = try connection.importDuplicate(&duplicate, &seed, &keyPublic, innerKey: innerKey)
            let wrapped = try WrappedKey(
                publicArea: marshal(keyPublic, MU.publicMarshal, "TPM2B_PUBLIC"),
                privateArea: marshal(keyPrivate, MU.privateMarshal, "TPM2B_PRIVATE"))
            if let handle {
                let object = try connection.load(&keyPrivate, &keyPublic, under: connection.storageRootKey())
                defer { connection.flush(object) }
                try connection.replacePersistent(object, at: handle)
            }
            return wrapped
        }
    }

    /// Runs TPM2_ActivateCredential alone and returns the recovered secret. For tests and
    /// diagnostics: the secret is the inner wrapper key of a DPS blob.
    func activateCredential(credentialBlob: Data, secret: Data) throws(TPMError) -> Data {
        try withConnection("activate a credential") { connection throws(TPMError) in
            var credential = try tpm2b(
                credentialBlob, MU.idObjectUnmarshal, "TPM2B_ID_OBJECT", zero: TPM2B_ID_OBJECT())
            var encryptedSecret = try tpm2b(
                secret, MU.encryptedSecretUnmarshal, "TPM2B_ENCRYPTED_SECRET", zero: TPM2B_ENCRYPTED_SECRET())
            var recovered = try connection.activateCredential(&credential, &encryptedSecret)
            defer { wipe(&recovered) }
            return bytes(of: recovered.buffer, count: recovered.size)
        }
    }
}

extension Connection {
    /// PolicySecret(endorsement) in a policy session for the EK, a salted session with response
    /// encryption for the SRK, then TPM2_ActivateCredential. Both sessions are flushed.
    mutating func activateCredential(_ credential: inout TPM2B_ID_OBJECT, _ secret: inout TPM2B_ENCRYPTED_SECRET)
        throws(TPMError) -> TPM2B_DIGEST
    {
        let endorsementKey = try endorsementKey()
        let storageRootKey = try storageRootKey()
        let policy = try startSession(type: GH_TPM2_SE_POLICY, attributes: GH_TPMA_SESSION_CONTINUESESSION)
        defer { flush(policy) }
        try check(
            Esys_PolicySecret(
                context, ESYS_TR_RH_ENDORSEMENT, policy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, nil, nil, nil,
                0, nil, nil),
            "Esys_PolicySecret(endorsement)", hint: "the endorsement hierarchy's authorization was refused")
        let session = try startSession(
            type: GH_TPM2_SE_HMAC, saltKey: storageRootKey,
            attributes: GH_TPMA_SESSION_CONTINUESESSION | GH_TPMA_SESSION_ENCRYPT)
        defer { flush(session) }
        var certInfo: UnsafeMutablePointer<TPM2B_DIGEST>?
        defer {
            if let certInfo {
                wipe(&certInfo.pointee)
                Esys_Free(certInfo)
            }
        }
        try check(
            Esys_ActivateCredential(
                context, storageRootKey, endorsementKey, session, policy, ESYS_TR_NONE, &credential, &secret,
                &certInfo),
            "Esys_ActivateCredential",
            hint: "the credential was altered, or was not made for this TPM's EK and SRK name")
        guard let certInfo else {
            throw TPMError(code: .esapiLayer, operation: "Esys_ActivateCredential", message: "no secret returned")
        }
        return certInfo.pointee
    }

    /// TPM2_Import of a duplicate under the SRK, with `innerKey` as the inner wrapper key
    /// (AES-128-CFB; none when it is empty). The key crosses the bus encrypted.
    mutating func importDuplicate(
        _ duplicate: inout TPM2B_PRIVATE, _ seed: inout TPM2B_ENCRYPTED_SECRET, _ keyPublic: inout TPM2B_PUBLIC,
        innerKey: TPM2B_DIGEST
    ) throws(TPMError) -> TPM2B_PRIVATE {
        let storageRootKey = try storageRootKey()
        var encryptionKey = TPM2B_DATA()
        defer { wipe(&encryptionKey) }
        encryptionKey.size = innerKey.size
        withUnsafeBytes(of: innerKey.buffer) { copy($0.prefix(Int(innerKey.size)), into: &encryptionKey.buffer) }
        var symmetric = Templates.aes128CFBObject
        if innerKey.size == 0 { symmetric.algorithm = GH_TPM2_ALG_NULL }
        let session = try startSession(
            type: GH_TPM2_SE_HMAC, saltKey: storageRootKey,
            attributes: GH_TPMA_SESSION_CONTINUESESSION | GH_TPMA_SESSION_DECRYPT)
        defer { flush(session) }
        var outPrivate: UnsafeMutablePointer<TPM2B_PRIVATE>?
        defer { Esys_Free(outPrivate) }
        try check(
            Esys_Import(
                context, storageRootKey, session, ESYS_TR_NONE, ESYS_TR_NONE, &encryptionKey, &keyPublic, &duplicate,
                &seed, &symmetric, &outPrivate),
            "Esys_Import",
            hint:
                "the duplicate does not match the key's public area or the wrapping keys (altered, or for another SRK)")
        guard let outPrivate else {
            throw TPMError(code: .esapiLayer, operation: "Esys_Import", message: "no private area returned")
        }
        return outPrivate.pointee
    }
}
