import FoundationEssentials
import GatehouseAuth
import Logging

/// The verifier of callers' tokens that `[auth]` describes, made once at start.
struct TokenVerifierSetup {
    var verifier: TokenVerifier
    /// The key set, refreshed by a periodic service and on SIGHUP.
    var keys: JWKSCache
    /// The sources were not read before the start (HTTPS only, with keys in the disk cache):
    /// the refresh service reads them first, so an offline gateway does not wait for them.
    var refreshFirst: Bool

    /// Reads the JWKS file, the disk cache, or both, before the first command, so that a key
    /// removed from them is refused at once.
    init(auth: GatewayConfig.Auth, config: GatewayConfig, logger: Logger) async throws(StartupError) {
        var sources: [any JWKSSource] = []
        if let file = auth.jwksFile { sources.append(FileJWKSSource(path: file)) }
        do {
            if let url = auth.jwksURL, let parsed = URL(string: url) {
                sources.append(try HTTPSJWKSSource(url: parsed))
            }
            var policy = JWKSCache.Policy()
            policy.refreshInterval = auth.jwksRefresh
            policy.maxStale = auth.jwksMaxStale
            let cache = try await JWKSCache(sources: sources, cacheFile: auth.jwksCache, policy: policy, logger: logger)
            let warm = !(await cache.keyIDs.isEmpty)
            refreshFirst = false
            if auth.jwksFile != nil || !warm {
                await cache.refresh()
            } else {
                refreshFirst = true
            }
            var settings = TokenVerifier.Configuration(
                audiences: Set(auth.audiences), tenants: Set(auth.tenants), issuers: Set(auth.issuers))
            settings.algorithms = Set(auth.algorithms.map(JWTAlgorithmName.init(rawValue:)))
            settings.clockSkew = auth.clockSkew
            settings.maxTokenBytes = auth.maxTokenBytes
            settings.acceptV1Issuer = auth.acceptV1Issuer
            settings.requiredClaims = Set(auth.requiredClaims)
            verifier = try await TokenVerifier(configuration: settings, keys: cache, logger: logger)
            keys = cache
            let usable = await cache.keyIDs.count
            if usable == 0 {
                logger.warning(
                    "no usable signing key (none read yet, the key set is empty, or the keys are older than jwks_max_stale): every command is refused until the JWKS can be read",
                    metadata: ["jwks": "\(sources.map(\.identifier).joined(separator: ", "))"])
            } else {
                logger.info("token verification ready", metadata: ["keys": "\(usable)"])
            }
        } catch {
            throw StartupError("\(config.place("auth")): [auth]: \(error)", exitCode: StartupError.configExit)
        }
    }
}
