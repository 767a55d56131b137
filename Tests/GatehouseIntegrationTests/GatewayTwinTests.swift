import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The gateway in its own twin (docs/operations.md): gatehoused, registered by TPM attestation
/// with DevHub's DPS, reports its state as reported properties of its own identity, and DevHub's
/// control API shows them change when the rules are reloaded and when the outbox backs up.
@Suite(
    "The gateway's own twin", .serialized,
    .enabled(
        if: AttestationRig.available && MosquittoBroker.available,
        "needs swtpm, tpm2-tools and mosquitto: scripts/setup")
)
struct GatewayTwinTests {
    /// The `gatehouse` reported property of `device`, as DevHub's control API shows it.
    static func reported(_ rig: AttestationRig, _ device: String) -> [String: Any]? {
        guard let output = try? rig.devhubCLI(["twin", "get", device]),
            let json = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
            let properties = json["properties"] as? [String: Any],
            let reported = properties["reported"] as? [String: Any]
        else { return nil }
        return reported["gatehouse"] as? [String: Any]
    }

    @Test("reported properties: version, rules (changed by a reload), outbox (backing up), devices by state")
    func reportedPropertiesChange() async throws {
        let rig = try AttestationRig("gatehouse-twin")
        try rig.enroll("gw-twin")
        let groupKey = (0..<32).map { _ in UInt8.random(in: 0...255) }
        try rig.devhubCLI(["group", "create", "site-a", "--key", Data(groupKey).base64EncodedString()])
        let gateway = try LeafProvisioningTests.gatewayRig(rig, groupKey: groupKey, gatewayID: "gw-twin")
        let rulesDir = rig.dir.file("rules")
        try FileManager.default.createDirectory(atPath: rulesDir, withIntermediateDirectories: true)
        try rig.dir.write("rules/10-commands.rules", "allow command \"status.read\"\n")
        try gateway.setRulesDir(rulesDir)
        var config = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        config += "\n[twin]\nmin_interval = \"1s\"\nhealth_telemetry = \"10s\"\n"
        try config.write(toFile: gateway.configPath, atomically: true, encoding: .utf8)
        let daemon = try gateway.startGateway()
        let started = ContinuousClock.now

        // The first report: the version, the rule set as loaded, an empty outbox.
        #expect(
            await LeafProvisioningTests.eventually(timeout: .seconds(40)) { Self.reported(rig, "gw-twin") != nil },
            "\(gateway.gatewayLogs.suffix(3000))")
        let first = try #require(Self.reported(rig, "gw-twin"))
        let firstRules = try #require(first["rules"] as? [String: Any])
        #expect(first["version"] as? String != nil)
        #expect(firstRules["generation"] as? Int == 0)
        #expect(firstRules["commandRules"] as? Int == 1)
        let firstHash = try #require(firstRules["sha256"] as? String)
        #expect(firstHash.count == 64)
        #expect((first["outbox"] as? [String: Any])?["messages"] as? Int == 0)
        #expect((first["firewall"] as? [String: Any])?["configured"] as? Bool == false)

        // A rule reload: a new generation and hash.
        try rig.dir.write(
            "rules/10-commands.rules", "allow command \"status.read\"\nallow command \"config.read\"\n")
        daemon.signal(SIGHUP)
        #expect(
            await LeafProvisioningTests.eventually(timeout: .seconds(20)) {
                let rules = Self.reported(rig, "gw-twin")?["rules"] as? [String: Any]
                return rules?["generation"] as? Int == 1 && rules?["sha256"] as? String != firstHash
                    && rules?["commandRules"] as? Int == 2
            }, "\(String(describing: Self.reported(rig, "gw-twin")))")

        // The outbox backs up: a device outside [provisioning] allow is never registered, so its
        // telemetry waits in the outbox; the twin shows the messages and the failed registration.
        let failed = try LeafProvisioningTests.publish(
            ["other-1"], lines: { _ in (1...5).map { "{\"n\":\($0)}" } }, site: gateway.site, in: rig.dir)
        #expect(failed.isEmpty)
        #expect(
            await LeafProvisioningTests.eventually(timeout: .seconds(20)) {
                let state = Self.reported(rig, "gw-twin")
                let outbox = state?["outbox"] as? [String: Any]
                let devices = state?["devices"] as? [String: Any]
                return outbox?["messages"] as? Int == 5 && (outbox?["bytes"] as? Int ?? 0) > 0
                    && devices?["provisioningFailed"] as? Int == 1
            }, "\(String(describing: Self.reported(rig, "gw-twin")))")
        // The own identity is not counted among the devices.
        let devices = Self.reported(rig, "gw-twin")?["devices"] as? [String: Any]
        #expect(devices?["up"] as? Int == 0)

        // Health telemetry ([twin] health_telemetry = "10s"): the same document as telemetry of
        // the gateway's own identity, one every 10 s: at least two, at most one per 10 s since
        // the start.
        #expect(
            try await LeafProvisioningTests.eventually(timeout: .seconds(30)) {
                try LeafProvisioningTests.telemetry(rig).filter { $0.device == "gw-twin" }.count >= 2
            })
        let health = try LeafProvisioningTests.telemetry(rig).filter { $0.device == "gw-twin" }
        let elapsed = (ContinuousClock.now - started).components.seconds
        #expect(health.count >= 2 && health.count <= Int(elapsed) / 10 + 1, "\(health.count) in \(elapsed) s")
        let latest = try #require(health.last?.payload)
        let document = try JSONSerialization.jsonObject(with: Data(latest.utf8)) as? [String: Any]
        let gatehouse = try #require(document?["gatehouse"] as? [String: Any], "\(latest)")
        #expect(gatehouse["version"] as? String == first["version"] as? String)
        #expect((gatehouse["outbox"] as? [String: Any])?["messages"] as? Int != nil)
    }
}
