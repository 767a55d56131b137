import Foundation
import GatehouseCore
import GatehouseTestSupport
import Testing

/// `[archive]`: what `route telemetry … to archive` may keep on the gateway, by size and age.
@Suite("Configuration: [archive]")
struct ArchiveConfigTests {
    static let minimal = """
        [site]
        plugin = "mqtt"

        [hub]
        plugin = "mqtt"
        hostname = "h.example"
        """

    @Test("without the section: 256 MiB and 7 days; with it, sizes and durations with their units")
    func values() throws {
        let defaults = try GatewayConfig.parse(Self.minimal, path: "g.toml")
        #expect(defaults.archive.maxBytes == 256 << 20)
        #expect(defaults.archive.maxAge == .seconds(7 * 86400))
        let config = try GatewayConfig.parse(
            "[archive]\nmax_bytes = \"1 GiB\"\nmax_age = \"30d\"\n" + Self.minimal, path: "g.toml")
        #expect(config.archive.maxBytes == 1 << 30)
        #expect(config.archive.maxAge == .seconds(30 * 86400))
    }

    @Test(
        "a bad value is refused with its file, line and key",
        arguments: [
            ("[archive]\nmax_byte = 1\n", 2, "[archive] max_byte", "did you mean `max_bytes`?"),
            ("[archive]\nmax_bytes = 1000\n", 2, "[archive] max_bytes", "at least 64 KiB"),
            ("[archive]\n\nmax_age = \"5s\"\n", 3, "[archive] max_age", "at least 1m"),
            ("[archiv]\nmax_age = \"1d\"\n", 1, "archiv", "did you mean `archive`?"),
        ])
    func refused(prefix: String, line: Int, key: String, fragment: String) {
        #expect {
            _ = try GatewayConfig.parse(prefix + Self.minimal, path: "/etc/gatehouse/gatehouse.toml")
        } throws: { error in
            guard let error = error as? ConfigError else { return false }
            let rendered = "\(error)"
            return error.line == line && error.key == key && rendered.contains(fragment)
        }
    }

    @Test("the shipped file states the defaults")
    func shipped() throws {
        let path = Paths.packageRoot.appendingPathComponent("packaging/gatehouse.toml").path
        let config = try GatewayConfig.load(path: path)
        #expect(config.archive == ArchivePolicy())
    }
}
