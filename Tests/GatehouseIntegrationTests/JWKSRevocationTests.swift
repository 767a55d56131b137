import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Key revocation and stale keys through the daemon: DevHub invokes methods with PyJWT-minted
/// tokens (`scripts/mint-token`), gatehoused verifies them against `[auth] jwks_file` and its disk
/// cache (`jwks_cache`), a paho-mqtt leaf device answers. Same rig as `CommandGateTests`.
@Suite(
    "JWKS revocation end to end", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"),
    .enabled(if: PythonTools.ready, "python3 with pyjwt[crypto] and paho-mqtt is missing: run scripts/setup"))
struct JWKSRevocationEndToEndTests {
    typealias Fixture = CommandGateTests.Fixture

    static func reboot(_ fixture: Fixture, _ token: String, id: String) throws -> (Int, String) {
        let (status, payload) = try fixture.method(
            "pump-1", "reboot", ["authorization": "Bearer \(token)", "command_id": id])
        return (status, payload["reason"] as? String ?? "")
    }

    /// Stops gatehoused and starts it again on the same configuration, state and caches.
    static func restart(_ fixture: Fixture) throws {
        fixture.rig.gateway?.stop()
        let child = try fixture.rig.startGateway()
        #expect(child.isRunning, "\(fixture.rig.gatewayLogs.suffix(2000))")
    }

    var jwksPath: (Fixture) -> String { { $0.keysDir + "/jwks.json" } }

    @Test(
        "an emptied JWKS file revokes the key at SIGHUP, and a restart with the file unreadable does not bring it back")
    func emptySetRevokes() throws {
        let fixture = try Fixture()
        let token = try fixture.token(["--role", "Gateway.Operator"])
        let (before, beforeReason) = try Self.reboot(fixture, token, id: "r-1")
        #expect(before == 200, "\(beforeReason) \(fixture.rig.gatewayLogs.suffix(2000))")

        // The identity provider withdraws its only key: the published set is now empty.
        try Data(#"{"keys": []}"#.utf8).write(to: URL(fileURLWithPath: jwksPath(fixture)))
        fixture.rig.gateway?.signal(SIGHUP)
        #expect(
            waitUntil(timeout: .seconds(10)) { fixture.rig.gatewayLogs.contains("JWKS has no usable signing key") },
            "\(fixture.rig.gatewayLogs.suffix(1500))")
        let (after, afterReason) = try Self.reboot(fixture, token, id: "r-2")
        #expect(after == 403)
        #expect(afterReason.hasPrefix("token refused: auth.keyset-empty"), "\(afterReason)")
        #expect(!afterReason.contains(token))

        // The disk cache holds the empty set, with its fetch time.
        let cache = try String(contentsOfFile: fixture.dir.file("jwks-cache.json"), encoding: .utf8)
        #expect(cache.contains("fetchedAt") && !cache.contains("demo-1"), "\(cache)")

        // Restart with the file unreadable: only the disk cache speaks, and it says "no key".
        try FileManager.default.removeItem(atPath: jwksPath(fixture))
        try Self.restart(fixture)
        let (restarted, restartedReason) = try Self.reboot(fixture, token, id: "r-3")
        #expect(restarted == 403, "\(fixture.rig.gatewayLogs.suffix(2000))")
        #expect(restartedReason.hasPrefix("token refused: auth.keyset-empty"), "\(restartedReason)")
        #expect(fixture.leafEvents("method").count == 1)  // only the first command reached the device
        #expect(!fixture.rig.gatewayLogs.contains(token))
    }

    @Test("a restart with the JWKS unreadable uses the cached keys within jwks_max_stale, not after")
    func staleCacheRefused() throws {
        let fixture = try Fixture()
        let token = try fixture.token(["--role", "Gateway.Operator"])
        #expect(try Self.reboot(fixture, token, id: "s-1").0 == 200)

        // The file goes away (unreadable, not emptied): the cached keys are a day old at most.
        try FileManager.default.removeItem(atPath: jwksPath(fixture))
        try Self.restart(fixture)
        let (fresh, freshReason) = try Self.reboot(fixture, token, id: "s-2")
        #expect(fresh == 200, "\(freshReason) \(fixture.rig.gatewayLogs.suffix(2000))")

        // Two days pass without the key set (the cache's fetch time moved back instead).
        fixture.rig.gateway?.stop()
        let cacheFile = fixture.dir.file("jwks-cache.json")
        var cache = try #require(
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: cacheFile)))
                as? [String: Any])
        var sources = try #require(cache["sources"] as? [[String: Any]])
        #expect(sources.count == 1)
        for index in sources.indices {
            let fetchedAt = try #require(sources[index]["fetchedAt"] as? Double)
            sources[index]["fetchedAt"] = fetchedAt - 2 * 24 * 3600
        }
        cache["sources"] = sources
        try JSONSerialization.data(withJSONObject: cache).write(to: URL(fileURLWithPath: cacheFile))
        let child = try fixture.rig.startGateway()
        #expect(child.isRunning)
        let (stale, staleReason) = try Self.reboot(fixture, token, id: "s-3")
        #expect(stale == 403, "\(fixture.rig.gatewayLogs.suffix(2000))")
        #expect(staleReason.hasPrefix("token refused: auth.keyset-stale"), "\(staleReason)")
        let logs = fixture.rig.gatewayLogs
        #expect(logs.contains("JWKS disk cache older than jwks_max_stale"))
        #expect(logs.contains("every command is refused"))
        #expect(fixture.leafEvents("method").count == 2)
    }
}
