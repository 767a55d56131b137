import GatehousePluginABI
import GatehousePluginHost
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

    /// Compiles one translation unit that includes only the header, the way a third-party plugin
    /// build does; the header's own layout assertions run in it (docs/architecture.md).
    private static func compileHeader(_ compiler: String, _ flags: [String]) throws {
        let dir = TempDir("gatehouse-abi-header")
        let source = try dir.write("header_only.c", "#include \"gatehouse_plugin.h\"\nint gh_header_only = 1;\n")
        let (status, log) = try Subprocess.run(
            compiler,
            flags + ["-Wall", "-Werror", "-pedantic", "-I", Paths.abiHeaderDir, "-c", "-o", dir.file("o"), source])
        #expect(status == 0, "\(compiler) \(flags.joined(separator: " ")) rejects the ABI header: \(log)")
        #expect(log.isEmpty, "\(compiler) \(flags.joined(separator: " ")) is not silent on the ABI header: \(log)")
    }

    @Test("the ABI header compiles cleanly as C11, its layout assertions included")
    func headerCompilesAsC() throws {
        try Self.compileHeader(which("cc") ?? "/usr/bin/cc", ["-x", "c", "-std=c11"])
    }

    @Test(
        "the ABI header compiles cleanly as C++17, its layout assertions included",
        .enabled(if: which("g++") != nil, "g++ is not installed (scripts/setup installs gcc)"))
    func headerCompilesAsCPlusPlus() throws {
        try Self.compileHeader(which("c++") ?? "/usr/bin/c++", ["-x", "c++", "-std=c++17"])
    }

    @Test("Swift imports the ABI header with the layout it asserts")
    func swiftImportsHeader() {
        #expect(MemoryLayout<gh_bytes>.size == 16)
        #expect(MemoryLayout<gh_property>.size == 32)
        #expect(MemoryLayout<gh_message>.size == 88)
        #expect(MemoryLayout<gh_message>.offset(of: \.topic) == 56)
        #expect(MemoryLayout<gh_message>.offset(of: \.flags) == 72)
        #expect(MemoryLayout<gh_command>.size == 104)
        #expect(MemoryLayout<gh_error>.size == 640)
        #expect(MemoryLayout<gh_dead_letter>.size == 136)
        #expect(MemoryLayout<gh_dead_letter>.offset(of: \.head) == 72)
        #expect(MemoryLayout<gh_dead_letter>.offset(of: \.received_unix_ms) == 96)
        #expect(MemoryLayout<gh_host_api>.size == 120)
        #expect(MemoryLayout<gh_plugin_ops>.size == 136)
        #expect(MemoryLayout<gh_plugin_descriptor>.size == 232)
        #expect(MemoryLayout<gh_host_api>.offset(of: \.deliver_result) == 56)
        // dead_letter took the first reserved slot: the table's size did not change.
        #expect(MemoryLayout<gh_host_api>.offset(of: \.dead_letter) == 64)
        #expect(MemoryLayout<gh_plugin_ops>.offset(of: \.control) == 72)
        #expect(MemoryLayout<gh_plugin_descriptor>.offset(of: \.ops) == 32)
    }
}
