import CTSS2

/// A failed TPM operation: the return code, what it means, and which operation failed.
///
/// Messages never contain key material: they are built from return codes, operation names and
/// sizes only.
public struct TPMError: Error, Sendable, CustomStringConvertible {
    /// A TSS2 return code (`TSS2_RC`): the layer in bits 16–23, the layer's code below.
    ///
    /// Use the named constants with `~=` (or in a `switch`/`catch` pattern): a format-one TPM code
    /// matches whatever parameter, handle or session number it carries (`.integrity` matches
    /// `0x9F`, `0x19F`, `0x29F`…), and a layer constant (`.tctiLayer`) matches every code of
    /// that layer.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        init(_ rawValue: UInt32) { self.rawValue = rawValue }

        /// The layer number: 0 TPM, 7 ESAPI, 9 marshalling, 10 TCTI, 11/12 resource manager,
        /// 0xF0 gatehouse's own checks.
        public var layer: UInt8 { UInt8(truncatingIfNeeded: rawValue >> 16) }

        /// The code without the parameter/handle/session number of TPM format-one codes.
        public var base: Code {
            let isTPMLayer = layer == 0 || layer == 11 || layer == 12
            if isTPMLayer && rawValue & 0x80 != 0 { return Code(rawValue & 0xFFFF_F0BF) }
            return self
        }

        /// A family match, symmetric: equal base codes, or the same layer when either side is a
        /// bare layer constant.
        public static func ~= (pattern: Code, value: Code) -> Bool {
            if pattern.isLayer || value.isLayer { return pattern.layer == value.layer }
            return pattern.base == value.base
        }

        private var isLayer: Bool { rawValue & 0xFFFF == 0 && layer != 0 }

        public var description: String {
            let hex = String(rawValue, radix: 16, uppercase: true)
            return "0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex
        }

        // TPM layer.
        /// TPM2_Startup was already done (harmless) or not done yet.
        public static let initialize = Code(GH_TPM2_RC_INITIALIZE)
        /// A persistent handle is already taken (EvictControl).
        public static let nvDefined = Code(GH_TPM2_RC_NV_DEFINED)
        public static let attributes = Code(GH_TPM2_RC_ATTRIBUTES)
        public static let value = Code(GH_TPM2_RC_VALUE)
        public static let handle = Code(GH_TPM2_RC_HANDLE)
        public static let authFail = Code(GH_TPM2_RC_AUTH_FAIL)
        public static let keySize = Code(GH_TPM2_RC_KEY_SIZE)
        public static let size = Code(GH_TPM2_RC_SIZE)
        public static let insufficient = Code(GH_TPM2_RC_INSUFFICIENT)
        public static let key = Code(GH_TPM2_RC_KEY)
        public static let policyFail = Code(GH_TPM2_RC_POLICY_FAIL)
        /// An integrity check failed: a credential blob or duplicate was altered, or was made
        /// for another TPM.
        public static let integrity = Code(GH_TPM2_RC_INTEGRITY)
        public static let badAuth = Code(GH_TPM2_RC_BAD_AUTH)
        /// Out of object slots: transient objects were left loaded (swtpm has about three).
        public static let objectMemory = Code(GH_TPM2_RC_OBJECT_MEMORY)
        public static let sessionMemory = Code(GH_TPM2_RC_SESSION_MEMORY)
        public static let lockout = Code(GH_TPM2_RC_LOCKOUT)
        public static let retry = Code(GH_TPM2_RC_RETRY)

        // Software layers.
        public static let esapiLayer = Code(GH_TSS2_ESAPI_RC_LAYER)
        public static let marshallingLayer = Code(GH_TSS2_MU_RC_LAYER)
        /// Every transport failure: no TPM at that address, connection lost.
        public static let tctiLayer = Code(GH_TSS2_TCTI_RC_LAYER)
        public static let tctiIOError = Code(GH_TSS2_TCTI_RC_IO_ERROR)
        public static let tctiNoConnection = Code(GH_TSS2_TCTI_RC_NO_CONNECTION)

        // gatehouse's own checks (layer 0xF0).
        public static let gatehouseLayer = Code(0x00F0_0000)
        /// The context was closed.
        public static let closed = Code(0x00F0_0001)
        /// An argument was refused before reaching the TPM (an empty key, an unknown handle).
        public static let invalidArgument = Code(0x00F0_0002)
        /// A blob (wrapped key, `authenticationKey`) is not well formed.
        public static let malformedBlob = Code(0x00F0_0003)
        /// A persistent object that should exist does not.
        public static let notFound = Code(0x00F0_0004)
    }

    public var code: Code
    /// The operation that failed, for example `Esys_ActivateCredential`.
    public var operation: String
    /// What went wrong, in words (from `Tss2_RC_Decode` for TSS codes, plus a hint).
    public var message: String

    public init(code: Code, operation: String, message: String) {
        self.code = code
        self.operation = operation
        self.message = message
    }

    /// The error of a TSS return code, decoded with `Tss2_RC_Decode`.
    init(rc: TSS2_RC, operation: String, hint: String? = nil) {
        var text = Tss2_RC_Decode(rc).map { String(cString: $0) } ?? "unknown return code"
        if let hint { text += " — " + hint }
        self.init(code: Code(rc), operation: operation, message: text)
    }

    public var description: String { "\(operation) failed: \(message) (\(code))" }
}

/// Throws a `TPMError` unless `rc` is success.
@inline(__always)
func check(_ rc: TSS2_RC, _ operation: String, hint: String? = nil) throws(TPMError) {
    if rc != GH_TPM2_RC_SUCCESS { throw TPMError(rc: rc, operation: operation, hint: hint) }
}
