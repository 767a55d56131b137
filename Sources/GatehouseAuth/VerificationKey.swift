import FoundationEssentials
import JWTKit
import StrictJSON

/// One public key from a JWKS, turned by jwt-kit into a verifier for each algorithm it can serve.
///
/// The token's `alg` never picks the key type: the key is found by `kid`, and the token's `alg`
/// must be one this key already has a verifier for (RS*/PS* for RSA keys, ES256/384/512 for
/// P-256/384/521 keys, only the JWK's own `alg` when it states one).
struct VerificationKey: Sendable {
    let keyID: String
    let keyType: String
    /// The JWK's `issuer` member (Entra's multi-tenant key sets; may hold `{tenantid}`).
    let issuer: String?
    let verifiers: [JWTAlgorithmName: any JWTAlgorithm]

    /// The members kept from a JWK: public ones only, so the disk cache never holds a private
    /// key even if a misconfigured source published one.
    static let publicMembers: Set<String> = [
        "kty", "kid", "use", "alg", "n", "e", "crv", "x", "y", "x5t", "x5c", "issuer",
    ]

    private static let curveAlgorithm: [String: JWTAlgorithmName] = ["P-256": .es256, "P-384": .es384, "P-521": .es512]
    private static let rsaAlgorithms: [JWTAlgorithmName] = [.rs256, .rs384, .rs512, .ps256, .ps384, .ps512]

    /// The usable keys of a JWKS document, sanitised to their public members.
    ///
    /// Parsed key by key by hand rather than with jwt-kit's `JWKS` decoder, which refuses the
    /// whole set when one key has a type or `alg` it does not know (an encryption key, an
    /// `oct` key): one unusable key must not void the others. Keys without `kid`, with `use`
    /// other than `sig`, or that jwt-kit cannot load are skipped, with the reason returned.
    static func parse(jwks data: Data) throws(AuthError) -> (keys: [JSONObject], skipped: [String]) {
        guard let document = try? JSONValue(parsing: data), let keys = document["keys"]?.arrayValue else {
            throw AuthError(.keySetUnavailable, "not a JWKS document (a JSON object with a \"keys\" array)")
        }
        var usable: [JSONObject] = []
        var skipped: [String] = []
        for (index, key) in keys.enumerated() {
            guard let members = key.objectValue else {
                skipped.append("key \(index): not an object")
                continue
            }
            guard let kid = members["kid"]?.stringValue, !kid.isEmpty else {
                skipped.append("key \(index): no kid")
                continue
            }
            if let use = members["use"], use != "sig" {
                skipped.append("key \(kid): not a signing key")
                continue
            }
            guard members["kty"] == "RSA" || members["kty"] == "EC" else {
                skipped.append("key \(kid): unsupported key type")
                continue
            }
            usable.append(members.filter { publicMembers.contains($0.key) })
        }
        return (usable, skipped)
    }

    /// Builds the verifiers for one sanitised JWK with jwt-kit (`nil` when jwt-kit cannot load it,
    /// e.g. an RSA modulus under 2048 bits or a point not on the curve).
    static func make(from members: JSONObject) async -> VerificationKey? {
        guard let kid = members["kid"]?.stringValue, let kty = members["kty"]?.stringValue,
            var jwk = try? JSONDecoder().decode(JWK.self, from: Data(JSONValue.object(members).utf8Bytes))
        else { return nil }
        jwk.privateExponent = nil
        jwk.prime1 = nil
        jwk.prime2 = nil
        let stated = members["alg"]?.stringValue.map(JWTAlgorithmName.init(rawValue:))
        var candidates: [JWTAlgorithmName]
        switch kty {
        case "RSA": candidates = rsaAlgorithms
        case "EC":
            guard let curve = members["crv"]?.stringValue, let algorithm = curveAlgorithm[curve] else { return nil }
            candidates = [algorithm]
        default: return nil
        }
        if let stated { candidates = candidates.filter { $0 == stated } }
        var verifiers: [JWTAlgorithmName: any JWTAlgorithm] = [:]
        for algorithm in candidates {
            guard let jwkAlgorithm = JWK.Algorithm(rawValue: algorithm.rawValue) else { continue }
            var single = jwk
            single.algorithm = jwkAlgorithm
            // A fresh collection a (key, algorithm): jwt-kit's JWK signer remembers the first
            // algorithm it was made for, so one collection cannot serve RS256 and PS256 safely.
            let collection = JWTKeyCollection()
            guard (try? await collection.add(jwk: single)) != nil,
                let verifier = try? await collection.getKey(for: JWKIdentifier(string: kid), alg: algorithm.rawValue),
                verifier.name == algorithm.rawValue
            else { continue }
            verifiers[algorithm] = verifier
        }
        guard !verifiers.isEmpty else { return nil }
        return VerificationKey(keyID: kid, keyType: kty, issuer: members["issuer"]?.stringValue, verifiers: verifiers)
    }

    /// The verifier for a configured HMAC secret.
    static func make(symmetric key: SymmetricVerificationKey) async -> VerificationKey {
        let digest: DigestAlgorithm =
            switch key.algorithm {
            case .hs384: .sha384
            case .hs512: .sha512
            default: .sha256
            }
        let collection = JWTKeyCollection()
        await collection.add(
            hmac: HMACKey(from: key.secret), digestAlgorithm: digest, kid: JWKIdentifier(string: key.keyID))
        // Adding cannot fail and the kid was just added, so the lookup cannot either.
        let verifier = try! await collection.getKey(for: JWKIdentifier(string: key.keyID))
        return VerificationKey(keyID: key.keyID, keyType: "oct", issuer: nil, verifiers: [key.algorithm: verifier])
    }
}
