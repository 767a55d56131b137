import FoundationEssentials
import Logging
import StrictJSON
import Synchronization

/// The signing keys of one or more JWKS sources, kept on disk so verification works offline.
///
/// jwt-kit turns keys into verifiers but has no fetching or caching policy; this is Entra ID's
/// recommended one (docs/protocols.md §5.3), written here:
/// - refreshed on a schedule (`refreshIfDue`, which the daemon's "jwks refresh" service calls),
///   and at once on an unknown `kid` — but at most once per `minimumRefreshInterval` (5 min), however many tokens name
///   unknown keys; concurrent misses share one fetch;
/// - a source that is read successfully is authoritative: its keys replace the previous ones,
///   so a key removed upstream stops verifying — and a document with no usable key (`"keys": []`)
///   revokes them all;
/// - a source whose fetch fails, or that is not a JWKS document, keeps its last good keys, but
///   only until they are `maxStale` old (counted from the fetch that got them): after that they
///   are not used, and tokens they signed are refused until the source is read again;
/// - the last good keys of every source — an empty set too — are written to `cacheFile` with
///   their fetch time (public members only) and read back at start under the same rules, so a
///   restart neither resurrects revoked keys nor extends old ones; keys cached for a source no
///   longer configured are ignored.
public actor JWKSCache {
    public struct Policy: Sendable {
        /// How old the last successful fetch may be before the scheduled refresh runs again.
        public var refreshInterval: Duration = .seconds(3600)
        /// The least time between two fetches (scheduled or caused by an unknown `kid`).
        public var minimumRefreshInterval: Duration = .seconds(300)
        /// How long after their fetch a source's keys may still be used while the source cannot
        /// be read (`[auth] jwks_max_stale`).
        public var maxStale: Duration = .seconds(24 * 3600)

        public init() {}
    }

    /// Per source, the last good keys (sanitised JWK members; empty: the source revoked them
    /// all) and when they were fetched.
    struct SourceKeys: Sendable {
        var source: String
        var fetchedAt: Date
        var keys: [JSONObject]
    }

    /// The cache file: `{"sources": [{"fetchedAt": …, "keys": [{JWK}, …], "source": …}, …],
    /// "version": 1}`, `fetchedAt` in seconds since 2001-01-01 (what `JSONEncoder` wrote for a
    /// `Date`, so older files still read).
    private enum DiskFormat {
        static func encode(_ sources: [SourceKeys]) -> Data {
            let entries: [JSONValue] = sources.map { entry in
                [
                    "fetchedAt": JSONNumber(entry.fetchedAt.timeIntervalSinceReferenceDate).map(JSONValue.number) ?? 0,
                    "keys": .array(entry.keys.map(JSONValue.object)), "source": .string(entry.source),
                ]
            }
            let document: JSONValue = ["sources": .array(entries), "version": 1]
            return Data(document.formatted(JSONFormat(indentation: "  ", sortsKeys: true)).utf8)
        }

        /// The entries of a version 1 file, or nil when it is not one.
        static func decode(_ data: Data) -> [SourceKeys]? {
            guard let document = try? JSONValue(parsing: data), document["version"]?.intValue == 1,
                let entries = document["sources"]?.arrayValue
            else { return nil }
            var sources: [SourceKeys] = []
            for entry in entries {
                guard let source = entry["source"]?.stringValue, let fetchedAt = entry["fetchedAt"]?.doubleValue,
                    let keys = entry["keys"]?.arrayValue
                else { return nil }
                let objects = keys.compactMap(\.objectValue)
                guard objects.count == keys.count else { return nil }
                let date = Date(timeIntervalSinceReferenceDate: fetchedAt)
                sources.append(SourceKeys(source: source, fetchedAt: date, keys: objects))
            }
            return sources
        }
    }

    /// A verifier and the time after which it is too old to use.
    struct Entry: Sendable {
        let key: VerificationKey
        let usableUntil: Date
    }

    private let sources: [any JWKSSource]
    private let cacheFile: String?
    private let policy: Policy
    private nonisolated let clock: AuthClock
    private let logger: Logger

    private var stored: [String: SourceKeys] = [:]
    /// The verifiers of each source's stored keys, rebuilt when its keys change.
    private var built: [String: [VerificationKey]] = [:]
    /// Sources whose keys are past `maxStale`, already logged as such.
    private var expired: Set<String> = []
    private var lastAttempt: Date?
    private var inFlight: Task<Void, Never>?
    /// How many times the sources were asked (for tests and metrics).
    public private(set) var fetchCount = 0

    /// The verifiers by `kid` (in source order), read without a hop onto the actor on the fast
    /// path. Written only by the actor (so writes are serial); read by any verifying task.
    private nonisolated let snapshot = Mutex<[String: [Entry]]>([:])

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
        guard policy.maxStale > .zero else {
            throw AuthError(.configuration, "the maximum age of the last good keys must be positive")
        }
        self.sources = sources
        self.cacheFile = cacheFile
        self.policy = policy
        self.clock = clock
        self.logger = logger
        if let cacheFile, let data = FileManager.default.contents(atPath: cacheFile) {
            if let disk = DiskFormat.decode(data) {
                for entry in disk where identifiers.contains(entry.source) {
                    let sanitized = entry.keys.map { $0.filter { VerificationKey.publicMembers.contains($0.key) } }
                    stored[entry.source] = SourceKeys(source: entry.source, fetchedAt: entry.fetchedAt, keys: sanitized)
                }
                let now = clock.now()
                let old = stored.values.filter { !isUsable($0, now: now) }.map(\.source).sorted()
                logger.info(
                    "JWKS keys loaded from the disk cache",
                    metadata: [
                        "file": "\(cacheFile)", "keys": "\(stored.values.reduce(0) { $0 + $1.keys.count })",
                        "tooOld": "\(old.joined(separator: ","))",
                    ])
                // Marked now, so that they are logged once, here.
                for source in old {
                    expired.insert(source)
                    logger.warning(
                        "JWKS disk cache older than jwks_max_stale: its keys are not used",
                        metadata: [
                            "source": "\(source)", "fetchedAt": "\(stored[source]?.fetchedAt ?? now)",
                            "maxStale": "\(policy.maxStale)",
                        ])
                }
            } else {
                logger.warning("JWKS disk cache unreadable; ignored", metadata: ["file": "\(cacheFile)"])
            }
        }
        await rebuild(Set(stored.keys))
    }

    /// The key with this `kid`; on a miss, refreshes (unless the last fetch is under
    /// `minimumRefreshInterval` old) and looks again. The failure says why no key serves: no
    /// such `kid` (`auth.unknown-key`), no key at all (`auth.keyset-empty`), or only keys past
    /// `maxStale` (`auth.keyset-stale`).
    func key(for kid: String) async -> Result<VerificationKey, AuthError> {
        if let key = cachedKey(for: kid) { return .success(key) }
        if let inFlight {
            await inFlight.value
        } else if mayFetch() {
            await refresh()
        }
        if let key = cachedKey(for: kid) { return .success(key) }
        noteExpired()
        return .failure(missReason(for: kid))
    }

    /// The key with this `kid` if it is loaded and not too old: the fast path, one lock, no hop
    /// onto the actor.
    nonisolated func cachedKey(for kid: String) -> VerificationKey? {
        let now = clock.now()
        return snapshot.withLock { $0[kid]?.first { now <= $0.usableUntil }?.key }
    }

    /// The `kid`s currently usable (loaded and not past `maxStale`).
    public var keyIDs: Set<String> {
        let now = clock.now()
        return snapshot.withLock { Set($0.filter { $0.value.contains { now <= $0.usableUntil } }.keys) }
    }

    /// Refreshes if some source has no keys or keys fetched over `refreshInterval` ago (keys
    /// read from the disk cache count from when they were fetched), and the last attempt is
    /// over `minimumRefreshInterval` old — so a failing source is retried every 5 minutes,
    /// not every tick. Logs keys that have just become too old to use.
    public func refreshIfDue() async {
        if let inFlight {
            await inFlight.value
            return
        }
        noteExpired()
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

    private func mayFetch() -> Bool {
        guard let lastAttempt else { return true }
        return clock.now().timeIntervalSince(lastAttempt) >= policy.minimumRefreshInterval.seconds
    }

    private func isUsable(_ keys: SourceKeys, now: Date) -> Bool {
        now.timeIntervalSince(keys.fetchedAt) <= policy.maxStale.seconds
    }

    private func fetchAll() async {
        lastAttempt = clock.now()
        fetchCount += 1
        var changed: Set<String> = []
        var fetched = false
        for source in sources {
            do {
                let data = try await source.fetch()
                let (keys, skipped) = try VerificationKey.parse(jwks: data)
                for reason in skipped {
                    logger.debug(
                        "JWKS key skipped", metadata: ["source": "\(source.identifier)", "reason": "\(reason)"])
                }
                // Only keys jwt-kit can load count. A document read successfully is authoritative
                // even with none: the source has revoked every key.
                var loadable: [JSONObject] = []
                for key in keys where await VerificationKey.make(from: key) != nil { loadable.append(key) }
                if loadable.isEmpty {
                    logger.warning(
                        "JWKS has no usable signing key: no key of this source is valid, its tokens are refused",
                        metadata: ["source": "\(source.identifier)", "skipped": "\(skipped.count)"])
                }
                if stored[source.identifier]?.keys != loadable { changed.insert(source.identifier) }
                stored[source.identifier] = SourceKeys(
                    source: source.identifier, fetchedAt: clock.now(), keys: loadable)
                if expired.remove(source.identifier) != nil {
                    logger.notice("JWKS read again: its keys are current", metadata: ["source": "\(source.identifier)"])
                }
                fetched = true
            } catch {
                let reason = (error as? AuthError)?.message ?? "\(type(of: error))"
                var metadata: Logger.Metadata = [
                    "source": "\(source.identifier)", "reason": "\(reason)",
                    "keptKeys": "\(stored[source.identifier]?.keys.count ?? 0)",
                ]
                if let fetchedAt = stored[source.identifier]?.fetchedAt {
                    metadata["usableUntil"] = "\(fetchedAt.addingTimeInterval(policy.maxStale.seconds))"
                }
                logger.warning(
                    "JWKS refresh failed; keeping the last good keys up to jwks_max_stale", metadata: metadata)
            }
        }
        if !changed.isEmpty {
            await rebuild(changed)
        } else if fetched {
            publish()  // new fetch times: the keys are usable for longer
        }
        if fetched { writeCache() }  // also when unchanged: the cache records when keys were fetched
        noteExpired()
    }

    /// Logs, once per source, keys that have become older than `maxStale` (and so unusable).
    private func noteExpired() {
        let now = clock.now()
        var newly: [SourceKeys] = []
        for source in sources {
            guard let entry = stored[source.identifier], !isUsable(entry, now: now),
                !expired.contains(source.identifier)
            else { continue }
            expired.insert(source.identifier)
            newly.append(entry)
        }
        guard !newly.isEmpty else { return }
        for entry in newly {
            logger.error(
                "JWKS keys older than jwks_max_stale and the source cannot be read: its keys are no longer used",
                metadata: [
                    "source": "\(entry.source)", "fetchedAt": "\(entry.fetchedAt)", "maxStale": "\(policy.maxStale)",
                    "keys": "\(entry.keys.count)",
                ])
        }
        if keyIDs.isEmpty {
            logger.critical(
                "no usable JWKS key: every command is refused until the key set can be read",
                metadata: ["sources": "\(sources.map(\.identifier).joined(separator: ", "))"])
        }
    }

    /// Why no usable key has this `kid`.
    private func missReason(for kid: String) -> AuthError {
        let now = clock.now()
        if snapshot.withLock({ $0[kid] != nil }) {
            return AuthError(
                .keySetStale,
                "the key the token names is older than jwks_max_stale; the key set could not be read since")
        }
        let read = sources.compactMap { stored[$0.identifier] }
        let usable = read.filter { isUsable($0, now: now) }
        if usable.allSatisfy(\.keys.isEmpty) {
            if usable.count < read.count {
                return AuthError(
                    .keySetStale, "the signing keys are older than jwks_max_stale; the key set could not be read since")
            }
            if !read.isEmpty {
                return AuthError(.keySetEmpty, "the key set is empty: no key is valid")
            }
            return AuthError(.unknownKey, "no key set has been read yet")
        }
        return AuthError(.unknownKey, "no key in the key set has the token's kid")
    }

    /// Rebuilds the verifiers of the sources whose keys changed, then publishes them.
    private func rebuild(_ changed: Set<String>) async {
        for source in sources where changed.contains(source.identifier) {
            var keys: [VerificationKey] = []
            for members in stored[source.identifier]?.keys ?? [] {
                guard let key = await VerificationKey.make(from: members) else { continue }
                keys.append(key)
            }
            built[source.identifier] = keys
        }
        publish()
        logger.info("JWKS keys in use", metadata: ["kids": "\(keyIDs.sorted().joined(separator: ","))"])
    }

    /// The lookup table: each source's verifiers, usable until `maxStale` after their fetch. A
    /// `kid` in two sources: the first source's usable key wins.
    private func publish() {
        var table: [String: [Entry]] = [:]
        for source in sources {
            guard let entry = stored[source.identifier] else { continue }
            let until = entry.fetchedAt.addingTimeInterval(policy.maxStale.seconds)
            for key in built[source.identifier] ?? [] {
                table[key.keyID, default: []].append(Entry(key: key, usableUntil: until))
            }
        }
        snapshot.withLock { $0 = table }
    }

    private func writeCache() {
        guard let cacheFile else { return }
        let disk = DiskFormat.encode(sources.compactMap { stored[$0.identifier] })
        do {
            try disk.write(to: URL(fileURLWithPath: cacheFile), options: .atomic)
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
