import Crypto
import FoundationEssentials
import GatehouseBasics
import GatehousePluginKit
import GatehouseTPM
import IoTHubWire

/// The Shared Access Signature token of IoT Hub and DPS (docs/protocols.md §0):
///
///     SharedAccessSignature sr={resource}&sig={urlencode(base64(HMAC-SHA256(key, sr + "\n" + se)))}&se={expiry}[&skn={policy}]
///
/// `sr` is built once — lower-cased and percent-encoded with `/` as `%2F`, the documented form —
/// and exactly that string is signed, which is the rule that every service variant accepts.
public enum SASToken {
    public static func make(resource: String, expiry: Int64, policyName: String? = nil, mac: (Data) -> Data) -> String {
        let encodedResource = PropertyBag.percentEncode(resource.lowercased())
        let stringToSign = Data("\(encodedResource)\n\(expiry)".utf8)
        let signature = mac(stringToSign).base64EncodedString()
        var token =
            "SharedAccessSignature sr=\(encodedResource)&sig=\(PropertyBag.percentEncode(signature))&se=\(expiry)"
        if let policyName { token += "&skn=\(PropertyBag.percentEncode(policyName))" }
        return token
    }

    /// HMAC-SHA256 with a symmetric key held in memory.
    public static func make(resource: String, expiry: Int64, key: SymmetricKey, policyName: String? = nil) -> String {
        make(resource: resource, expiry: expiry, policyName: policyName) { message in
            Data(HMAC<SHA256>.authenticationCode(for: message, using: key))
        }
    }

    /// The per-device key of a DPS enrollment group: HMAC-SHA256(group key, registration id),
    /// used as the device's key bytes (docs/protocols.md §1.a).
    public static func deriveDeviceKey(groupKey: SymmetricKey, registrationID: String) -> SymmetricKey {
        SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(registrationID.utf8), using: groupKey)))
    }
}

/// Signs SAS tokens for device identities. The TPM-backed signer of the provisioning work will
/// be another conformer; plugins never see key material either way.
public protocol DeviceSigner: Sendable {
    /// `resource` must be the device's own: `…/devices/{id}` (IoT Hub) or `…/registrations/{id}`
    /// (DPS, with `policyName` "registration").
    func sign(deviceID: String, resource: String, expiry: Int64, policyName: String?) throws(SignerError) -> String

    /// Drops whatever the signer keeps in memory for the device (its derived key), for a device
    /// that was removed. Signing for it again would derive it anew: the caller refuses that.
    func forget(deviceID: String)
}

extension DeviceSigner {
    /// Signers that keep nothing per device (`GroupKeySigner` derives each time) forget nothing.
    public func forget(deviceID: String) {}

    public func sign(deviceID: String, resource: String, expiry: Int64) throws(SignerError) -> String {
        try sign(deviceID: deviceID, resource: resource, expiry: expiry, policyName: nil)
    }
}

public struct SignerError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Derives every device's key from an enrollment-group key kept in memory.
public final class GroupKeySigner: DeviceSigner {
    // Raw bytes rather than SymmetricKey, which swift-crypto 3 does not mark Sendable.
    private let groupKey: [UInt8]

    /// Reads the base64 group key from `path`. Errors name the file, never the key.
    public init(keyFile path: String) throws(SignerError) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SignerError("cannot read the group key file \(path)")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingWhitespace
        guard let key = Data(base64Encoded: text), key.count >= 16 else {
            throw SignerError("the group key file \(path) does not hold a base64 key of at least 16 bytes")
        }
        groupKey = [UInt8](key)
    }

    public init(groupKey: [UInt8]) { self.groupKey = groupKey }

    public func sign(deviceID: String, resource: String, expiry: Int64, policyName: String?) throws(SignerError)
        -> String
    {
        // A device's key signs only that device's resources.
        let lowered = resource.lowercased(), id = deviceID.lowercased()
        guard lowered.hasSuffix("/devices/\(id)") || lowered.hasSuffix("/registrations/\(id)") else {
            throw SignerError("refused to sign a resource that is not device \(deviceID)'s")
        }
        let deviceKey = SASToken.deriveDeviceKey(groupKey: SymmetricKey(data: groupKey), registrationID: deviceID)
        return SASToken.make(resource: resource, expiry: expiry, key: deviceKey, policyName: policyName)
    }
}

/// Used when no key is configured: signs nothing, so upstream links that need a token fail
/// with a clear log line instead of connecting with a made-up credential.
public struct NoSigner: DeviceSigner {
    public init() {}
    public func sign(deviceID: String, resource: String, expiry: Int64, policyName: String?) throws(SignerError)
        -> String
    {
        throw SignerError("no device key is configured ([identity] tpm or group_key_file)")
    }
}

/// Derives every device's key inside the TPM from the TPM-wrapped group key; the derived keys
/// stay in memory (see `TPMSigner`). The group key never leaves the TPM.
public final class TPMDeviceSigner: DeviceSigner {
    let signer: TPMSigner

    /// Uses the process's TPM context and reads the wrapped group key at `blobPath`.
    public init(context: TPMContext, blobPath: String) throws(SignerError) {
        guard let data = FileManager.default.contents(atPath: blobPath) else {
            throw SignerError(
                "no TPM-wrapped group key at \(blobPath); import one with `gatehouse tpm import-group-key`")
        }
        do {
            signer = TPMSigner(context: context, groupKey: try WrappedKey(serialized: data))
        } catch {
            throw SignerError("TPM \(context.tcti): \(error)")
        }
    }

    /// Opens the TPM at `tcti` and reads the wrapped group key at `blobPath`.
    public init(tcti: String, blobPath: String) throws(SignerError) {
        guard let data = FileManager.default.contents(atPath: blobPath) else {
            throw SignerError(
                "no TPM-wrapped group key at \(blobPath); import one with `gatehouse tpm import-group-key`")
        }
        do {
            let key = try WrappedKey(serialized: data)
            signer = TPMSigner(context: try TPMContext(tcti: tcti), groupKey: key)
        } catch {
            throw SignerError("TPM \(tcti): \(error)")
        }
    }

    public func forget(deviceID: String) { signer.forget(deviceID) }

    public func sign(deviceID: String, resource: String, expiry: Int64, policyName: String?) throws(SignerError)
        -> String
    {
        do {
            try signer.derive([deviceID])
            return try signer.sasToken(
                registrationID: deviceID, resource: resource, expiry: expiry, policyName: policyName)
        } catch {
            throw SignerError("\(error)")
        }
    }
}

/// Imports an enrollment-group key into the TPM and writes only the wrapped blob (mode 0600).
public enum GroupKeyImport {
    public static func run(base64Key: String, tcti: String, blobPath: String) throws(SignerError) {
        guard let key = Data(base64Encoded: base64Key.trimmingWhitespace), key.count >= 16
        else {
            throw SignerError("standard input does not hold a base64 key of at least 16 bytes")
        }
        do {
            let context = try TPMContext(tcti: tcti)
            defer { context.close() }
            let wrapped = try context.importHMACKey(key)
            let directory = PathText.directory(of: blobPath)
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            guard
                FileManager.default.createFile(
                    atPath: blobPath, contents: wrapped.serialized, attributes: [.posixPermissions: 0o600])
            else { throw SignerError("cannot write \(blobPath)") }
        } catch let error as SignerError {
            throw error
        } catch {
            throw SignerError("TPM \(tcti): \(error)")
        }
    }
}
