/// Why a token was refused, or why the verifier could not be set up.
///
/// `code` is stable: the gate puts it in a method's 403 reason and in the audit log, and tests
/// and docs point at it. `message` is for people. Neither ever holds the token, any part of it
/// (header, payload or signature) or a key: a refused token is attacker-controlled text, and
/// a valid one is a bearer credential.
public struct AuthError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// A stable dotted identifier; new codes can be added without breaking callers.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// Not a compact JWS: wrong number of parts, bad base64url, header or payload not a JSON object.
        public static let malformed = Code(rawValue: "auth.malformed")
        /// Larger than the configured maximum; refused before any decoding.
        public static let tooLarge = Code(rawValue: "auth.too-large")
        /// The header's `alg` is not in the allow-list (`none` never is).
        public static let algorithmNotAllowed = Code(rawValue: "auth.algorithm-not-allowed")
        /// The header's `alg` does not fit the type of the key its `kid` names.
        public static let algorithmKeyMismatch = Code(rawValue: "auth.algorithm-key-mismatch")
        /// The header has a `crit` parameter; no JWS extension is understood here (RFC 7515 §4.1.11).
        public static let unsupportedCritical = Code(rawValue: "auth.unsupported-critical-header")
        /// The header has no `kid`.
        public static let missingKeyID = Code(rawValue: "auth.missing-kid")
        /// No key with the token's `kid`, even after a refresh of the key set.
        public static let unknownKey = Code(rawValue: "auth.unknown-key")
        /// The key set was read and holds no usable key (an authoritative empty JWKS: every key
        /// was revoked), so no token verifies.
        public static let keySetEmpty = Code(rawValue: "auth.keyset-empty")
        /// The only keys there are (or the key the token names) were fetched over `jwks_max_stale`
        /// ago and the key set could not be read since: they are no longer used.
        public static let keySetStale = Code(rawValue: "auth.keyset-stale")
        public static let badSignature = Code(rawValue: "auth.bad-signature")
        /// A claim the verifier needs (`iss`, `aud`, `sub`, and the required claims: by default
        /// `exp`, `nbf`, `iat`) is missing or has the wrong type.
        public static let missingClaim = Code(rawValue: "auth.missing-claim")
        public static let expired = Code(rawValue: "auth.expired")
        public static let notYetValid = Code(rawValue: "auth.not-yet-valid")
        /// `iat` is later than now plus the clock skew: the token claims to be issued in the future.
        public static let issuedInFuture = Code(rawValue: "auth.issued-in-future")
        public static let wrongIssuer = Code(rawValue: "auth.wrong-issuer")
        public static let wrongAudience = Code(rawValue: "auth.wrong-audience")
        public static let wrongTenant = Code(rawValue: "auth.wrong-tenant")
        /// The verifier's configuration is unusable (raised by `TokenVerifier.init`, never by `verify`).
        public static let configuration = Code(rawValue: "auth.configuration")
        /// A key set could not be fetched or read (raised by key sources; `verify` never returns it).
        public static let keySetUnavailable = Code(rawValue: "auth.keyset-unavailable")
    }
}
