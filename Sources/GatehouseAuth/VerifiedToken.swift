import FoundationEssentials
import StrictJSON

/// A token whose signature, lifetime, issuer, audience and tenant all checked out.
public struct VerifiedToken: Sendable, Hashable {
    /// Every payload claim as it was (in order, numbers exact), for the rule policy (`token.roles`,
    /// `token.scp`, …).
    public let claims: JSONObject
    /// `sub`. For authorization keys prefer `objectID` with `tenant` (docs/protocols.md §5.4, step 6).
    public let subject: String
    /// `oid`, the immutable object id of the user or service principal, when present.
    public let objectID: String?
    /// `tid`, lower-cased; nil only when no tenants are configured and the token has none.
    public let tenant: String?
    public let issuer: String
    /// The `aud` value that matched a configured audience.
    public let audience: String
    public let expiresAt: Date
    public let notBefore: Date?
    public let issuedAt: Date?
    /// `uti` (Entra) or else `jti`: the token's id, for replay protection.
    public let tokenID: String?
    /// `ver`: "1.0" or "2.0" for Entra ID tokens.
    public let version: String?
    /// The header's `kid` and `alg`, for the audit log.
    public let keyID: String
    public let algorithm: String
}
