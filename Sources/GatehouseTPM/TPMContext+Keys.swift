import CTSS2
import Crypto
import FoundationEssentials

/// HMAC keys under the SRK: import, load, HMAC-SHA256 inside the TPM.
extension TPMContext {
    /// Puts the raw HMAC-SHA256 key `key` into the TPM (TPM2_Create under the SRK with the key
    /// as sensitive data) and returns only the TPM-wrapped blob. The key crosses the bus
    /// encrypted (a session salted with the SRK, parameter encryption on). Keys longer than
    /// SHA-256's 64-byte block are replaced by their SHA-256 digest first, which HMAC defines as
    /// equivalent; the TPM would refuse them otherwise.
    public func importHMACKey(_ key: some Collection<UInt8>) throws(TPMError) -> WrappedKey {
        guard !key.isEmpty else {
            throw TPMError(code: .invalidArgument, operation: "import an HMAC key", message: "the key is empty")
        }
        var material = key.count > 64 ? Array(SHA256.hash(data: Array(key))) : Array(key)
        defer { wipe(&material) }
        return try withConnection("import an HMAC key") { connection throws(TPMError) in
            try connection.createHMACKey(material)
        }
    }

    /// Loads a wrapped key; it stays loaded (taking a TPM object slot) until `flush(_:)`.
    public func load(_ key: WrappedKey) throws(TPMError) -> LoadedKey {
        try withConnection("load a wrapped key") { connection throws(TPMError) in
            let object = try connection.load(key)
            connection.track(object)
            return LoadedKey(object: object, owner: ObjectIdentifier(self))
        }
    }

    /// Flushes a loaded key out of the TPM. Flushing twice is harmless.
    public func flush(_ key: LoadedKey) {
        guard key.owner == ObjectIdentifier(self) else { return }
        _ = try? withConnection("flush a key") { connection throws(TPMError) in
            if connection.loaded.contains(key.object) { connection.flush(key.object) }
        }
    }

    /// HMAC-SHA256 of `data` with a loaded key, computed inside the TPM.
    public func hmac(_ key: LoadedKey, _ data: some DataProtocol) throws(TPMError) -> Data {
        let message = Data(data)
        return try withConnection("HMAC") { connection throws(TPMError) in
            guard key.owner == ObjectIdentifier(self), connection.loaded.contains(key.object) else {
                throw TPMError(
                    code: .invalidArgument, operation: "HMAC",
                    message: "the key is not loaded in this context (flushed, or loaded by another)")
            }
            return try connection.hmac(key.object, message)
        }
    }

    /// HMAC-SHA256 of `data` with a wrapped key: load, HMAC, flush.
    public func hmac(_ key: WrappedKey, _ data: some DataProtocol) throws(TPMError) -> Data {
        try hmac(key, messages: [Data(data)])[0]
    }

    /// HMAC-SHA256 of each message with one wrapped key, loaded once for the whole batch.
    public func hmac(_ key: WrappedKey, messages: [Data]) throws(TPMError) -> [Data] {
        try withConnection("HMAC") { connection throws(TPMError) in
            let object = try connection.load(key)
            defer { connection.flush(object) }
            var results: [Data] = []
            results.reserveCapacity(messages.count)
            for message in messages { results.append(try connection.hmac(object, message)) }
            return results
        }
    }

    /// HMAC-SHA256 of `data` with the persistent key at `handle` (by default the DPS
    /// authentication key, `0x81000100`).
    public func hmac(persistentKey handle: UInt32 = TPMContext.authenticationKeyHandle, _ data: some DataProtocol)
        throws(TPMError) -> Data
    {
        let message = Data(data)
        return try withConnection("HMAC") { connection throws(TPMError) in
            try connection.hmac(connection.persistentObject(handle), message)
        }
    }

    /// Makes a wrapped key persistent at `handle` (replacing what was there), so that it can be
    /// used by handle and survives without the blob.
    public func persist(_ key: WrappedKey, at handle: UInt32) throws(TPMError) {
        try withConnection("persist a key") { connection throws(TPMError) in
            let object = try connection.load(key)
            defer { connection.flush(object) }
            try connection.replacePersistent(object, at: handle)
        }
    }
}

extension Connection {
    mutating func createHMACKey(_ material: [UInt8]) throws(TPMError) -> WrappedKey {
        let srk = try storageRootKey()
        var sensitive = TPM2B_SENSITIVE_CREATE()
        defer { wipe(&sensitive) }
        sensitive.sensitive.data.size = UInt16(material.count)
        copy(material, into: &sensitive.sensitive.data.buffer)
        var template = Templates.hmacKey
        var outsideInfo = TPM2B_DATA()
        var creationPCR = TPML_PCR_SELECTION()
        let session = try startSession(
            type: GH_TPM2_SE_HMAC, saltKey: srk, attributes: GH_TPMA_SESSION_CONTINUESESSION | GH_TPMA_SESSION_DECRYPT)
        defer { flush(session) }
        var outPrivate: UnsafeMutablePointer<TPM2B_PRIVATE>?
        var outPublic: UnsafeMutablePointer<TPM2B_PUBLIC>?
        defer {
            Esys_Free(outPrivate)
            Esys_Free(outPublic)
        }
        try check(
            Esys_Create(
                context, srk, session, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &template, &outsideInfo, &creationPCR,
                &outPrivate, &outPublic, nil, nil, nil),
            "Esys_Create(HMAC key)")
        guard let outPrivate, let outPublic else {
            throw TPMError(code: .esapiLayer, operation: "Esys_Create(HMAC key)", message: "no key returned")
        }
        return try WrappedKey(
            publicArea: marshal(outPublic.pointee, MU.publicMarshal, "TPM2B_PUBLIC"),
            privateArea: marshal(outPrivate.pointee, MU.privateMarshal, "TPM2B_PRIVATE"))
    }

    /// Loads a wrapped key under the SRK; the caller flushes the returned object.
    mutating func load(_ key: WrappedKey) throws(TPMError) -> ESYS_TR {
        let srk = try storageRootKey()
        var inPrivate = try unmarshal(key.privateArea, MU.privateUnmarshal, "TPM2B_PRIVATE", zero: TPM2B_PRIVATE())
        var inPublic = try unmarshal(key.publicArea, MU.publicUnmarshal, "TPM2B_PUBLIC", zero: TPM2B_PUBLIC())
        return try load(&inPrivate, &inPublic, under: srk)
    }

    mutating func load(_ inPrivate: inout TPM2B_PRIVATE, _ inPublic: inout TPM2B_PUBLIC, under parent: ESYS_TR)
        throws(TPMError) -> ESYS_TR
    {
        var object: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_Load(context, parent, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &inPrivate, &inPublic, &object),
            "Esys_Load",
            hint: "the key was wrapped by another TPM or SRK, or its blob was altered")
        return object
    }

    /// Persists the loaded `object` at `handle`, evicting whatever sits there first.
    mutating func replacePersistent(_ object: ESYS_TR, at handle: UInt32) throws(TPMError) {
        if try persistentHandles().contains(handle) { try evictPersistent(handle) }
        _ = try persist(object, at: handle)
    }

    /// HMAC-SHA256 inside the TPM. Messages up to TPM2_MAX_DIGEST_BUFFER (1024 bytes) take one
    /// TPM2_HMAC; longer ones an HMAC sequence (start, updates of 1024 bytes, complete).
    mutating func hmac(_ key: ESYS_TR, _ data: Data) throws(TPMError) -> Data {
        let chunk = Int(GH_TPM2_MAX_DIGEST_BUFFER)
        if data.count <= chunk {
            var buffer = try tpm2b(data, MU.maxBufferUnmarshal, "TPM2B_MAX_BUFFER", zero: TPM2B_MAX_BUFFER())
            var result: UnsafeMutablePointer<TPM2B_DIGEST>?
            defer { Esys_Free(result) }
            try check(
                Esys_HMAC(
                    context, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer, GH_TPM2_ALG_SHA256, &result),
                "Esys_HMAC")
            return try digest(result, "Esys_HMAC")
        }
        var auth = TPM2B_AUTH()
        var sequence: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_HMAC_Start(
                context, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth, GH_TPM2_ALG_SHA256, &sequence),
            "Esys_HMAC_Start")
        var completed = false
        defer { if !completed { flush(sequence) } }
        var offset = data.startIndex
        while data.endIndex - offset > chunk {
            var buffer = try tpm2b(
                data[offset..<offset + chunk], MU.maxBufferUnmarshal, "TPM2B_MAX_BUFFER", zero: TPM2B_MAX_BUFFER())
            try check(
                Esys_SequenceUpdate(context, sequence, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer),
                "Esys_SequenceUpdate")
            offset += chunk
        }
        var last = try tpm2b(data[offset...], MU.maxBufferUnmarshal, "TPM2B_MAX_BUFFER", zero: TPM2B_MAX_BUFFER())
        var result: UnsafeMutablePointer<TPM2B_DIGEST>?
        defer { Esys_Free(result) }
        try check(
            Esys_SequenceComplete(
                context, sequence, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &last, ESYS_TR_RH_NULL, &result, nil),
            "Esys_SequenceComplete")
        completed = true  // TPM2_SequenceComplete flushes the sequence object
        return try digest(result, "Esys_SequenceComplete")
    }

    private func digest(_ result: UnsafeMutablePointer<TPM2B_DIGEST>?, _ operation: String) throws(TPMError) -> Data {
        guard let result, result.pointee.size == 32 else {
            throw TPMError(code: .esapiLayer, operation: operation, message: "no 32-byte HMAC returned")
        }
        return bytes(of: result.pointee.buffer, count: result.pointee.size)
    }
}
