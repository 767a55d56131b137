import Foundation
import Logging
import Synchronization

/// The signing keys of one or more JWKS sources, kept on disk so verification works offline.
///
/// jwt-kit turns keys into verifiers but has no fetching or caching policy; this is Entra ID's
/// recommended one (PROTOCOLS.md §5.3), written here:
/// - refreshed on a schedule (`refreshIfDue`, driven by `run()`), and at once on an unknown
///   `kid` — but at most once per `minimumRefreshInterval` (5 min), however many tokens name
///   unknown keys; concurrent misses share one fetch;
/// - a source whose fetch fails, or yields no usable key, keeps its last good keys, however
///   old (an edge gateway must keep working through a long outage);
/// - a source that succeeds replaces its keys, so a key removed upstream stops verifying;
/// - the last good keys of every source are written to `cacheFile` (public members only) and
///   read back at start; keys cached for a source no longer configured are ignored.
public actor JWKSCache {
    public struct Policy: Sendable {
        /// How old the last successful fetch may be before the scheduled refresh runs again.
        public var refreshInterval: Duration = .seconds(3600)
        /// The least time between two fetches (scheduled or caused by an unknown `kid`).
        public var minimumRefreshInterval: Duration = .seconds(300)
        /// How often `run()` wakes to check whether a refresh is due.
        public var tick: Duration = .seconds(60)

        public init() {}
    }

    /// Per source, the last good keys (sanitised JWK members) and when they were fetched.
    struct SourceKeys: Codable, Sendable {
        var source: String
        var fetchedAt: Date
        var keys: [[String: JSONValue]]
    }

    private struct DiskFormat: Codable {
        var version = 1
        var sources: [SourceKeys]
    }

    private let sources: [any JWKSSource]
    private let cacheFile: String?
    private let policy: Policy
    private let clock: AuthClock
    private let logger: Logger

    private var stored: [String: SourceKeys] = [:]
    private var lastAttempt: Date?
    private var inFlight: Task<Void, Never>?
    /// How many times the sources were asked (for tests and metrics).
    public private(set) var fetchCount = 0

    /// The verifiers by `kid`, read without a hop onto the actor on the fast path.
    /// Written only by the actor (so writes are serial); read by any verifying task.
    private nonisolated let snapshot = Mutex<[String: VerificationKey]>([:])

    /// Loads the disk cache (if any) so that keys are usable before the first fetch.
    /// No source is asked here: `run()`, `refresh()` or an unknown `kid` does that.
    public init(
        sources: [any JWKSSource], cacheFile: String? = nil, policy: Policy = Policy(), clock: AuthClock = .system,
        logger: Logger = Logger(label: "gatehouse.auth.jwks")
    ) async throws(AuthError) {
        let identifiers = sources.map(\.identifier)
        guard !sources.isEmpty, Set(identifiers).count == identifiers.count else {
            throw AuthError(.configuration, "the JWKS sources must be at least one, with distinct identifiers")
        }
        self.sources = sources
        self.cacheFile = cacheFile
        self.policy = policy
        self.clock = clock
        self.logger = logger
        if let cacheFile, let data = FileManager.default.contents(atPath: cacheFile) {
            if let disk = try? JSONDecoder().decode(DiskFormat.self, from: data), disk.version == 1 {
                for entry in disk.sources where identifiers.contains(entry.source) {
                    let sanitized = entry.keys.map { $0.filter { VerificationKey.publicMembers.contains($0.key) } }
                    stored[entry.source] = SourceKeys(source: entry.source, fetchedAt: entry.fetchedAt, keys: sanitized)
                }
                logger.info(
                    "JWKS keys loaded from the disk cache",
                    metadata: ["file": "\(cacheFile)", "keys": "\(stored.values.reduce(0) { $0 + $1.keys.count })"])
            } else {
                logger.warning("JWKS disk cache unreadable; ignored", metadata: ["file": "\(cacheFile)"])
            }
        }
        await rebuild()
    }

    /// The key with this `kid`; on a miss, refreshes (unless the last fetch is under
    /// `minimumRefreshInterval` old) and looks again.
    func key(for kid: String) async -> VerificationKey? {
        if let key = cachedKey(for: kid) { return key }
        if let inFlight {
            await inFlight.value
        } else if mayFetch() {
            await refresh()
        }
        return snapshot.withLock { $0[kid] }
    }

    /// The key with this `kid` if it is loaded: the fast path, one lock, no hop onto the actor.
    nonisolated func cachedKey(for kid: String) -> VerificationKey? {
        snapshot.withLock { $0[kid] }
    }

    /// The `kid`s currently usable.
    public var keyIDs: Set<String> { snapshot.withLock { Set($0.keys) } }

    /// Refreshes if some source has no keys or keys fetched over `refreshInterval` ago (keys
    /// read from the disk cache count from when they were fetched), and the last attempt is
    /// over `minimumRefreshInterval` old — so a failing source is retried every 5 minutes,
    /// not every tick.
    public func refreshIfDue() async {
        if let inFlight {
            await inFlight.value
            return
        }
        let now = clock.now()
        let stale = sources.contains { source in
            guard let fetchedAt = stored[source.identifier]?.fetchedAt else { return true }
            return now.timeIntervalSince(fetchedAt) >= policy.refreshInterval.seconds
        }
        guard stale, mayFetch() else { return }
        await refresh()
    }

    /// Asks every source now (joining a refresh already under way).
    public func refresh() async {
        if let inFlight {
            await inFlight.value
            return
        }
        let task = Task { await self.fetchAll() }
        inFlight = task
        await task.value
        inFlight = nil
    }

    /// Refreshes when due until cancelled: the daemon runs this in its service group.
    public func run() async {
        while !Task.isCancelled {
            await refreshIfDue()
            try? await Task.sleep(for: policy.tick)
        }
    }

    private func mayFetch() -> Bool {
        guard let lastAttempt else { return true }
        return clock.now().timeIntervalSince(lastAttempt) >= policy.minimumRefreshInterval.seconds
    }

    private func fetchAll() async {
        lastAttempt = clock.now()
        fetchCount += 1
        var changed = false
        var fetched = false
        for source in sources {
            do {
                let data = try await source.fetch()
                let (keys, skipped) = try VerificationKey.parse(jwks: data)
                for reason in skipped {
                    logger.debug(
                        "JWKS key skipped", metadata: ["source": "\(source.identifier)", "reason": "\(reason)"])
                }
                // Loadable by jwt-kit too, or the document does not count as good.
                var loadable: [[String: JSONValue]] = []
                for key in keys where await VerificationKey.make(from: key) != nil { loadable.append(key) }
                guard !loadable.isEmpty else {
                    throw AuthError(.keySetUnavailable, "the document has no usable signing key")
                }
                if stored[source.identifier]?.keys != loadable { changed = true }
                stored[source.identifier] = SourceKeys(
                    source: source.identifier, fetchedAt: clock.now(), keys: loadable)
                fetched = true
            } catch {
                let reason = (error as? AuthError)?.message ?? "\(type(of: error))"
                logger.warning(
                    "JWKS refresh failed; keeping the last good keys",
                    metadata: [
                        "source": "\(source.identifier)", "reason": "\(reason)",
                        "keptKeys": "\(stored[source.identifier]?.keys.count ?? 0)",
                    ])
            }
        }
        if changed { await rebuild() }
        if fetched { writeCache() }  // also when unchanged: the cache records when keys were fetched
    }

    /// Rebuilds the verifiers from the stored keys. A `kid` in two sources: the first source wins.
    private func rebuild() async {
        var keys: [String: VerificationKey] = [:]
        for source in sources {
            for members in stored[source.identifier]?.keys ?? [] {
                guard let key = await VerificationKey.make(from: members), keys[key.keyID] == nil else { continue }
                keys[key.keyID] = key
            }
        }
        snapshot.withLock { $0 = keys }
        logger.info("JWKS keys in use", metadata: ["kids": "\(keys.keys.sorted().joined(separator: ","))"])
    }

    private func writeCache() {
        guard let cacheFile else { return }
        let disk = DiskFormat(sources: sources.compactMap { stored[$0.identifier] })
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(disk).write(to: URL(fileURLWithPath: cacheFile), options: .atomic)
        } catch {
            logger.warning("JWKS disk cache not written", metadata: ["file": "\(cacheFile)", "error": "\(error)"])
        }
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
