import Foundation
import GatehouseCore
import GatehouseTestSupport
import Testing

/// The configuration as files: the main file (or the package's defaults in its place), then the
/// drop-ins in `gatehouse.d/` in name order (docs/configuration.md, "Files").
@Suite("Configuration files and drop-ins")
struct ConfigDropInTests {
    static let defaults = """
        [gateway]
        log_level = "info"

        [outbox]
        max_bytes = "256 MiB"
        drop = "oldest"

        [site]
        plugin = "mqtt"
        port = 1883
        topics = ["devices/+/messages/events/#"]

        [hub]
        plugin = "mqtt"
        hostname = "myhub.azure-devices.net"
        """

    @Test("drop-ins apply in name order over the main file; what they do not name keeps its value")
    func order() throws {
        let dir = TempDir()
        let main = try dir.write("gatehouse.toml", Self.defaults)
        try FileManager.default.createDirectory(atPath: dir.file("gatehouse.d"), withIntermediateDirectories: false)
        try dir.write(
            "gatehouse.d/50-site.toml", "[hub]\nhostname = \"plant.azure-devices.net\"\n\n[site]\nport = 1884\n")
        try dir.write("gatehouse.d/90-late.toml", "[site]\nport = 1885\n")
        try dir.write("gatehouse.d/10-early.toml", "[outbox]\ndrop = \"newest\"\n[site]\nport = 1999\n")
        // Not drop-ins: another suffix (dpkg's leftovers), a hidden file.
        try dir.write("gatehouse.d/50-site.toml.dpkg-old", "[site]\nport = 1\n")
        try dir.write("gatehouse.d/.99-hidden.toml", "[site]\nport = 2\n")

        let config = try GatewayConfig.load(path: main, packagedDefaults: dir.file("nonexistent.toml"))
        #expect(
            config.origins.files == [
                main, dir.file("gatehouse.d/10-early.toml"), dir.file("gatehouse.d/50-site.toml"),
                dir.file("gatehouse.d/90-late.toml"),
            ])
        let site = try JSONSerialization.jsonObject(with: Data(config.site.pluginConfigJSON)) as? [String: Any]
        #expect(site?["port"] as? Int == 1885)
        #expect(site?["topics"] as? [String] == ["devices/+/messages/events/#"])
        let hub = try JSONSerialization.jsonObject(with: Data(config.hub.pluginConfigJSON)) as? [String: Any]
        #expect(hub?["hostname"] as? String == "plant.azure-devices.net")
        #expect(config.outbox.drop == .newest)
        #expect(config.outbox.maxBytes == 256 << 20)
        // Each setting is placed where it was set last.
        #expect(config.site.keyPlaces["port"] == ConfigPlace(file: dir.file("gatehouse.d/90-late.toml"), line: 2))
        #expect(config.site.keyPlaces["topics"] == ConfigPlace(file: main, line: 11))
        #expect(config.place("hub", "hostname") == dir.file("gatehouse.d/50-site.toml") + ":2")
    }

    @Test("an error in a drop-in names that file, its line and the key")
    func errorPlacedInDropIn() throws {
        let dir = TempDir()
        let main = try dir.write("gatehouse.toml", Self.defaults)
        try FileManager.default.createDirectory(atPath: dir.file("gatehouse.d"), withIntermediateDirectories: false)
        try dir.write("gatehouse.d/50-site.toml", "# the site's\n[outbox]\ndrop = \"oldest\"\nmax_bytes = \"lots\"\n")
        let error = #expect(throws: ConfigError.self) { _ = try GatewayConfig.load(path: main) }
        #expect(error?.file == dir.file("gatehouse.d/50-site.toml"))
        #expect(error?.line == 4)
        #expect(error?.key == "[outbox] max_bytes")

        try dir.write("gatehouse.d/60-typo.toml", "[outbox]\nmax_bytse = 1\n")
        try dir.write("gatehouse.d/50-site.toml", "[outbox]\ndrop = \"oldest\"\n")
        let typo = #expect(throws: ConfigError.self) { _ = try GatewayConfig.load(path: main) }
        #expect(
            "\(typo!)"
                == "\(dir.file("gatehouse.d/60-typo.toml")):2: [outbox] max_bytse: unknown key; did you mean `max_bytes`?"
        )

        try dir.write("gatehouse.d/60-typo.toml", "[outbox\n")
        let syntax = #expect(throws: ConfigError.self) { _ = try GatewayConfig.load(path: main) }
        #expect(syntax?.file == dir.file("gatehouse.d/60-typo.toml"))
        #expect(syntax?.line == 1)
        #expect(syntax?.message.hasPrefix("TOML syntax") == true)

        try FileManager.default.removeItem(atPath: dir.file("gatehouse.d/60-typo.toml"))
        try dir.write("gatehouse.d/70-section.toml", "[gateway_typo]\nx = 1\n")
        let section = #expect(throws: ConfigError.self) { _ = try GatewayConfig.load(path: main) }
        #expect(section?.file == dir.file("gatehouse.d/70-section.toml"))
        #expect(section?.line == 1)
        #expect(section?.key == "gateway_typo")
    }

    @Test("a single file without gatehouse.d reads as before; a missing -c file is an error")
    func singleFile() throws {
        let dir = TempDir()
        let main = try dir.write("gatehouse.toml", Self.defaults)
        let config = try GatewayConfig.load(path: main)
        #expect(config.origins.files == [main])
        #expect(config.site.keyPlaces["port"] == ConfigPlace(file: main, line: 10))
        let error = #expect(throws: ConfigError.self) {
            _ = try GatewayConfig.load(path: dir.file("other.toml"), packagedDefaults: main)
        }
        #expect(error?.file == dir.file("other.toml"))
        #expect(error?.message.contains("does not exist") == true)
    }

    @Test("the packaged defaults stand in for /etc/gatehouse/gatehouse.toml only")
    func packagedDefaults() throws {
        // The package's real layout cannot be written by a test; the rule is the same for any
        // defaults file: it replaces the default path when that does not exist, and nothing else.
        let dir = TempDir()
        let defaults = try dir.write("defaults.toml", Self.defaults)
        if !FileManager.default.fileExists(atPath: GatewayConfig.defaultPath) {
            let sources = try GatewayConfig.sources(path: GatewayConfig.defaultPath, packagedDefaults: defaults)
            #expect(sources.first == defaults)
        } else {
            print("packagedDefaults: \(GatewayConfig.defaultPath) exists here, so it is read, not the defaults")
            let sources = try GatewayConfig.sources(path: GatewayConfig.defaultPath, packagedDefaults: defaults)
            #expect(sources.first == GatewayConfig.defaultPath)
        }
        #expect(throws: ConfigError.self) {
            _ = try GatewayConfig.sources(path: dir.file("missing.toml"), packagedDefaults: defaults)
        }
    }

    @Test("the shipped defaults with the example drop-in check")
    func shippedExample() throws {
        let dir = TempDir()
        let shipped = Paths.packageRoot.appendingPathComponent("packaging/gatehouse.toml").path
        let main = try dir.write("gatehouse.toml", try String(contentsOfFile: shipped, encoding: .utf8))
        try FileManager.default.createDirectory(atPath: dir.file("gatehouse.d"), withIntermediateDirectories: false)
        let example = Paths.packageRoot.appendingPathComponent("packaging/examples/50-site.toml").path
        try dir.write("gatehouse.d/50-site.toml", try String(contentsOfFile: example, encoding: .utf8))
        let config = try GatewayConfig.load(path: main)
        #expect(config.gateway.id == "gw-0001")
        #expect(config.origins.files.count == 2)
    }
}
