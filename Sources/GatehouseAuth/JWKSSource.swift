import FoundationEssentials

/// Where a JWKS document comes from. The cache calls `fetch` on its schedule and on an unknown
/// `kid`; tests inject their own documents through this protocol.
public protocol JWKSSource: Sendable {
    /// Stable and unique among the sources: it names the source's keys in the disk cache (keys
    /// cached for a source that is no longer configured are not used) and in log lines.
    var identifier: String { get }
    /// The JWKS document's bytes. Throws (preferably an `AuthError` with `.keySetUnavailable`)
    /// when it cannot be had; the cache then keeps this source's last good keys.
    func fetch() async throws -> Data
}

/// A JWKS in a local file (provisioned with the site's configuration), read again at each refresh.
public struct FileJWKSSource: JWKSSource {
    public let path: String
    public var identifier: String { "file:" + path }

    public init(path: String) { self.path = path }

    public func fetch() async throws -> Data {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AuthError(.keySetUnavailable, "cannot read the JWKS file \(path)")
        }
        return data
    }
}

// The HTTPS source, `HTTPSJWKSSource`, is in GatehouseCore: it fetches with the swift-nio HTTPS
// client the gateway already has for DPS (GatehouseProvisioning), not URLSession, whose
// FoundationNetworking brings libcurl and its dependencies into the package.
