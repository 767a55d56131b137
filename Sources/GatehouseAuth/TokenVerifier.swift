import FoundationEssentials
import JWTKit
import Logging
import StrictJSON

/// Verifies the bearer tokens that come with cloud-to-device commands (Entra ID access tokens,
/// v1 and v2).
///
/// The order of checks follows RFC 8725 and docs/protocols.md §5.4, cheapest and least trusting
/// first: size; shape and header (`alg` on the allow-list, no `crit`, a `kid`); the key by `kid`
/// and an `alg` that key can serve; the signature (jwt-kit); only then the payload is parsed —
/// unsigned bytes never reach the JSON decoder — and the required claims, `exp`/`nbf`/`iat`, `aud`,
/// `tid` and `iss` checked.
///
/// Thread-safe; `verify` can be called concurrently. On the fast path (known `kid`) it takes
/// one lock and does not suspend.
public final class TokenVerifier: Sendable {
    public let configuration: Configuration
    private let keys: JWKSCache?
    private let symmetricKeys: [String: VerificationKey]
    private let clock: AuthClock
    private let logger: Logger

    /// - Parameters:
    ///   - keys: the JWKS keys; nil only when every allowed algorithm is HMAC with configured keys.
    public init(
        configuration: Configuration, keys: JWKSCache?, clock: AuthClock = .system,
        logger: Logger = Logger(label: "gatehouse.auth")
    ) async throws(AuthError) {
        let configuration = try configuration.validated()
        if keys == nil, configuration.algorithms.contains(where: { !$0.isHMAC }) {
            throw AuthError(.configuration, "asymmetric algorithms are allowed but no JWKS is configured")
        }
        var symmetric: [String: VerificationKey] = [:]
        for key in configuration.symmetricKeys {
            symmetric[key.keyID] = await VerificationKey.make(symmetric: key)
        }
        self.configuration = configuration
        self.keys = keys
        self.symmetricKeys = symmetric
        self.clock = clock
        self.logger = logger
    }

    /// Verifies a compact JWS (without the `Bearer ` prefix).
    public func verify(_ token: String) async -> Result<VerifiedToken, AuthError> {
        do {
            return .success(try await check(token))
        } catch {
            logger.debug("token refused", metadata: ["code": "\(error.code)"])
            return .failure(error)
        }
    }

    /// The token of an `Authorization`-style value, `Bearer <jwt>` (scheme in any case), or nil.
    public static func bearerToken(fromAuthorization value: String) -> String? {
        // On UTF-8 bytes rather than Foundation's trimming (which bridges to NSString on Linux):
        // this runs once a command.
        let bytes = value.utf8
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
        guard var start = bytes.firstIndex(where: { !isSpace($0) }) else { return nil }
        let scheme = Array("bearer".utf8)
        for expected in scheme {
            guard start != bytes.endIndex, bytes[start] | 0x20 == expected else { return nil }
            start = bytes.index(after: start)
        }
        guard start != bytes.endIndex, isSpace(bytes[start]) else { return nil }
        guard let first = bytes[start...].firstIndex(where: { !isSpace($0) }),
            let last = bytes[first...].lastIndex(where: { !isSpace($0) })
        else { return nil }
        return String(decoding: bytes[first...last], as: UTF8.self)
    }

    // MARK: - The procedure

    private func check(_ token: String) async throws(AuthError) -> VerifiedToken {
        guard token.utf8.count <= configuration.maxTokenBytes else {
            throw AuthError(.tooLarge, "the token is over \(configuration.maxTokenBytes) bytes")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw AuthError(.malformed, "a token is three base64url parts separated by periods")
        }
        let header = try Self.decodeObject(parts[0], what: "header")

        guard let alg = header["alg"]?.stringValue else {
            throw AuthError(.malformed, "the header has no alg")
        }
        let algorithm = JWTAlgorithmName(rawValue: alg)
        guard configuration.algorithms.contains(algorithm) else {
            // The name is echoed only when it is a known one: header text is the caller's.
            let shown =
                JWTAlgorithmName.known.contains(algorithm) || alg.lowercased() == "none" ? alg : "this algorithm"
            throw AuthError(.algorithmNotAllowed, "\(shown) is not an allowed algorithm")
        }
        guard header["crit"] == nil else {
            throw AuthError(
                .unsupportedCritical, "the header has critical extensions (crit), none of which is supported")
        }
        guard let kid = header["kid"]?.stringValue, !kid.isEmpty else {
            throw AuthError(.missingKeyID, "the header has no kid")
        }

        let key: VerificationKey
        if algorithm.isHMAC {
            // Only configured secrets serve HMAC; a JWKS key of the same kid never does.
            guard let symmetric = symmetricKeys[kid] else {
                throw AuthError(.unknownKey, "no symmetric key has the token's kid")
            }
            key = symmetric
        } else {
            guard let keys else { throw AuthError(.unknownKey, "no key set is configured") }
            if let cached = keys.cachedKey(for: kid) {
                key = cached
            } else {
                // After a refresh (rate-limited): unknown kid, empty key set, or keys too old.
                key = try await keys.key(for: kid).get()
            }
        }
        guard let verifier = key.verifiers[algorithm] else {
            throw AuthError(.algorithmKeyMismatch, "the key the token names (\(key.keyType)) cannot verify \(alg)")
        }

        guard let signature = Base64URL.decode(parts[2]), !signature.isEmpty else {
            throw AuthError(.malformed, "the signature is missing or not base64url")
        }
        let signingInput = token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count)
        let valid: Bool
        do {
            valid = try verifier.verify(signature, signs: Array(signingInput))
        } catch {
            valid = false
        }
        guard valid else { throw AuthError(.badSignature, "the signature does not verify with the key") }

        let claims = try Self.decodeObject(parts[1], what: "payload")
        return try checkClaims(claims, key: key, kid: kid, alg: alg)
    }

    private func checkClaims(_ claims: JSONObject, key: VerificationKey, kid: String, alg: String)
        throws(AuthError) -> VerifiedToken
    {
        let now = clock.now().timeIntervalSince1970
        let skew = configuration.clockSkew.seconds

        // The names come from the configuration, never from the token.
        for name in configuration.requiredClaims.sorted() where claims[name] == nil {
            throw AuthError(.missingClaim, "\(name) is missing (a required claim)")
        }
        guard let exp = Self.time(claims["exp"]) else {
            throw AuthError(.missingClaim, "exp is missing or not a number")
        }
        guard now <= exp + skew else { throw AuthError(.expired, "the token has expired") }
        let nbf = try Self.optionalTime(claims, "nbf")
        if let nbf, now + skew < nbf { throw AuthError(.notYetValid, "the token is not valid yet (nbf)") }
        let iat = try Self.optionalTime(claims, "iat")
        if let iat, now + skew < iat { throw AuthError(.issuedInFuture, "the token is issued in the future (iat)") }

        let audiences: [String]
        switch claims["aud"] {
        case .string(let value): audiences = [value]
        case .array(let values) where values.allSatisfy({ $0.stringValue != nil }):
            audiences = values.compactMap(\.stringValue)
        default: throw AuthError(.missingClaim, "aud is missing or not a string or array of strings")
        }
        guard let audience = audiences.first(where: configuration.audiences.contains) else {
            throw AuthError(.wrongAudience, "the token is not for this gateway's audience")
        }

        guard let issuer = claims["iss"]?.stringValue else {
            throw AuthError(.missingClaim, "iss is missing or not a string")
        }
        let tenant = try checkTenant(claims["tid"], issuer: issuer)
        try checkIssuer(issuer, tenant: tenant, key: key)

        guard let subject = claims["sub"]?.stringValue, !subject.isEmpty else {
            throw AuthError(.missingClaim, "sub is missing or not a string")
        }
        return VerifiedToken(
            claims: claims, subject: subject, objectID: claims["oid"]?.stringValue, tenant: tenant, issuer: issuer,
            audience: audience, expiresAt: Date(timeIntervalSince1970: exp),
            notBefore: nbf.map(Date.init(timeIntervalSince1970:)), issuedAt: iat.map(Date.init(timeIntervalSince1970:)),
            tokenID: claims["uti"]?.stringValue ?? claims["jti"]?.stringValue, version: claims["ver"]?.stringValue,
            keyID: kid, algorithm: alg)
    }

    /// The tenant rule (hand-written: jwt-kit knows no tenants): with tenants configured, `tid`
    /// must be a GUID on the list and the first path segment of `iss`, as in both Entra forms
    /// `https://sts.windows.net/{tid}/` and `https://login.microsoftonline.com/{tid}/v2.0`.
    private func checkTenant(_ claim: JSONValue?, issuer: String) throws(AuthError) -> String? {
        guard !configuration.tenants.isEmpty else { return claim?.stringValue?.lowercased() }
        guard let tid = claim?.stringValue?.lowercased(), Self.isGUID(tid) else {
            throw AuthError(.wrongTenant, "tid is missing or not a GUID")
        }
        guard configuration.tenants.contains(tid) else {
            throw AuthError(.wrongTenant, "the token's tenant is not an accepted one")
        }
        // https://{host}/{tid}/...: split by hand (Foundation's URL parser is slow on this path).
        let segments = issuer.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard segments.count >= 4, String(decoding: segments[0], as: UTF8.self) == "https:", segments[1].isEmpty,
            !segments[2].isEmpty, String(decoding: segments[3], as: UTF8.self).lowercased() == tid
        else {
            throw AuthError(.wrongIssuer, "iss does not name the token's tenant (tid)")
        }
        return tid
    }

    /// `iss` against the configured issuers with `{tenantid}` replaced by the token's `tid`, and
    /// against the signing key's own `issuer` when the JWKS states one (a key published for one
    /// tenant must not sign for another; docs/protocols.md §5.4, step 5).
    private func checkIssuer(_ issuer: String, tenant: String?, key: VerificationKey) throws(AuthError) {
        func expand(_ template: String) -> String? {
            guard template.contains("{tenantid}") else { return template }
            guard let tenant else { return nil }
            return template.replacing("{tenantid}", with: tenant)
        }
        guard configuration.issuers.contains(where: { expand($0) == issuer }) else {
            throw AuthError(.wrongIssuer, "the token's issuer is not an accepted one")
        }
        if let keyIssuer = key.issuer, expand(keyIssuer) != issuer {
            throw AuthError(.wrongIssuer, "the signing key is not published for the token's issuer")
        }
    }

    // MARK: - Helpers

    /// The header or payload, parsed strictly (StrictJSON): a member named twice, for one, is
    /// refused rather than read one way here and another by the next parser in line.
    private static func decodeObject(_ part: Substring, what: String) throws(AuthError) -> JSONObject {
        guard let data = Base64URL.decode(part) else {
            throw AuthError(.malformed, "the \(what) is not base64url")
        }
        let value: JSONValue
        do {
            value = try JSONValue(parsing: data)
        } catch {
            throw AuthError(.malformed, "the \(what) is not valid JSON (at byte \(error.offset): \(error.message))")
        }
        guard let object = value.objectValue else {
            throw AuthError(.malformed, "the \(what) is not a JSON object")
        }
        return object
    }

    /// A NumericDate (RFC 7519 §2): a finite JSON number.
    private static func time(_ value: JSONValue?) -> Double? {
        guard let number = value?.doubleValue, number.isFinite else { return nil }
        return number
    }

    private static func optionalTime(_ claims: JSONObject, _ name: String) throws(AuthError) -> Double? {
        guard let value = claims[name] else { return nil }
        guard let time = time(value) else { throw AuthError(.malformed, "\(name) is not a number") }
        return time
    }

    static func isGUID(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 36 else { return false }
        for (index, byte) in bytes.enumerated() {
            if [8, 13, 18, 23].contains(index) {
                guard byte == UInt8(ascii: "-") else { return false }
            } else {
                guard
                    (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                        || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
                        || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
                else { return false }
            }
        }
        return true
    }
}
