import FoundationEssentials
import GatehouseAuth
import GatehouseBasics
import GatehouseProvisioning
import NIOHTTP1

/// A JWKS at an HTTPS URL, such as `https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys`.
/// Kept small on purpose: one GET on its own connection, with a timeout and a size limit, over the
/// swift-nio HTTPS client DPS uses (`HTTPSRequest`): TLS 1.2 or later, the server verified against
/// the system's CAs (or `caFile`) and its host name. No redirects and no proxy: Entra ID's key
/// endpoints answer directly (docs/command-gate.md).
public struct HTTPSJWKSSource: JWKSSource {
    public let url: URL
    public var timeout: Duration = .seconds(10)
    public var maxBytes = 1 << 20
    /// The CA certificates to verify the server with; nil: the system's.
    public var caFile: String?
    public var identifier: String { url.absoluteString }

    public init(url: URL, caFile: String? = nil) throws(AuthError) {
        guard url.scheme?.lowercased() == "https", let host = url.host, !host.isEmpty else {
            throw AuthError(.configuration, "a JWKS URL must be https: \(url.absoluteString)")
        }
        self.url = url
        self.caFile = caFile
    }

    public func fetch() async throws -> Data {
        let host = (url.host ?? "").trimming(["[", "]"])
        var target = url.path.isEmpty ? "/" : url.path
        if let query = url.query { target += "?" + query }
        let request = HTTPSRequest(
            method: .GET, host: host, port: url.port ?? 443, target: target,
            headers: [("Accept", "application/json"), ("Cache-Control", "no-cache")], body: [])
        let response: HTTPSResponse
        do {
            response = try await request.send(caFile: caFile, timeout: timeout)
        } catch {
            throw AuthError(.keySetUnavailable, "GET \(identifier) failed: \(error)")
        }
        guard response.status == 200 else {
            throw AuthError(.keySetUnavailable, "GET \(identifier) answered HTTP \(response.status)")
        }
        guard !response.truncated, response.body.count <= maxBytes else {
            throw AuthError(.keySetUnavailable, "GET \(identifier): the document is over \(maxBytes) bytes")
        }
        return Data(response.body)
    }
}
