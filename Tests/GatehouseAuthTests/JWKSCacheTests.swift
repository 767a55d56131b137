import Foundation
import GatehouseAuth
import GatehouseTestSupport
import Testing

@Suite("JWKS cache policy")
struct JWKSCacheTests {
    @Test("an unknown kid causes one refresh; more unknown kids within 5 minutes cause none")
    func unknownKidRateLimit() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, keys, source, clock) = try await fixtures.verifier()
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == nil)
        #expect(source.fetches == 1)  // the first lookup on an empty cache
        for _ in 0..<5 {
            #expect(await verifier.verify(fixtures["unknown-kid"]).failureCode == .unknownKey)
        }
        #expect(source.fetches == 1)
        clock.advance(.seconds(299))
        #expect(await verifier.verify(fixtures["unknown-kid"]).failureCode == .unknownKey)
        #expect(source.fetches == 1)
        clock.advance(.seconds(2))
        #expect(await verifier.verify(fixtures["unknown-kid"]).failureCode == .unknownKey)
        #expect(source.fetches == 2)
        #expect(await keys.fetchCount == 2)
    }

    @Test("concurrent misses share one fetch")
    func concurrentMisses() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, _, source, _) = try await fixtures.verifier()
        let token = fixtures["v2-valid"]
        let results = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 { group.addTask { (try? await verifier.verify(token).get()) != nil } }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0 })
        #expect(source.fetches == 1)
    }

    @Test("a failed fetch, or a document that is not a JWKS, keeps the last good keys")
    func failureKeepsKeys() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, keys, source, clock) = try await fixtures.verifier()
        await keys.refresh()
        #expect(await keys.keyIDs == ["rsa-1", "ec-1"])
        source.fail()
        clock.advance(.seconds(3601))
        await keys.refreshIfDue()
        #expect(source.fetches == 2)
        #expect(await keys.keyIDs == ["rsa-1", "ec-1"])
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == nil)
        for document in ["not json", #"{"keys": "none"}"#, #"{"no": "keys"}"#, "[]"] {
            source.set(Data(document.utf8))
            clock.advance(.seconds(301))
            await keys.refreshIfDue()
            #expect(await keys.keyIDs == ["rsa-1", "ec-1"], "\(document)")
        }
        #expect(source.fetches == 6)
    }

    @Test("the scheduled refresh runs after the refresh interval, a failing source is retried after 5 minutes")
    func schedule() async throws {
        let fixtures = try JWTFixtures.load()
        let (_, keys, source, clock) = try await fixtures.verifier()
        await keys.refreshIfDue()
        #expect(source.fetches == 1)
        clock.advance(.seconds(3000))
        await keys.refreshIfDue()
        #expect(source.fetches == 1)
        clock.advance(.seconds(601))
        source.fail()
        await keys.refreshIfDue()
        #expect(source.fetches == 2)
        clock.advance(.seconds(60))
        await keys.refreshIfDue()
        #expect(source.fetches == 2)
        clock.advance(.seconds(240))
        await keys.refreshIfDue()
        #expect(source.fetches == 3)
    }

    @Test("a source that keeps failing is retried every 5 minutes even while another one succeeds")
    func oneSourceDown() async throws {
        let fixtures = try JWTFixtures.load()
        let clock = ManualClock(fixtures.cases.now)
        let good = StubSource("file:good", document: fixtures.jwks)
        let down = StubSource("https://down.example/keys", document: nil)
        let keys = try await JWKSCache(sources: [good, down], clock: clock.clock, logger: quietLogger)
        await keys.refreshIfDue()
        #expect(down.fetches == 1 && good.fetches == 1)
        clock.advance(.seconds(299))
        await keys.refreshIfDue()
        #expect(down.fetches == 1)
        clock.advance(.seconds(2))
        await keys.refreshIfDue()
        #expect(down.fetches == 2)
        down.set(fixtures.rotatedJWKS)
        clock.advance(.seconds(301))
        await keys.refreshIfDue()
        #expect(await keys.keyIDs == ["rsa-1", "rsa-2", "ec-1"])
        clock.advance(.seconds(301))
        await keys.refreshIfDue()
        #expect(down.fetches == 3)  // both fresh now: the next refresh is an hour after
    }

    @Test("keys cached on disk verify with every source down; the file holds public keys only")
    func diskCacheOffline() async throws {
        let fixtures = try JWTFixtures.load()
        let dir = TempDir("gatehouse-jwks")
        let cacheFile = dir.file("jwks-cache.json")
        let clock = ManualClock(fixtures.cases.now)

        // A source that (wrongly) publishes private members too: they never reach the disk.
        var leaky = try JSONSerialization.jsonObject(with: fixtures.jwks) as! [String: Any]
        var leakyKeys = leaky["keys"] as! [[String: Any]]
        leakyKeys[0]["d"] = "c2VjcmV0LXByaXZhdGUtZXhwb25lbnQ"
        leakyKeys[0]["p"] = "c2VjcmV0LXByaW1l"
        leaky["keys"] = leakyKeys
        let online = StubSource(
            "https://login.example/keys", document: try JSONSerialization.data(withJSONObject: leaky))
        let first = try await JWKSCache(
            sources: [online], cacheFile: cacheFile, clock: clock.clock, logger: quietLogger)
        await first.refresh()
        let written = try String(contentsOfFile: cacheFile, encoding: .utf8)
        #expect(written.contains("rsa-1") && written.contains("ec-1"))
        #expect(!written.contains("c2VjcmV0"))
        #expect(!written.contains(#""d""#) && !written.contains(#""p""#))

        // A restart with the network down.
        let offline = StubSource("https://login.example/keys", document: nil)
        let keys = try await JWKSCache(
            sources: [offline], cacheFile: cacheFile, clock: clock.clock, logger: quietLogger)
        #expect(await keys.keyIDs == ["rsa-1", "ec-1"])
        let verifier = try await TokenVerifier(
            configuration: fixtures.configuration, keys: keys, clock: clock.clock, logger: quietLogger)
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == nil)
        #expect(await verifier.verify(fixtures["v2-es256-valid"]).failureCode == nil)
        #expect(offline.fetches == 0)
        await keys.refresh()
        #expect(await keys.keyIDs == ["rsa-1", "ec-1"])

        // Keys cached for a source that is no longer configured are not trusted.
        let other = StubSource("https://elsewhere.example/keys", document: nil)
        let moved = try await JWKSCache(sources: [other], cacheFile: cacheFile, clock: clock.clock, logger: quietLogger)
        #expect(await moved.keyIDs.isEmpty)
    }

    @Test("a file source and an HTTPS-like source are merged; the file is read again at refresh")
    func fileSource() async throws {
        let fixtures = try JWTFixtures.load()
        let dir = TempDir("gatehouse-jwks")
        let path = dir.file("jwks.json")
        try fixtures.jwks.write(to: URL(fileURLWithPath: path))
        let clock = ManualClock(fixtures.cases.now)
        let remote = StubSource(document: Data(#"{"keys": []}"#.utf8))
        let keys = try await JWKSCache(
            sources: [FileJWKSSource(path: path), remote], clock: clock.clock, logger: quietLogger)
        await keys.refresh()
        #expect(await keys.keyIDs == ["rsa-1", "ec-1"])
        remote.set(fixtures.rotatedJWKS)
        clock.advance(.seconds(3601))
        await keys.refreshIfDue()
        #expect(await keys.keyIDs == ["rsa-1", "rsa-2", "ec-1"])
        try FileManager.default.removeItem(atPath: path)
        clock.advance(.seconds(3601))
        await keys.refreshIfDue()
        #expect(await keys.keyIDs == ["rsa-1", "rsa-2", "ec-1"])  // file gone: its last good keys stay
    }

    @Test("configuration errors are refused up front")
    func configuration() async throws {
        let source = StubSource(document: nil)
        let keys = try await JWKSCache(sources: [source], logger: quietLogger)
        await #expect(throws: AuthError.self) {
            // same identifier twice
            _ = try await JWKSCache(sources: [source, StubSource(document: nil)], logger: quietLogger)
        }
        let bad: [TokenVerifier.Configuration] = [
            .init(audiences: [], tenants: ["72f988bf-86f1-41af-91ab-2d7cd011db47"]),
            .init(audiences: ["api://x"]),  // neither issuers nor tenants
            .init(audiences: ["api://x"], tenants: ["contoso"]),  // not a GUID
            .init(audiences: ["api://x"], issuers: ["https://login.microsoftonline.com/{tenantid}/v2.0"]),
            {
                var c = TokenVerifier.Configuration(audiences: ["api://x"], issuers: ["https://issuer.example"])
                c.algorithms = [.hs256]  // HMAC without a key
                return c
            }(),
            {
                var c = TokenVerifier.Configuration(audiences: ["api://x"], issuers: ["https://issuer.example"])
                c.algorithms = [.init(rawValue: "none")]
                return c
            }(),
        ]
        for configuration in bad {
            await #expect(throws: AuthError.self) {
                _ = try await TokenVerifier(configuration: configuration, keys: keys, logger: quietLogger)
            }
        }
    }
}
