import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The rule set in the daemon: checked at start (exit 78 with diagnostics), reloaded on SIGHUP
/// and by `gatehouse rules reload`, and a set that does not check never replaces the running one.
@Suite(
    "Rules in the daemon", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct RulesReloadTests {
    /// A copy of the shipped example site policy in the test's folder.
    func copyExampleRules(to dir: TempDir) throws -> String {
        let target = dir.file("rules.d")
        try FileManager.default.copyItem(
            atPath: Paths.packageRoot.appendingPathComponent("rules/examples/site").path, toPath: target)
        return target
    }

    @Test("rules that do not check stop the start with exit 78 and every diagnostic")
    func refusedAtStart() throws {
        let dir = TempDir("gatehouse-rules-it")
        let rules = try copyExampleRules(to: dir)
        try "allow command \"reboot\" when device.tagz.site == \"A\"\n".write(
            toFile: rules + "/90-broken.rules", atomically: true, encoding: .utf8)
        let rig = try GatewayRig(extraConfig: "", in: dir)
        try rig.setRulesDir(rules)
        let child = try rig.startGateway()
        #expect(child.wait(timeout: .seconds(10)) == 78)
        #expect(child.stderr.contains("90-broken.rules:1:"), "\(child.stderr)")
        #expect(child.stderr.contains("tagz"))
    }

    @Test("a broken rule set is refused on reload and the running one stays; a good one is swapped in")
    func hotReload() throws {
        let dir = TempDir("gatehouse-rules-it")
        let rules = try copyExampleRules(to: dir)
        let rig = try GatewayRig(extraConfig: "", in: dir)
        try rig.setRulesDir(rules)
        let gateway = try rig.startGateway()
        #expect(gateway.isRunning, "\(gateway.stderr)")
        #expect(rig.gatewayLogs.contains("rules loaded"))

        // Broken: the CLI shows the diagnostics and does not signal; SIGHUP is refused too.
        let broken = rules + "/90-broken.rules"
        try "deny command \"x\" when device.tagz.site == \"A\"\n".write(
            toFile: broken, atomically: true, encoding: .utf8)
        let (status, output) = try Subprocess.run(Paths.gatehouseCLI, ["rules", "reload", "-c", rig.configPath])
        #expect(status == 1)
        #expect(output.contains("90-broken.rules:1:"), "\(output)")
        gateway.signal(SIGHUP)
        #expect(waitUntil(timeout: .seconds(10)) { rig.gatewayLogs.contains("rules reload refused") })
        #expect(gateway.isRunning)

        // Fixed: the CLI checks and signals; the daemon swaps the new set in.
        try "deny command \"x\" when device.tags.site == \"A\"\n".write(
            toFile: broken, atomically: true, encoding: .utf8)
        let (okStatus, okOutput) = try Subprocess.run(Paths.gatehouseCLI, ["rules", "reload", "-c", rig.configPath])
        #expect(okStatus == 0, "\(okOutput)")
        #expect(waitUntil(timeout: .seconds(10)) { rig.gatewayLogs.contains("rules reloaded") })
    }
}
