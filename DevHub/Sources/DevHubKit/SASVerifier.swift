import Crypto
import FoundationEssentials
import GatehouseBasics
import IoTHubWire

/// A Shared Access Signature token as a device presented it (docs/protocols.md §0):
///
///     SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]
///
/// Fields may come in any order. ``signedResource`` keeps `sr` exactly as sent, because that
/// is the string the device signed; ``resource`` is its percent-decoded form, which is what
/// is compared with the identity.
///
/// Its `description` leaves out the signature, which must never reach a log line.
public struct SASToken: Sendable, CustomStringConvertible {
    /// `sr` as it appeared in the token, still percent-encoded if the device encoded it.
    public var signedResource: String
    /// `sr` percent-decoded.
    public var resource: String
    /// `sig`, percent-decoded and base64-decoded.
    var signature: [UInt8]
    /// `se`: seconds since the epoch, as sent (the signed text).
    public var expiryText: String
    public var expiry: Int64
    /// `skn`, percent-decoded; nil if absent, possibly empty (the C SDK sends `skn=`).
    public var keyName: String?

    static let prefix = "SharedAccessSignature "

    public var description: String {
        "SAS token for \"\(resource)\" expiring at \(expiry)"
            + (keyName.map { " with key name \"\($0)\"" } ?? "")
    }

    /// Parses a token; nil if it is not a well-formed SAS token.
    public init?(_ text: String) {
        guard text.hasPrefix(Self.prefix) else { return nil }
        var fields: [String: Substring] = [:]
        for segment in text.dropFirst(Self.prefix.count).split(separator: "&") {
            guard let equals = segment.firstIndex(of: "=") else { return nil }
            let key = String(segment[..<equals])
            guard fields[key] == nil else { return nil }  // a repeated field is ambiguous
            fields[key] = segment[segment.index(after: equals)...]
        }
        guard let sr = fields["sr"], !sr.isEmpty, let sig = fields["sig"], let se = fields["se"],
            let expiry = Int64(se), expiry > 0,
            let signature = Data(base64Encoded: PropertyBag.percentDecode(sig)), signature.count == 32
        else { return nil }
        signedResource = String(sr)
        resource = PropertyBag.percentDecode(sr)
        self.signature = [UInt8](signature)
        expiryText = String(se)
        self.expiry = expiry
        keyName = fields["skn"].map { PropertyBag.percentDecode($0) }
    }
}

/// Why a SAS token was refused. Descriptions are safe to log: they never contain the token.
public enum SASVerdict: Sendable, Equatable, CustomStringConvertible {
    case valid
    case expired(expiry: Int64, now: Int64)
    /// The token is for another resource than the identity connecting.
    case wrongResource(String)
    /// A key name (`skn`) this endpoint does not accept, e.g. a hub policy for a device.
    case wrongKeyName(String)
    /// The signature matches none of the identity's keys.
    case badSignature

    public var description: String {
        switch self {
        case .valid: "valid"
        case .expired(let expiry, let now): "token expired at \(expiry) (now \(now))"
        case .wrongResource(let resource): "token is for resource \"\(resource)\""
        case .wrongKeyName(let name): "token names key \"\(name)\""
        case .badSignature: "signature does not match the identity's keys"
        }
    }
}

/// Checks SAS tokens the way IoT Hub and DPS do.
public enum SASVerifier {
    /// Verifies `token` for `expectedResource` against any of `keys` (raw key bytes).
    ///
    /// - The resource is compared after percent-decoding and case-insensitively, so the
    ///   documented encoded form, the C SDK's unencoded form and aziot's lowercase form are all
    ///   accepted (docs/protocols.md §0, §6.1).
    /// - The signature is recomputed over `sr` exactly as sent + "\n" + `se`, and compared in
    ///   constant time.
    /// - `allowedKeyNames`: the `skn` values accepted; an absent `skn` is always accepted.
    public static func verify(
        _ token: SASToken, expectedResource: String, keys: [[UInt8]],
        allowedKeyNames: Set<String> = [""], now: Date = Date()
    ) -> SASVerdict {
        let nowSeconds = Int64(now.timeIntervalSince1970)
        if let keyName = token.keyName, !allowedKeyNames.contains(keyName) {
            return .wrongKeyName(keyName)
        }
        guard token.resource.lowercased() == expectedResource.lowercased() else {
            return .wrongResource(token.resource)
        }
        guard token.expiry > nowSeconds else { return .expired(expiry: token.expiry, now: nowSeconds) }
        let message = Data((token.signedResource + "\n" + token.expiryText).utf8)
        var matched = false
        for key in keys where !key.isEmpty {
            let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))
            // Every key is tried, whatever matched, so timing does not tell which key it was.
            matched = constantTimeEqual(Array(mac), token.signature) || matched
        }
        return matched ? .valid : .badSignature
    }

    /// Compares two byte strings in time that depends only on their lengths.
    static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }

    /// Builds a token the way the Azure SDKs do (resource percent-encoded, that text signed):
    /// for tests, the control API's examples, and the benchmark.
    public static func makeToken(
        resource: String, key: [UInt8], expiry: Int64, keyName: String? = nil
    ) -> String {
        let encoded = PropertyBag.percentEncode(resource)
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data("\(encoded)\n\(expiry)".utf8), using: SymmetricKey(data: key))
        var token =
            "SharedAccessSignature sr=\(encoded)&sig=\(PropertyBag.percentEncode(Data(mac).base64EncodedString()))&se=\(expiry)"
        if let keyName { token += "&skn=\(PropertyBag.percentEncode(keyName))" }
        return token
    }

    /// The per-device key of an enrollment group: HMAC-SHA256(group key, registration id)
    /// (docs/protocols.md §1.a). Returns the raw 32 key bytes.
    public static func deriveDeviceKey(groupKey: [UInt8], registrationID: String) -> [UInt8] {
        Array(
            HMAC<SHA256>.authenticationCode(
                for: Data(registrationID.utf8), using: SymmetricKey(data: groupKey)))
    }
}

/// A symmetric key as IoT Hub and DPS show it: base64 text of 16–64 raw bytes.
public struct SymmetricKeyText: Sendable, Equatable, CustomStringConvertible {
    public let base64: String
    public let bytes: [UInt8]

    public init?(base64 text: String) {
        let trimmed = text.trimmingWhitespace
        guard let data = Data(base64Encoded: trimmed), (16...64).contains(data.count) else {
            return nil
        }
        base64 = trimmed
        bytes = [UInt8](data)
    }

    public init(bytes: [UInt8]) {
        self.bytes = bytes
        base64 = Data(bytes).base64EncodedString()
    }

    /// Never the key itself: a key must not reach a log line by accident.
    public var description: String { "<symmetric key, \(bytes.count) bytes>" }

    /// 32 random bytes, like the keys IoT Hub generates.
    public static func random() -> SymmetricKeyText {
        SymmetricKeyText(bytes: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }
}
