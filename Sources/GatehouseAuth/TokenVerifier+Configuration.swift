import FoundationEssentials

/// A JWS algorithm the verifier can be allowed to accept. `none` is not one of them: there is no
/// configuration that accepts an unsigned token.
public struct JWTAlgorithmName: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let rs256 = Self(rawValue: "RS256")
    public static let rs384 = Self(rawValue: "RS384")
    public static let rs512 = Self(rawValue: "RS512")
    public static let ps256 = Self(rawValue: "PS256")
    public static let ps384 = Self(rawValue: "PS384")
    public static let ps512 = Self(rawValue: "PS512")
    public static let es256 = Self(rawValue: "ES256")
    public static let es384 = Self(rawValue: "ES384")
    public static let es512 = Self(rawValue: "ES512")
    public static let hs256 = Self(rawValue: "HS256")
    public static let hs384 = Self(rawValue: "HS384")
    public static let hs512 = Self(rawValue: "HS512")

    static let known: Set<Self> = [
        .rs256, .rs384, .rs512, .ps256, .ps384, .ps512, .es256, .es384, .es512, .hs256, .hs384, .hs512,
    ]

    /// The JWK `kty` whose keys can verify this algorithm.
    var keyType: String {
        switch rawValue.prefix(2) {
        case "RS", "PS": "RSA"
        case "ES": "EC"
        default: "oct"
        }
    }

    var isHMAC: Bool { rawValue.hasPrefix("HS") }
}

/// A shared secret for HMAC tokens. Only this explicit configuration lets an `HS*` algorithm in;
/// a JWKS never does (its keys are public, and an HMAC "verified" with a public key is the
/// classic key-confusion attack).
public struct SymmetricVerificationKey: Sendable {
    public var keyID: String
    public var algorithm: JWTAlgorithmName
    public var secret: [UInt8]

    public init(keyID: String, algorithm: JWTAlgorithmName = .hs256, secret: [UInt8]) {
        self.keyID = keyID
        self.algorithm = algorithm
        self.secret = secret
    }
}

extension TokenVerifier {
    /// What a token must be to pass. Entra ID v2 access tokens pass with only `audiences` and
    /// `tenants` set; v1 tokens also with `acceptV1Issuer` (or an explicit v1 issuer).
    public struct Configuration: Sendable {
        /// The accepted header `alg` values. Default RS256 and ES256.
        public var algorithms: Set<JWTAlgorithmName> = [.rs256, .es256]
        /// Accepted `iss` values, compared exactly after `{tenantid}` is replaced by the token's
        /// `tid`. Empty: Entra ID's v2 form, `https://login.microsoftonline.com/{tenantid}/v2.0`.
        public var issuers: Set<String> = []
        /// Also accept Entra ID's v1 issuer, `https://sts.windows.net/{tenantid}/` (needs
        /// `tenants`). Off by default: v1 is only accepted when asked for.
        public var acceptV1Issuer = false
        /// Claims a token must carry. `exp` always is (a command id is remembered against
        /// replays while its token lives); `nbf` and `iat` by default, as Entra ID always sends
        /// them. Other names only need to be present.
        public var requiredClaims: Set<String> = Self.defaultRequiredClaims
        /// Accepted `aud` values (v1: App ID URI or client ID; v2: client ID). At least one.
        public var audiences: Set<String>
        /// Accepted tenants (`tid`, GUIDs, any case). When not empty, `tid` is required, must be
        /// one of these, and must be the first path segment of `iss`.
        public var tenants: Set<String> = []
        /// Leeway for `exp`, `nbf` and `iat`.
        public var clockSkew: Duration = .seconds(120)
        /// Tokens longer than this (bytes of the compact form) are refused before any decoding.
        public var maxTokenBytes: Int = 8 * 1024
        /// Keys for HMAC algorithms; required for (and only used with) `HS*` in `algorithms`.
        public var symmetricKeys: [SymmetricVerificationKey] = []

        public init(audiences: Set<String>, tenants: Set<String> = [], issuers: Set<String> = []) {
            self.audiences = audiences
            self.tenants = tenants
            self.issuers = issuers
        }

        public static let defaultRequiredClaims: Set<String> = ["exp", "nbf", "iat"]
        static let entraV1IssuerTemplate = "https://sts.windows.net/{tenantid}/"
        static let entraV2IssuerTemplate = "https://login.microsoftonline.com/{tenantid}/v2.0"

        /// Checks the configuration and normalises it (tenants lower-cased, default issuers).
        func validated() throws(AuthError) -> Configuration {
            var result = self
            func fail(_ message: String) -> AuthError { AuthError(.configuration, message) }
            guard !audiences.isEmpty, !audiences.contains("") else { throw fail("at least one audience is required") }
            guard !algorithms.isEmpty else { throw fail("at least one algorithm is required") }
            for algorithm in algorithms where !JWTAlgorithmName.known.contains(algorithm) {
                throw fail("unsupported algorithm \(algorithm)")
            }
            for algorithm in algorithms where algorithm.isHMAC {
                guard symmetricKeys.contains(where: { $0.algorithm == algorithm }) else {
                    throw fail("\(algorithm) is allowed but no symmetric key is configured for it")
                }
            }
            for key in symmetricKeys {
                guard key.algorithm.isHMAC, algorithms.contains(key.algorithm) else {
                    throw fail("symmetric key \(key.keyID): its algorithm \(key.algorithm) is not an allowed HMAC")
                }
                guard !key.keyID.isEmpty, key.secret.count >= 32 else {
                    throw fail("symmetric key \(key.keyID): needs a key id and at least 32 bytes of secret")
                }
            }
            result.tenants = Set(tenants.map { $0.lowercased() })
            for tenant in result.tenants where !TokenVerifier.isGUID(tenant) {
                throw fail("tenant \(tenant) is not a GUID")
            }
            if result.issuers.isEmpty {
                guard !result.tenants.isEmpty else { throw fail("set issuers, tenants or both") }
                result.issuers = [Self.entraV2IssuerTemplate]
            }
            if acceptV1Issuer {
                guard !result.tenants.isEmpty else { throw fail("accepting the v1 issuer needs the accepted tenants") }
                result.issuers.insert(Self.entraV1IssuerTemplate)
            }
            guard requiredClaims.contains("exp") else {
                throw fail("exp must be a required claim (a command id is remembered while its token lives)")
            }
            guard !requiredClaims.contains("") else { throw fail("a required claim has an empty name") }
            if result.tenants.isEmpty, result.issuers.contains(where: { $0.contains("{tenantid}") }) {
                throw fail("an issuer template with {tenantid} needs the accepted tenants")
            }
            guard clockSkew >= .zero, clockSkew <= .seconds(600) else {
                throw fail("clock skew must be between 0 and 10 minutes")
            }
            guard maxTokenBytes > 0 else { throw fail("the maximum token size must be positive") }
            return result
        }
    }
}
