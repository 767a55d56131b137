import CTSS2
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

// Conversions between the tss2 C structures and bytes. Nothing here leaves the module: callers
// above GatehouseTPM see only `Data`.

typealias MarshalFunction<T> =
    @Sendable (UnsafePointer<T>?, UnsafeMutablePointer<UInt8>?, Int, UnsafeMutablePointer<Int>?) ->
    TSS2_RC
typealias UnmarshalFunction<T> =
    @Sendable (UnsafePointer<UInt8>?, Int, UnsafeMutablePointer<Int>?, UnsafeMutablePointer<T>?) ->
    TSS2_RC

/// The TPM wire form of `value` (big-endian, as `Tss2_MU_*_Marshal` writes it).
func marshal<T>(_ value: T, _ function: MarshalFunction<T>, _ name: String) throws(TPMError) -> Data {
    var value = value
    var buffer = [UInt8](repeating: 0, count: MemoryLayout<T>.size + 64)
    var offset = 0
    let rc = withUnsafePointer(to: &value) { source in
        buffer.withUnsafeMutableBufferPointer { function(source, $0.baseAddress, $0.count, &offset) }
    }
    try check(rc, "marshal \(name)")
    return Data(buffer[..<offset])
}

/// Reads one `T` from `bytes` at `offset` and moves `offset` past it.
func unmarshal<T>(
    _ bytes: [UInt8], at offset: inout Int, _ function: UnmarshalFunction<T>, _ name: String, zero: T
) throws(TPMError) -> T {
    var value = zero
    let rc = bytes.withUnsafeBufferPointer { buffer in
        withUnsafeMutablePointer(to: &value) { function(buffer.baseAddress, buffer.count, &offset, $0) }
    }
    guard rc == GH_TPM2_RC_SUCCESS else {
        throw TPMError(
            code: .malformedBlob, operation: "unmarshal \(name)",
            message: "\(bytes.count) bytes are not a well-formed \(name): "
                + (Tss2_RC_Decode(rc).map { String(cString: $0) } ?? "unknown error"))
    }
    return value
}

/// Reads a whole `T` from `data` (trailing bytes refused).
func unmarshal<T>(_ data: Data, _ function: UnmarshalFunction<T>, _ name: String, zero: T) throws(TPMError) -> T {
    let bytes = [UInt8](data)
    var offset = 0
    let value = try unmarshal(bytes, at: &offset, function, name, zero: zero)
    guard offset == bytes.count else {
        throw TPMError(
            code: .malformedBlob, operation: "unmarshal \(name)",
            message: "\(bytes.count - offset) unexpected bytes after the \(name)")
    }
    return value
}

/// A `TPM2B_*` structure holding `contents` (the size prefix is added here).
func tpm2b<T>(_ contents: some Collection<UInt8>, _ function: UnmarshalFunction<T>, _ name: String, zero: T)
    throws(TPMError) -> T
{
    guard contents.count <= Int(UInt16.max) else {
        throw TPMError(code: .invalidArgument, operation: name, message: "\(contents.count) bytes is too long")
    }
    var bytes = [UInt8(contents.count >> 8), UInt8(contents.count & 0xFF)]
    bytes.append(contentsOf: contents)
    defer { wipe(&bytes) }
    var offset = 0
    return try unmarshal(bytes, at: &offset, function, name, zero: zero)
}

/// The first `count` bytes of a C fixed-size array (imported as a tuple).
func bytes<Tuple>(of tuple: Tuple, count: some BinaryInteger) -> Data {
    withUnsafeBytes(of: tuple) { Data($0.prefix(Int(count))) }
}

/// Copies `source` into a C fixed-size array (imported as a tuple).
func copy<Tuple>(_ source: some Collection<UInt8>, into tuple: inout Tuple) {
    withUnsafeMutableBytes(of: &tuple) { raw in
        precondition(source.count <= raw.count, "buffer overflow")
        raw.copyBytes(from: source)
    }
}

/// Overwrites a value's memory with zeros (key material in C structures).
func wipe<T>(_ value: inout T) {
    withUnsafeMutableBytes(of: &value) { raw in
        if let base = raw.baseAddress { memset(base, 0, raw.count) }
    }
}

func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { raw in
        if let base = raw.baseAddress { memset(base, 0, raw.count) }
    }
}

// The marshalling functions of the structures this module uses, named once.
enum MU {
    static let publicMarshal: MarshalFunction<TPM2B_PUBLIC> = { Tss2_MU_TPM2B_PUBLIC_Marshal($0, $1, $2, $3) }
    static let publicUnmarshal: UnmarshalFunction<TPM2B_PUBLIC> = { Tss2_MU_TPM2B_PUBLIC_Unmarshal($0, $1, $2, $3) }
    static let privateMarshal: MarshalFunction<TPM2B_PRIVATE> = { Tss2_MU_TPM2B_PRIVATE_Marshal($0, $1, $2, $3) }
    static let privateUnmarshal: UnmarshalFunction<TPM2B_PRIVATE> = {
        Tss2_MU_TPM2B_PRIVATE_Unmarshal($0, $1, $2, $3)
    }
    static let nameMarshal: MarshalFunction<TPM2B_NAME> = { Tss2_MU_TPM2B_NAME_Marshal($0, $1, $2, $3) }
    static let idObjectUnmarshal: UnmarshalFunction<TPM2B_ID_OBJECT> = {
        Tss2_MU_TPM2B_ID_OBJECT_Unmarshal($0, $1, $2, $3)
    }
    static let encryptedSecretUnmarshal: UnmarshalFunction<TPM2B_ENCRYPTED_SECRET> = {
        Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal($0, $1, $2, $3)
    }
    static let dataUnmarshal: UnmarshalFunction<TPM2B_DATA> = { Tss2_MU_TPM2B_DATA_Unmarshal($0, $1, $2, $3) }
    static let maxBufferUnmarshal: UnmarshalFunction<TPM2B_MAX_BUFFER> = {
        Tss2_MU_TPM2B_MAX_BUFFER_Unmarshal($0, $1, $2, $3)
    }
    static let sensitiveDataUnmarshal: UnmarshalFunction<TPM2B_SENSITIVE_DATA> = {
        Tss2_MU_TPM2B_SENSITIVE_DATA_Unmarshal($0, $1, $2, $3)
    }
}

extension MU {
    static let digestUnmarshal: UnmarshalFunction<TPM2B_DIGEST> = { Tss2_MU_TPM2B_DIGEST_Unmarshal($0, $1, $2, $3) }
}
