import CTSS2
import FoundationEssentials

/// A key wrapped by the TPM under its storage root key: the public area and the private area
/// that only this TPM (with this SRK) can load. Safe to keep on disk: the private area is
/// encrypted and integrity-protected with a key derived from the SRK, which never leaves the TPM.
public struct WrappedKey: Sendable, Hashable {
    /// The marshalled `TPM2B_PUBLIC`.
    public let publicArea: Data
    /// The marshalled `TPM2B_PRIVATE` (encrypted under the SRK).
    public let privateArea: Data

    static let magic: [UInt8] = Array("GHWK".utf8)
    static let version: UInt8 = 1

    /// Checks that both areas are well-formed TPM structures.
    public init(publicArea: Data, privateArea: Data) throws(TPMError) {
        _ = try unmarshal(publicArea, MU.publicUnmarshal, "TPM2B_PUBLIC", zero: TPM2B_PUBLIC())
        _ = try unmarshal(privateArea, MU.privateUnmarshal, "TPM2B_PRIVATE", zero: TPM2B_PRIVATE())
        self.publicArea = publicArea
        self.privateArea = privateArea
    }

    /// The file form: `GHWK`, a version byte (1), then `TPM2B_PUBLIC` and `TPM2B_PRIVATE`.
    public var serialized: Data {
        var out = Data(Self.magic)
        out.append(Self.version)
        out.append(publicArea)
        out.append(privateArea)
        return out
    }

    /// Reads the form `serialized` writes.
    public init(serialized data: Data) throws(TPMError) {
        let bytes = [UInt8](data)
        guard bytes.count > 5, Array(bytes[0..<4]) == Self.magic else {
            throw TPMError(
                code: .malformedBlob, operation: "read a wrapped key",
                message: "not a gatehouse wrapped key (no GHWK header)")
        }
        guard bytes[4] == Self.version else {
            throw TPMError(
                code: .malformedBlob, operation: "read a wrapped key",
                message: "wrapped key format version \(bytes[4]) is not supported (expected \(Self.version))")
        }
        var offset = 5
        let start = offset
        _ = try unmarshal(bytes, at: &offset, MU.publicUnmarshal, "TPM2B_PUBLIC", zero: TPM2B_PUBLIC())
        let publicEnd = offset
        _ = try unmarshal(bytes, at: &offset, MU.privateUnmarshal, "TPM2B_PRIVATE", zero: TPM2B_PRIVATE())
        guard offset == bytes.count else {
            throw TPMError(
                code: .malformedBlob, operation: "read a wrapped key",
                message: "\(bytes.count - offset) unexpected bytes after the private area")
        }
        publicArea = Data(bytes[start..<publicEnd])
        privateArea = Data(bytes[publicEnd..<offset])
    }
}

/// A key loaded into the TPM by `TPMContext.load(_:)`: it occupies one of the TPM's few object
/// slots until `TPMContext.flush(_:)` (or `close()`).
public struct LoadedKey: Sendable, Hashable {
    let object: ESYS_TR
    let owner: ObjectIdentifier
}
