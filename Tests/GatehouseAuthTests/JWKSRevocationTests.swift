import Foundation
import GatehouseAuth
import GatehouseTestSupport
import Testing

/// Keys can be revoked: a key set read successfully is authoritative, even when empty; the last
/// good keys outlive a failing source by at most `maxStale`; the disk cache follows both rules
/// across restarts.
@Suite("JWKS revocation and staleness")
struct JWKSRevocationTests {
    static let emptyJWKS = Data(#"{"keys": []}"#.utf8)
    static let day: Duration = .seconds(24 * 3600)

    /// The verifier's clock, fixed at the tokens' issue time: the key cache's clock moves by days,
    /// beyond the tokens' hour of life, and only the keys' age is under test here.
    static func tokenTime(_ fixtures: JWTFixtures) -> ManualClock { ManualClock(fixtures.cases.now) }

    @Test("an empty key set from an HTTPS-like source revokes every key: the previously valid key's token is refused")
    func emptySetRevokes() async throws {
        let fixtures = try JWTFixtures.load()
        let logs = CapturedLogs()
        let source = StubSource("https://login.example/keys", document: fixtures.jwks)
        let (verifier, keys, _, clock) = try await fixtures.verifier(
            source: source, tokenClock: Self.tokenTime(fixtures), logs: logs)
        let token = fixtures["v2-valid"]
        #expect(await verifier.verify(token).failureCode == nil)

        source.set(Self.emptyJWKS)
        clock.advance(.seconds(3601))
        await keys.refreshIfDue()
        #expect(await keys.keyIDs.isEmpty)
        let refused = await verifier.verify(token)
        #expect(refused.failureCode == .keySetEmpty)
        if case .failure(let error) = refused { #expect(error.message.contains("empty")) }
        #expect(logs.all.contains { $0.contains("JWKS has no usable signing key") })

        // A document with keys, none of them usable for signatures, is just as authoritative.
        source.set(fixtures.jwks)
        clock.advance(.seconds(301))
        #expect(await verifier.verify(token).failureCode == nil)  // the miss refetched the keys
        let unusable = #"{"keys": [{"kty": "oct", "kid": "k", "k": "AAAA"}, {"kty": "RSA", "kid": "x", "use": "enc"}]}"#
        source.set(Data(unusable.utf8))
        clock.advance(.seconds(3601))
        await keys.refreshIfDue()
        #expect(await keys.keyIDs.isEmpty)
        #expect(await verifier.verify(token).failureCode == .keySetEmpty)
    }

    @Test("a JWKS file emptied on purpose revokes its keys at the next refresh; a removed file keeps them")
    func emptiedFileRevokes() async throws {
        let fixtures = try JWTFixtures.load()
        let dir = TempDir("gatehouse-jwks")
        let path = dir.file("jwks.json")
        try fixtures.jwks.write(to: URL(fileURLWithPath: path))
        let clock = ManualClock(fixtures.cases.now)
        let keys = try await JWKSCache(sources: [FileJWKSSource(path: path)], clock: clock.clock, logger: quietLogger)
        let verifier = try await TokenVerifier(
            configuration: fixtures.configuration, keys: keys, clock: Self.tokenTime(fixtures).clock,
            logger: quietLogger)
        await keys.refresh()
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == nil)

        // Unreadable (removed): a failure, the last good keys stay.
        try FileManager.default.removeItem(atPath: path)
        await keys.refresh()
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == nil)

        // Emptied: authoritative.
        try Self.emptyJWKS.write(to: URL(fileURLWithPath: path))
        await keys.refresh()
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == .keySetEmpty)
        #expect(await verifier.verify(fixtures["v2-es256-valid"]).failureCode == .keySetEmpty)

        // An empty file (zero bytes) is not a JWKS document: a failure, nothing comes back.
        try Data().write(to: URL(fileURLWithPath: path))
        await keys.refresh()
        #expect(await keys.keyIDs.isEmpty)
    }

    @Test(
        "a failing source keeps the last good keys up to jwks_max_stale after their fetch, then every token is refused")
    func staleKeysRefused() async throws {
        let fixtures = try JWTFixtures.load()
        let logs = CapturedLogs()
        let (verifier, keys, source, clock) = try await fixtures.verifier(
            tokenClock: Self.tokenTime(fixtures), logs: logs)
        await keys.refresh()
        let token = fixtures["v2-valid"]
        #expect(await verifier.verify(token).failureCode == nil)

        source.fail()
        clock.advance(Self.day - .seconds(60))
        await keys.refreshIfDue()
        #expect(source.fetches == 2)
        #expect(await verifier.verify(token).failureCode == nil)
        #expect(await verifier.verify(fixtures["v2-es256-valid"]).failureCode == nil)
        #expect(!logs.all.contains { $0.contains("no longer used") })

        clock.advance(.seconds(61))
        #expect(await keys.keyIDs.isEmpty)
        let refused = await verifier.verify(token)
        #expect(refused.failureCode == .keySetStale)
        if case .failure(let error) = refused { #expect(error.message.contains("jwks_max_stale")) }
        #expect(await verifier.verify(fixtures["unknown-kid"]).failureCode == .keySetStale)
        let logged = logs.all.joined(separator: "\n")
        #expect(logged.contains("error JWKS keys older than jwks_max_stale"))
        #expect(logged.contains("critical no usable JWKS key: every command is refused"))

        // The source is back: the next miss (5 minutes after the last attempt) reads it again.
        source.set(fixtures.jwks)
        clock.advance(.seconds(301))
        #expect(await verifier.verify(token).failureCode == nil)
        #expect(await keys.keyIDs == ["rsa-1", "ec-1"])
    }

    @Test("jwks_max_stale is the policy's: 2 hours")
    func customMaxStale() async throws {
        let fixtures = try JWTFixtures.load()
        var policy = JWKSCache.Policy()
        policy.maxStale = .seconds(7200)
        let (verifier, keys, source, clock) = try await fixtures.verifier(
            tokenClock: Self.tokenTime(fixtures), policy: policy)
        await keys.refresh()
        source.fail()
        clock.advance(.seconds(7200))
        await keys.refreshIfDue()
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == nil)
        clock.advance(.seconds(1))
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == .keySetStale)

        policy.maxStale = .zero
        await #expect(throws: AuthError.self) {
            _ = try await JWKSCache(sources: [StubSource(document: nil)], policy: policy, logger: quietLogger)
        }
    }

    @Test("with two sources, one stale and one current, the current one's keys verify")
    func oneSourceStale() async throws {
        let fixtures = try JWTFixtures.load()
        let clock = ManualClock(fixtures.cases.now)
        let first = StubSource("file:first", document: fixtures.jwks)
        let second = StubSource("https://second.example/keys", document: fixtures.rotatedJWKS)
        let keys = try await JWKSCache(sources: [first, second], clock: clock.clock, logger: quietLogger)
        let verifier = try await TokenVerifier(
            configuration: fixtures.configuration, keys: keys, clock: Self.tokenTime(fixtures).clock,
            logger: quietLogger)
        await keys.refresh()
        first.fail()
        clock.advance(Self.day + .seconds(1))
        await keys.refresh()
        // rsa-1 only came from the failing source; ec-1 (in both) still verifies through the other.
        #expect(await keys.keyIDs == ["rsa-2", "ec-1"])
        #expect(await verifier.verify(fixtures.cases.oldKeyToken).failureCode == .keySetStale)
        #expect(await verifier.verify(fixtures.cases.rotatedToken).failureCode == nil)
        #expect(await verifier.verify(fixtures["v2-es256-valid"]).failureCode == nil)
    }

    @Test("after a restart, the disk cache brings back neither revoked keys (an empty set is cached) nor old ones")
    func diskCacheHonoursBothRules() async throws {
        let fixtures = try JWTFixtures.load()
        let dir = TempDir("gatehouse-jwks")
        let cacheFile = dir.file("jwks-cache.json")
        let clock = ManualClock(fixtures.cases.now)
        let token = fixtures["v2-valid"]
        func restart(_ logs: CapturedLogs = CapturedLogs()) async throws -> (TokenVerifier, JWKSCache, StubSource) {
            let offline = StubSource("https://login.example/keys", document: nil)
            let keys = try await JWKSCache(
                sources: [offline], cacheFile: cacheFile, clock: clock.clock, logger: logs.logger)
            let verifier = try await TokenVerifier(
                configuration: fixtures.configuration, keys: keys, clock: Self.tokenTime(fixtures).clock,
                logger: quietLogger)
            return (verifier, keys, offline)
        }

        // Online: the keys are fetched and cached.
        let online = StubSource("https://login.example/keys", document: fixtures.jwks)
        let first = try await JWKSCache(
            sources: [online], cacheFile: cacheFile, clock: clock.clock, logger: quietLogger)
        await first.refresh()

        // 1. Within jwks_max_stale of the fetch, a restart offline verifies with the cached keys;
        //    the restart does not reset their age.
        clock.advance(Self.day - .seconds(3600))
        let (warm, warmKeys, _) = try await restart()
        #expect(await warm.verify(token).failureCode == nil)
        await warmKeys.refresh()  // fails: the fetch time in the cache stays as it was
        clock.advance(.seconds(3601))
        #expect(await warm.verify(token).failureCode == .keySetStale)

        // 2. A cache older than jwks_max_stale is not used after a restart.
        let logs = CapturedLogs()
        let (cold, coldKeys, _) = try await restart(logs)
        #expect(await coldKeys.keyIDs.isEmpty)
        #expect(await cold.verify(token).failureCode == .keySetStale)
        #expect(logs.all.contains { $0.contains("JWKS disk cache older than jwks_max_stale: its keys are not used") })

        // 3. The upstream set is emptied: the empty set is what gets cached, and a restart with the
        //    source down does not resurrect the removed keys.
        online.set(fixtures.jwks)
        await first.refresh()
        #expect(await first.keyIDs == ["rsa-1", "ec-1"])
        online.set(Self.emptyJWKS)
        await first.refresh()
        #expect(await first.keyIDs.isEmpty)
        let cached = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: cacheFile)))
        let entries = (cached as? [String: Any])?["sources"] as? [[String: Any]] ?? []
        #expect(entries.count == 1)
        #expect((entries.first?["keys"] as? [Any])?.isEmpty == true)
        #expect(entries.first?["fetchedAt"] != nil)

        let (revoked, revokedKeys, offline) = try await restart()
        #expect(await revokedKeys.keyIDs.isEmpty)
        #expect(await revoked.verify(token).failureCode == .keySetEmpty)
        #expect(await revoked.verify(fixtures["v2-es256-valid"]).failureCode == .keySetEmpty)
        #expect(offline.fetches == 1)  // the miss tried the source (down): still refused
    }
}
