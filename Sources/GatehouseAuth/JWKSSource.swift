import Foundation

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

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

/// A JWKS at an HTTPS URL, such as `https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys`.
/// Kept small on purpose: one GET with a timeout and a size limit; TLS and proxies are
/// URLSession's (FoundationNetworking, libcurl, on Linux).
public struct HTTPSJWKSSource: JWKSSource {
    public let url: URL
    public var timeout: Duration = .seconds(10)
    public var maxBytes = 1 << 20
    public var identifier: String { url.absoluteString }

    public init(url: URL) throws(AuthError) {
        guard url.scheme?.lowercased() == "https", url.host != nil else {
            throw AuthError(.configuration, "a JWKS URL must be https: \(url.absoluteString)")
        }
        self.url = url
    }

    public func fetch() async throws -> Data {
        var request = URLRequest(url: url)
        request.timeoutInterval = Double(timeout.components.seconds)
        request.cachePolicy = .reloadIgnoringLocalCacheData
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        let data: Data
        let response: URLResponse
        do {
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw AuthError(.keySetUnavailable, "GET \(identifier) failed: \(error.localizedDescription)")
        }
        guard let http = response as? HTTPURLResponse, http.statusCode == 200 else {
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            throw AuthError(.keySetUnavailable, "GET \(identifier) answered HTTP \(status)")
        }
        guard data.count <= maxBytes else {
            throw AuthError(.keySetUnavailable, "GET \(identifier): the document is over \(maxBytes) bytes")
        }
        return data
    }
}
