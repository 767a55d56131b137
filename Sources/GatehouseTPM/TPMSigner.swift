import Crypto
import FoundationEssentials
import IoTHubWire
import Synchronization

/// Signs SAS tokens for leaf devices of a DPS enrollment group whose key lives in the TPM.
///
/// Each device's key is `HMAC-SHA256(group key, registration id)` (docs/protocols.md §1.a), computed
/// inside the TPM with the wrapped group key; the derived keys are kept in this object's memory
/// only (never on disk, never logged) and sign the device's tokens in software. `forget(_:)`
/// drops one. The group key itself never leaves the TPM.
public final class TPMSigner: Sendable {
    public let context: TPMContext
    public let groupKey: WrappedKey
    /// Derived device keys by registration id. Guarded by the mutex; TPM calls happen outside it.
    private let deviceKeys = Mutex<[String: [UInt8]]>([:])

    public init(context: TPMContext, groupKey: WrappedKey) {
        self.context = context
        self.groupKey = groupKey
    }

    /// Derives (in the TPM) the keys of the devices not derived yet, loading the group key once.
    public func derive(_ registrationIDs: [String]) throws(TPMError) {
        let missing = deviceKeys.withLock { keys in
            Array(Set(registrationIDs.filter { keys[$0] == nil }))
        }
        guard !missing.isEmpty else { return }
        let macs = try context.hmac(groupKey, messages: missing.map { Data($0.utf8) })
        deviceKeys.withLock { keys in
            for (id, mac) in zip(missing, macs) { keys[id] = [UInt8](mac) }
        }
    }

    /// Whether the device's key is in memory.
    public func hasKey(for registrationID: String) -> Bool {
        deviceKeys.withLock { $0[registrationID] != nil }
    }

    /// The number of device keys in memory.
    public var count: Int { deviceKeys.withLock { $0.count } }

    /// Drops a device's key from memory (`devices remove`).
    public func forget(_ registrationID: String) {
        deviceKeys.withLock { keys in
            if var key = keys.removeValue(forKey: registrationID) { wipe(&key) }
        }
    }

    /// HMAC-SHA256 of `message` with the device's key (derived on first use). This is the `mac`
    /// closure for `SASToken.make(resource:expiry:policyName:mac:)` of GatehouseCore.
    public func mac(registrationID: String, _ message: Data) throws(TPMError) -> Data {
        let key = try deviceKey(registrationID)
        return Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// A SAS token for `resource` signed with the device's key. The resource must be the
    /// device's own: `…/devices/{id}` (IoT Hub) or `…/registrations/{id}` (DPS).
    public func sasToken(registrationID: String, resource: String, expiry: Int64, policyName: String? = nil)
        throws(TPMError) -> String
    {
        let lowered = resource.lowercased()
        let id = registrationID.lowercased()
        guard lowered.hasSuffix("/devices/\(id)") || lowered.hasSuffix("/registrations/\(id)") else {
            throw TPMError(
                code: .invalidArgument, operation: "sign a SAS token",
                message: "refused to sign a resource that is not device \(registrationID)'s")
        }
        let key = try deviceKey(registrationID)
        return SharedAccessSignature.make(resource: resource, expiry: expiry, policyName: policyName) { message in
            Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
        }
    }

    private func deviceKey(_ registrationID: String) throws(TPMError) -> [UInt8] {
        if let key = deviceKeys.withLock({ $0[registrationID] }) { return key }
        try derive([registrationID])
        guard let key = deviceKeys.withLock({ $0[registrationID] }) else {
            throw TPMError(code: .notFound, operation: "derive a device key", message: "no key for the device")
        }
        return key
    }
}

/// The SAS token format of IoT Hub and DPS (docs/protocols.md §0), the same as GatehouseCore's
/// `SASToken` (through `PropertyBag.percentEncode`): `sr` is lower-cased and percent-encoded once
/// (RFC 3986 unreserved characters and `$` kept, `/` → `%2F`, uppercase hex), and exactly that
/// string is signed.
public enum SharedAccessSignature {
    public static func make<E: Error>(
        resource: String, expiry: Int64, policyName: String? = nil, mac: (Data) throws(E) -> Data
    ) throws(E) -> String {
        let encodedResource = percentEncode(resource.lowercased())
        let signature = try mac(Data("\(encodedResource)\n\(expiry)".utf8)).base64EncodedString()
        var token = "SharedAccessSignature sr=\(encodedResource)&sig=\(percentEncode(signature))&se=\(expiry)"
        if let policyName { token += "&skn=\(percentEncode(policyName))" }
        return token
    }

    /// A token signed inside the TPM with the persistent key at `handle` (the gateway's own
    /// DPS/IoT Hub identity, `0x81000100` by default).
    public static func make(
        resource: String, expiry: Int64, policyName: String? = nil, context: TPMContext,
        persistentKey handle: UInt32 = TPMContext.authenticationKeyHandle
    ) throws(TPMError) -> String {
        try make(resource: resource, expiry: expiry, policyName: policyName) { (message: Data) throws(TPMError) in
            try context.hmac(persistentKey: handle, message)
        }
    }

    /// IoTHubWire's percent-encoding, the one SASToken uses too.
    public static func percentEncode(_ text: some StringProtocol) -> String { PropertyBag.percentEncode(text) }
}
