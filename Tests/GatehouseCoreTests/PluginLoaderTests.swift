import GatehousePluginKit
import GatehouseTestSupport
import Testing

/// The host's side of the ABI handshake, against plugins written in C and compiled with `cc`.
@Suite("Plugin loader")
struct PluginLoaderTests {
    @Test("a C plugin loads and declares itself")
    func cPluginLoads() throws {
        let library = try PluginLibrary(path: try CFixturePlugin.path("loopback_upstream"))
        #expect(library.name == "loopback")
        #expect(library.version == "1.0.0")
        try library.requireTransport(role: .upstream)
        #expect(throws: PluginLoadError.self) { try library.requireTransport(role: .downstream) }
    }

    @Test(
        "bad plugins are refused with the file named and nothing called",
        arguments: [
            ("wrong_abi", PluginLoadError.Code.abiVersionMismatch, "built for plugin ABI version 99"),
            ("missing_send", .missingOperation, "lacks required operation(s): send"),
            ("no_entry", .missingEntryPoint, "does not export `gatehouse_plugin_entry`"),
        ])
    func refused(fixture: String, code: PluginLoadError.Code, fragment: String) throws {
        let path = try CFixturePlugin.path(fixture)
        #expect {
            _ = try PluginLibrary(path: path)
        } throws: { error in
            guard let error = error as? PluginLoadError else { return false }
            return error.code == code && error.description.contains(path) && error.description.contains(fragment)
        }
    }

    @Test("a missing file and a file that is not a shared object are refused")
    func notPlugins() throws {
        #expect(throws: PluginLoadError.self) { _ = try PluginLibrary(path: "/nonexistent/libgatehouse-x.so") }
        let dir = TempDir()
        let fake = try dir.write("libgatehouse-fake.so", "not an ELF file")
        #expect {
            _ = try PluginLibrary(path: fake)
        } throws: { error in
            (error as? PluginLoadError)?.code == .notLoadable && "\(error)".contains(fake)
        }
    }

    @Test("plugin names resolve inside the plugin directory")
    func resolve() throws {
        let directory = CFixturePlugin.directory
        _ = try CFixturePlugin.path("loopback_upstream")
        #expect(
            PluginLibrary.resolve(name: "loopback_upstream", in: directory) == directory
                + "/libgatehouse-loopback_upstream.so")
        #expect(PluginLibrary.resolve(name: "/abs/x.so", in: directory) == "/abs/x.so")
    }
}
