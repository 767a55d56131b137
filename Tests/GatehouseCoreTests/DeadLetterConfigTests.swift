import Foundation
import GatehouseCore
import GatehouseStore
import GatehouseTestSupport
import Testing

/// `[dead_letters]`: how many messages that can never be delivered are kept, by size and age.
@Suite("Configuration: [dead_letters]")
struct DeadLetterConfigTests {
    static let minimal = """
        [site]
        plugin = "mqtt"

        [hub]
        plugin = "mqtt"
        hostname = "h.example"
        """

    @Test("without the section: 64 MiB and 30 days")
    func defaults() throws {
        let config = try GatewayConfig.parse(Self.minimal, path: "g.toml")
        #expect(config.deadLetters == DeadLetterRetention(maxBytes: 64 << 20, maxAgeMS: 30 * 86_400_000))
    }

    @Test("sizes and durations with their units")
    func values() throws {
        let config = try GatewayConfig.parse(
            "[dead_letters]\nmax_bytes = \"8 MiB\"\nmax_age = \"7d\"\n" + Self.minimal, path: "g.toml")
        #expect(config.deadLetters.maxBytes == 8 << 20)
        #expect(config.deadLetters.maxAgeMS == 7 * 86_400_000)
        let plain = try GatewayConfig.parse(
            "[dead_letters]\nmax_bytes = 1048576\nmax_age = 7200\n" + Self.minimal, path: "g.toml")
        #expect(plain.deadLetters == DeadLetterRetention(maxBytes: 1 << 20, maxAgeMS: 7_200_000))
    }

    @Test(
        "a bad value is refused with its file, line and key",
        arguments: [
            ("[dead_letters]\nmax_byte = 1\n", 2, "[dead_letters] max_byte", "did you mean `max_bytes`?"),
            ("[dead_letters]\n\nmax_bytes = \"lots\"\n", 3, "[dead_letters] max_bytes", "size"),
            ("[dead_letters]\nmax_bytes = 1000\n", 2, "[dead_letters] max_bytes", "at least 64 KiB"),
            ("[dead_letters]\nmax_age = \"5m\"\n", 2, "[dead_letters] max_age", "at least 1h"),
            ("[dead_letters]\nmax_age = \"ever\"\n", 2, "[dead_letters] max_age", "duration"),
            ("[dead_letter]\nmax_age = \"1d\"\n", 1, "dead_letter", "did you mean `dead_letters`?"),
        ])
    func refused(prefix: String, line: Int, key: String, fragment: String) {
        #expect {
            _ = try GatewayConfig.parse(prefix + Self.minimal, path: "/etc/gatehouse/gatehouse.toml")
        } throws: { error in
            guard let error = error as? ConfigError else { return false }
            let rendered = "\(error)"
            return error.line == line && error.key == key && rendered.contains(fragment)
                && rendered.hasPrefix("/etc/gatehouse/gatehouse.toml:\(line): \(key): ")
        }
    }

    @Test("the shipped file states the defaults")
    func shipped() throws {
        let path = Paths.packageRoot.appendingPathComponent("packaging/gatehouse.toml").path
        let config = try GatewayConfig.load(path: path)
        #expect(config.deadLetters == DeadLetterRetention())
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("[dead_letters]"))
        #expect(text.contains("max_message_bytes"))
    }
}
