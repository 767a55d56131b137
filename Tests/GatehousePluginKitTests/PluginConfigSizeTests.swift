import GatehousePluginKit
import Testing

@Suite("The plugin kit's config sizes")
struct PluginConfigSizeTests {
    func config(_ json: String) throws -> PluginConfig { try PluginConfig(json: Array(json.utf8)) }

    @Test("a size is a number of bytes or a string with a unit")
    func sizes() throws {
        #expect(try config(#"{}"#).size("s", default: 7, range: 1...100) == 7)
        #expect(try config(#"{"s":4096}"#).size("s", default: 0, range: 1...(1 << 30)) == 4096)
        #expect(try config(#"{"s":"256 KiB"}"#).size("s", default: 0, range: 1...(1 << 30)) == 262_144)
        #expect(try config(#"{"s":"1MiB"}"#).size("s", default: 0, range: 1...(1 << 30)) == 1 << 20)
        #expect(try config(#"{"s":"100 kB"}"#).size("s", default: 0, range: 1...(1 << 30)) == 100_000)
    }

    @Test("anything else names the key", arguments: [#"{"s":"lots"}"#, #"{"s":1.5}"#, #"{"s":"2 GiB"}"#, #"{"s":-1}"#])
    func refused(json: String) throws {
        let parsed = try config(json)
        #expect {
            _ = try parsed.size("s", default: 0, range: 0...(1 << 30))
        } throws: { error in
            (error as? PluginError)?.configKey == "s" && "\(error)".contains("must be a size")
        }
    }
}
