import Foundation
import GatehouseTestSupport
import Testing

/// How gatehoused refuses to start: exit 78 (EX_CONFIG) and a message naming the place.
@Suite(
    "gatehoused start-up checks", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct StartupTests {
    func run(_ config: String, in dir: TempDir) throws -> (Int32, String) {
        let path = try dir.write("gatehouse.toml", config)
        return try Subprocess.run(Paths.gatehoused, ["--check", "-c", path], timeout: .seconds(30))
    }

    func config(
        _ dir: TempDir, site: String = "plugin = \"mqtt\"", hub: String = "plugin = \"mqtt\"\nhostname = \"localhost\"",
        extra: String = ""
    ) -> String {
        """
        [gateway]
        state_db = "\(dir.file("state.db"))"
        plugin_dir = "\(Paths.binDir.path)"
        \(extra)

        [site]
        \(site)

        [hub]
        \(hub)
        """
    }

    @Test("a good configuration checks")
    func good() throws {
        let dir = TempDir()
        let (status, output) = try run(config(dir), in: dir)
        #expect(status == 0, "\(output)")
    }

    @Test("--check creates and migrates nothing, and says what a start would migrate")
    func checkWithoutSideEffects() throws {
        let dir = TempDir()
        let (status, output) = try run(config(dir), in: dir)
        #expect(status == 0, "\(output)")
        #expect(
            output.contains("state database \(dir.file("state.db")): none yet; the first start creates it"), "\(output)"
        )
        #expect(!FileManager.default.fileExists(atPath: dir.file("state.db")), "--check created the state database")
    }

    @Test("--check placing a bad value of a drop-in at its file and line")
    func dropInError() throws {
        let dir = TempDir()
        try FileManager.default.createDirectory(atPath: dir.file("gatehouse.d"), withIntermediateDirectories: false)
        try dir.write("gatehouse.d/50-site.toml", "[site]\nprot = 1883\n")
        let (status, output) = try run(config(dir), in: dir)
        #expect(status == 78)
        #expect(
            output.contains("\(dir.file("gatehouse.d/50-site.toml")):2: [site] prot: unknown key `prot`"), "\(output)")
    }

    @Test("an unknown key: exit 78 with file, line and key")
    func unknownKey() throws {
        let dir = TempDir()
        let (status, output) = try run(config(dir, extra: "[outbox]\nmax_bytse = 1\n"), in: dir)
        #expect(status == 78)
        #expect(
            output.contains("gatehouse.toml:5: [outbox] max_bytse: unknown key; did you mean `max_bytes`?"), "\(output)"
        )
    }

    @Test("a plugin's own key is checked by the plugin and placed by the host")
    func pluginKey() throws {
        let dir = TempDir()
        let (status, output) = try run(config(dir, site: "plugin = \"mqtt\"\nprot = 1883"), in: dir)
        #expect(status == 78)
        #expect(output.contains("gatehouse.toml:8: [site] prot: unknown key `prot`; did you mean `port`?"), "\(output)")
    }

    @Test("a missing plugin file: exit 78 naming the file")
    func missingPlugin() throws {
        let dir = TempDir()
        // A transport nobody built (`amqp` exists now, and the tests build it).
        let (status, output) = try run(config(dir, hub: "plugin = \"carrier-pigeon\""), in: dir)
        #expect(status == 78)
        #expect(output.contains("[hub] plugin = \"carrier-pigeon\""), "\(output)")
        #expect(output.contains("\(Paths.binDir.path)/libgatehouse-carrier-pigeon.so: no such file"), "\(output)")
    }

    @Test("a plugin of another ABI version: exit 78, refused before anything of it runs")
    func wrongABI() throws {
        let dir = TempDir()
        let plugin = try CFixturePlugin.path("wrong_abi")
        let (status, output) = try run(config(dir, hub: "plugin = \"\(plugin)\""), in: dir)
        #expect(status == 78)
        #expect(output.contains("\(plugin): was built for plugin ABI version 99"), "\(output)")
    }

    @Test("a plugin without the entry point: exit 78")
    func noEntry() throws {
        let dir = TempDir()
        let plugin = try CFixturePlugin.path("no_entry")
        let (status, output) = try run(config(dir, hub: "plugin = \"\(plugin)\""), in: dir)
        #expect(status == 78)
        #expect(output.contains("does not export `gatehouse_plugin_entry`"), "\(output)")
    }

    @Test("a transport in a role it cannot play: exit 78")
    func wrongRole() throws {
        let dir = TempDir()
        let plugin = try CFixturePlugin.path("loopback_upstream")
        let (status, output) = try run(config(dir, site: "plugin = \"\(plugin)\""), in: dir)
        #expect(status == 78)
        #expect(output.contains("is not a transport that can play the downstream role"), "\(output)")
    }

    @Test("a plugin written in C relays what the site broker receives")
    func cPluginRelays() throws {
        let plugin = try CFixturePlugin.path("loopback_upstream")
        let dir = TempDir()
        let out = dir.file("hub.txt")
        let rig = try GatewayRig(hubPlugin: plugin, hubExtra: "out = \"\(out)\"")
        let gateway = try rig.startGateway()
        #expect(gateway.isRunning, "\(gateway.stderr)")
        #expect(
            try publishLines(
                ["hello", "world"], topic: "devices/c-dev/messages/events/k=v", broker: rig.site, in: rig.dir) == 0)
        #expect(
            waitUntil(timeout: .seconds(10)) {
                ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").split(separator: "\n").count == 2
            })
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "c-dev\tk=v\thello\nc-dev\tk=v\tworld\n")
    }
}
