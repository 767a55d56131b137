import CTSS2
import Crypto
import FoundationEssentials
import Synchronization

/// The process's one connection to the TPM.
///
/// **Ownership.** A class whose whole ESAPI state sits behind one `Mutex`: every operation
/// takes the lock, runs its TPM commands to completion, flushes every transient object and
/// session it made (on error paths too), and releases the lock. Calls are therefore serialised
/// and synchronous; they block the calling thread for the TPM's latency (swtpm: well under a
/// millisecond per command; a hardware TPM: milliseconds, seconds for `CreatePrimary` of an RSA
/// key), so call from a thread that may block rather than from a latency-sensitive event loop.
/// Create one `TPMContext` per process: swtpm serves one client at a time and has no resource
/// manager, and two ESAPI contexts over `/dev/tpmrm0` would each see only their own objects.
///
/// **Keys.** The endorsement key (RSA-2048, TCG template L-1) lives at `0x81010001` and the
/// storage root key (RSA-2048) at `0x81000001`; both are read, or created and persisted on first
/// use. HMAC keys are created under the SRK and handed back only as TPM-wrapped blobs
/// (`WrappedKey`), which are useless outside this TPM.
///
/// TCTI configuration strings are those of `Tss2_TctiLdr_Initialize`: `device:/dev/tpmrm0`,
/// `swtpm:host=127.0.0.1,port=2321`, `swtpm:path=/run/swtpm.sock`, `tabrmd`, or empty for the
/// library's default. The swtpm TCTI opens a new connection for every TPM command: over TCP each
/// leaves a loopback socket in TIME-WAIT for a minute, so prefer swtpm's Unix socket (`path=`)
/// for long runs.
public final class TPMContext: Sendable {
    /// The TCG's persistent handle of the RSA endorsement key.
    public static let endorsementKeyHandle: UInt32 = 0x8101_0001
    /// The TCG's persistent handle of the storage root key.
    public static let storageRootKeyHandle: UInt32 = 0x8100_0001
    /// Where the DPS authentication key is persisted (aziot's and the C SDK's default).
    public static let authenticationKeyHandle: UInt32 = 0x8100_0100

    /// The TCTI configuration this context was opened with.
    public let tcti: String
    private let connection: Mutex<Connection?>

    /// Opens the TPM and runs TPM2_Startup if the TPM has not been started yet.
    ///
    /// - Parameters:
    ///   - ownerAuth: the owner hierarchy's authorization (empty on a fresh TPM).
    ///   - endorsementAuth: the endorsement hierarchy's authorization (empty on a fresh TPM).
    /// - Throws: `TPMError` with a `.tctiLayer` code when no TPM answers at `tcti`.
    public init(tcti: String, ownerAuth: [UInt8] = [], endorsementAuth: [UInt8] = []) throws(TPMError) {
        self.tcti = tcti
        let opened = try Connection(tcti: tcti, ownerAuth: ownerAuth, endorsementAuth: endorsementAuth)
        connection = Mutex(opened)
    }

    /// Flushes what is still loaded and releases the TPM (swtpm then accepts another client).
    /// Later calls throw `.closed`. Closing twice is harmless.
    public func close() {
        connection.withLock { connection in
            connection?.close()
            connection = nil
        }
    }

    deinit { close() }

    /// Runs `body` with the lock held on an open connection.
    func withConnection<Result: Sendable>(
        _ operation: String, _ body: (inout Connection) throws(TPMError) -> Result
    ) throws(TPMError) -> Result {
        try connection.withLock { (connection: inout Connection?) throws(TPMError) -> Result in
            guard connection != nil else {
                throw TPMError(code: .closed, operation: operation, message: "the TPM context was closed")
            }
            return try body(&connection!)
        }
    }

    // MARK: Endorsement and storage root keys

    /// The EK's public area as DPS wants it for `endorsementKey`: a marshalled `TPM2B_PUBLIC`
    /// (big-endian size, then `TPMT_PUBLIC`). Creates and persists the EK if it is missing.
    public func endorsementKeyPublic() throws(TPMError) -> Data {
        try withConnection("read the endorsement key") { connection throws(TPMError) in
            try connection.readPublic(connection.endorsementKey()).publicArea
        }
    }

    /// The SRK's public area (DPS's `storageRootKey`), marshalled as `TPM2B_PUBLIC`. Creates and
    /// persists the SRK if it is missing.
    public func storageRootKeyPublic() throws(TPMError) -> Data {
        try withConnection("read the storage root key") { connection throws(TPMError) in
            try connection.readPublic(connection.storageRootKey()).publicArea
        }
    }

    /// The SRK's name (nameAlg ‖ digest of its public area): what a credential is bound to.
    public func storageRootKeyName() throws(TPMError) -> Data {
        try withConnection("read the storage root key") { connection throws(TPMError) in
            try connection.readPublic(connection.storageRootKey()).name
        }
    }

    /// The EK's name.
    public func endorsementKeyName() throws(TPMError) -> Data {
        try withConnection("read the endorsement key") { connection throws(TPMError) in
            try connection.readPublic(connection.endorsementKey()).name
        }
    }

    /// The persistent handles in use (`0x81xxxxxx`).
    public func persistentHandles() throws(TPMError) -> [UInt32] {
        try withConnection("list persistent handles") { connection throws(TPMError) in
            try connection.persistentHandles().sorted()
        }
    }

    /// Removes the persistent object at `handle`. Refuses the EK and SRK handles.
    public func evictPersistent(_ handle: UInt32) throws(TPMError) {
        guard handle != Self.endorsementKeyHandle, handle != Self.storageRootKeyHandle else {
            throw TPMError(
                code: .invalidArgument, operation: "evict a persistent object",
                message: "refusing to evict the EK or the SRK")
        }
        try withConnection("evict a persistent object") { connection throws(TPMError) in
            try connection.evictPersistent(handle)
        }
    }

    /// How many transient objects and sessions the TPM holds now (for leak checks; a resource
    /// manager such as /dev/tpmrm0 shows only this connection's).
    func loadedHandleCount() throws(TPMError) -> Int {
        try withConnection("list loaded handles") { connection throws(TPMError) in
            try connection.handles(ofType: 0x80).count + connection.handles(ofType: 0x02).count
                + connection.handles(ofType: 0x03).count
        }
    }

    /// The DPS registration id the Azure C SDK derives by default from an EK public: lowercase
    /// base32 (RFC 4648, no padding) of SHA-256 of the marshalled `TPM2B_PUBLIC`.
    public static func defaultRegistrationID(endorsementKey: Data) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        let digest = [UInt8](SHA256.hash(data: endorsementKey))
        var out = ""
        var buffer = 0
        var bits = 0
        for byte in digest {
            buffer = (buffer << 8) | Int(byte)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[(buffer >> (bits - 5)) & 31])
                bits -= 5
            }
            buffer &= (1 << bits) - 1
        }
        if bits > 0 { out.append(alphabet[(buffer << (5 - bits)) & 31]) }
        return out
    }
}

/// The ESAPI state of an open context. Only `TPMContext` touches it, under its lock.
struct Connection {
    private var esys: OpaquePointer?
    private var tctiContext: OpaquePointer?
    private var endorsementKeyObject: ESYS_TR?
    private var storageRootKeyObject: ESYS_TR?
    /// ESYS objects of persistent keys read so far (handle → object); closed on `close()`.
    private var persistentObjects: [UInt32: ESYS_TR] = [:]
    /// Transient objects loaded on a caller's behalf (`TPMContext.load`); flushed on `close()`.
    private(set) var loaded: Set<ESYS_TR> = []

    var context: OpaquePointer { esys! }

    init(tcti: String, ownerAuth: [UInt8], endorsementAuth: [UInt8]) throws(TPMError) {
        let reachHint = "no TPM reachable through TCTI '\(tcti.isEmpty ? "default" : tcti)'"
        var tctiContext: OpaquePointer?
        let rc: TSS2_RC =
            tcti.isEmpty
            ? Tss2_TctiLdr_Initialize(nil, &tctiContext)
            : Tss2_TctiLdr_Initialize(tcti, &tctiContext)
        try check(rc, "Tss2_TctiLdr_Initialize", hint: reachHint)
        var esys: OpaquePointer?
        let initialized = Esys_Initialize(&esys, tctiContext, nil)
        guard initialized == GH_TPM2_RC_SUCCESS else {
            Tss2_TctiLdr_Finalize(&tctiContext)
            throw TPMError(rc: initialized, operation: "Esys_Initialize", hint: reachHint)
        }
        self.esys = esys
        self.tctiContext = tctiContext
        do {
            try startUpIfNeeded(hint: reachHint)
            try setAuth(ESYS_TR_RH_OWNER, ownerAuth, "owner")
            try setAuth(ESYS_TR_RH_ENDORSEMENT, endorsementAuth, "endorsement")
        } catch {
            close()
            throw error
        }
    }

    /// A fresh swtpm (without `startup-clear`) answers every command with TPM_RC_INITIALIZE
    /// until TPM2_Startup; a started TPM answers TPM2_Startup itself with TPM_RC_INITIALIZE.
    /// Probing first keeps the second, harmless case out of the TSS log.
    private mutating func startUpIfNeeded(hint: String) throws(TPMError) {
        do {
            _ = try persistentHandles()
        } catch let error where error.code ~= .initialize {
            let rc = Esys_Startup(esys, GH_TPM2_SU_CLEAR)
            if rc != GH_TPM2_RC_SUCCESS && !(TPMError.Code(rawValue: rc) ~= .initialize) {
                throw TPMError(rc: rc, operation: "Esys_Startup", hint: hint)
            }
        } catch let error where error.code ~= .tctiLayer {
            throw TPMError(code: error.code, operation: error.operation, message: error.message + " — " + hint)
        }
    }

    private mutating func setAuth(_ hierarchy: ESYS_TR, _ auth: [UInt8], _ name: String) throws(TPMError) {
        guard !auth.isEmpty else { return }
        var value = try tpm2b(auth, MU.digestUnmarshal, "TPM2B_AUTH", zero: TPM2B_AUTH())
        defer { wipe(&value) }
        try check(Esys_TR_SetAuth(esys, hierarchy, &value), "Esys_TR_SetAuth(\(name))")
    }

    mutating func close() {
        guard esys != nil else { return }
        for handle in loaded { _ = Esys_FlushContext(esys, handle) }
        loaded = []
        for var object in [endorsementKeyObject, storageRootKeyObject].compactMap({ $0 }) + persistentObjects.values {
            _ = Esys_TR_Close(esys, &object)
        }
        endorsementKeyObject = nil
        storageRootKeyObject = nil
        persistentObjects = [:]
        Esys_Finalize(&esys)
        Tss2_TctiLdr_Finalize(&tctiContext)
        esys = nil
        tctiContext = nil
    }

    // MARK: Handles

    /// Flushes a transient object or session; best-effort (cleanup paths must not throw).
    mutating func flush(_ handle: ESYS_TR) {
        guard handle != ESYS_TR_NONE else { return }
        _ = Esys_FlushContext(esys, handle)
        loaded.remove(handle)
    }

    mutating func track(_ handle: ESYS_TR) { loaded.insert(handle) }

    func persistentHandles() throws(TPMError) -> Set<UInt32> {
        try handles(ofType: 0x81)
    }

    /// The handles in use whose top byte is `type` (0x80 transient objects, 0x81 persistent
    /// objects, 0x02 HMAC sessions, 0x03 policy sessions).
    func handles(ofType type: UInt8) throws(TPMError) -> Set<UInt32> {
        var handles = Set<UInt32>()
        let first = UInt32(type) << 24
        var property = first
        var more: TPMI_YES_NO = 1
        while more != 0 {
            var data: UnsafeMutablePointer<TPMS_CAPABILITY_DATA>?
            defer { Esys_Free(data) }
            try check(
                Esys_GetCapability(
                    esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, GH_TPM2_CAP_HANDLES, property,
                    GH_TPM2_MAX_CAP_HANDLES, &more, &data),
                "Esys_GetCapability(handles)")
            guard let list = data?.pointee.data.handles else { break }
            let page = withUnsafeBytes(of: list.handle) {
                Array($0.bindMemory(to: UInt32.self).prefix(Int(list.count)))
            }
            handles.formUnion(page)
            guard let last = page.last, last < first | 0x00FF_FFFF else { break }
            property = last + 1
        }
        return handles.filter { $0 >> 24 == type }
    }

    /// The ESYS object of the persistent key at `handle`, read once and cached.
    mutating func persistentObject(_ handle: UInt32) throws(TPMError) -> ESYS_TR {
        if let object = persistentObjects[handle] { return object }
        guard try persistentHandles().contains(handle) else {
            throw TPMError(
                code: .notFound, operation: "read persistent object \(hex(handle))",
                message: "no persistent object at \(hex(handle))")
        }
        var object: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object),
            "Esys_TR_FromTPMPublic(\(hex(handle)))")
        persistentObjects[handle] = object
        return object
    }

    mutating func evictPersistent(_ handle: UInt32) throws(TPMError) {
        let object = try persistentObject(handle)
        var none: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_EvictControl(
                esys, ESYS_TR_RH_OWNER, object, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle, &none),
            "Esys_EvictControl(remove \(hex(handle)))")
        // ESAPI closes the object of an evicted persistent key itself.
        persistentObjects[handle] = nil
    }

    /// Makes the loaded transient `object` persistent at `handle` (the transient copy stays
    /// loaded: the caller flushes it).
    mutating func persist(_ object: ESYS_TR, at handle: UInt32) throws(TPMError) -> ESYS_TR {
        var persistent: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_EvictControl(
                esys, ESYS_TR_RH_OWNER, object, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle, &persistent),
            "Esys_EvictControl(persist at \(hex(handle)))",
            hint: "is the handle already taken, or the owner authorization wrong?")
        persistentObjects[handle] = persistent
        return persistent
    }

    // MARK: EK and SRK

    mutating func endorsementKey() throws(TPMError) -> ESYS_TR {
        if let endorsementKeyObject { return endorsementKeyObject }
        let object = try primaryKey(
            at: TPMContext.endorsementKeyHandle, hierarchy: ESYS_TR_RH_ENDORSEMENT,
            template: Templates.endorsementKeyRSA, name: "EK")
        endorsementKeyObject = object
        return object
    }

    mutating func storageRootKey() throws(TPMError) -> ESYS_TR {
        if let storageRootKeyObject { return storageRootKeyObject }
        let object = try primaryKey(
            at: TPMContext.storageRootKeyHandle, hierarchy: ESYS_TR_RH_OWNER,
            template: Templates.storageRootKeyRSA, name: "SRK")
        storageRootKeyObject = object
        return object
    }

    /// Reads the persistent primary key at `handle`, or creates it from `template` in
    /// `hierarchy` and persists it there.
    private mutating func primaryKey(at handle: UInt32, hierarchy: ESYS_TR, template: TPM2B_PUBLIC, name: String)
        throws(TPMError) -> ESYS_TR
    {
        if try persistentHandles().contains(handle) {
            var object: ESYS_TR = ESYS_TR_NONE
            try check(
                Esys_TR_FromTPMPublic(esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &object),
                "Esys_TR_FromTPMPublic(\(name) \(hex(handle)))")
            return object
        }
        var template = template
        var sensitive = TPM2B_SENSITIVE_CREATE()
        var outsideInfo = TPM2B_DATA()
        var creationPCR = TPML_PCR_SELECTION()
        var transient: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_CreatePrimary(
                esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sensitive, &template, &outsideInfo,
                &creationPCR, &transient, nil, nil, nil, nil),
            "Esys_CreatePrimary(\(name))", hint: "is the hierarchy's authorization right?")
        defer { flush(transient) }
        var persistent: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_EvictControl(
                esys, ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, handle, &persistent),
            "Esys_EvictControl(\(name) → \(hex(handle)))")
        return persistent
    }

    /// The marshalled `TPM2B_PUBLIC` and the name of a loaded or persistent object.
    func readPublic(_ object: ESYS_TR) throws(TPMError) -> (publicArea: Data, name: Data) {
        var outPublic: UnsafeMutablePointer<TPM2B_PUBLIC>?
        var name: UnsafeMutablePointer<TPM2B_NAME>?
        defer {
            Esys_Free(outPublic)
            Esys_Free(name)
        }
        try check(
            Esys_ReadPublic(esys, object, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &outPublic, &name, nil),
            "Esys_ReadPublic")
        guard let outPublic, let name else {
            throw TPMError(code: .esapiLayer, operation: "Esys_ReadPublic", message: "no public area returned")
        }
        return (
            try marshal(outPublic.pointee, MU.publicMarshal, "TPM2B_PUBLIC"),
            bytes(of: name.pointee.name, count: name.pointee.size)
        )
    }

    // MARK: Sessions

    /// Starts a session. With `saltKey` (the SRK) the session key is salted with a secret
    /// encrypted to that key, so parameter encryption (`attributes` with DECRYPT/ENCRYPT)
    /// protects what crosses the bus; the caller flushes the session.
    mutating func startSession(type: TPM2_SE, saltKey: ESYS_TR = ESYS_TR_NONE, attributes: TPMA_SESSION)
        throws(TPMError) -> ESYS_TR
    {
        var symmetric = TPMT_SYM_DEF()
        if saltKey == ESYS_TR_NONE {
            symmetric.algorithm = GH_TPM2_ALG_NULL
        } else {
            symmetric = Templates.aes128CFB
        }
        var session: ESYS_TR = ESYS_TR_NONE
        try check(
            Esys_StartAuthSession(
                esys, saltKey, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nil, type, &symmetric,
                GH_TPM2_ALG_SHA256, &session),
            "Esys_StartAuthSession")
        let rc = Esys_TRSess_SetAttributes(esys, session, attributes, 0xFF)
        guard rc == GH_TPM2_RC_SUCCESS else {
            flush(session)
            throw TPMError(rc: rc, operation: "Esys_TRSess_SetAttributes")
        }
        return session
    }
}

func hex(_ handle: UInt32) -> String { "0x" + String(handle, radix: 16) }
