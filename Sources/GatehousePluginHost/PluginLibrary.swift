import GatehousePluginABI
import GatehousePluginKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a plugin file was refused. The message always names the file.
public struct PluginLoadError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let fileNotFound = Code(rawValue: "plugin.file-not-found")
        public static let notLoadable = Code(rawValue: "plugin.not-loadable")
        public static let missingEntryPoint = Code(rawValue: "plugin.missing-entry-point")
        public static let refusedHostVersion = Code(rawValue: "plugin.refused-host-version")
        public static let abiVersionMismatch = Code(rawValue: "plugin.abi-version-mismatch")
        public static let descriptorTooSmall = Code(rawValue: "plugin.descriptor-too-small")
        public static let missingOperation = Code(rawValue: "plugin.missing-operation")
        public static let wrongKind = Code(rawValue: "plugin.wrong-kind")
    }

    public var code: Code
    public var path: String
    public var message: String

    public var description: String { "plugin \(path): \(message) [\(code)]" }
}

/// A plugin shared object that passed the handshake of `gatehouse_plugin.h`.
///
/// Loading never calls anything of the plugin but its entry point, and reads nothing of the
/// descriptor but its version and size until those are checked.
public final class PluginLibrary: @unchecked Sendable {
    // @unchecked: every stored property is immutable after init, and the descriptor is static
    // memory of the loaded object, which stays loaded for the process's lifetime (we never
    // dlclose: a plugin's threads or atexit handlers could still point into it).
    public let path: String
    public let name: String
    public let version: String
    public let kind: UInt32
    public let roles: UInt32
    let descriptor: UnsafePointer<gh_plugin_descriptor>

    /// Resolves `name` against `directory`: "mqtt" → `<dir>/libgatehouse-mqtt.so`, then
    /// `<dir>/mqtt.so`; a name containing "/" or ending in ".so" is taken as a path.
    public static func resolve(name: String, in directory: String) -> String {
        if name.contains("/") { return name }
        if name.hasSuffix(".so") { return directory + "/" + name }
        let candidates = [directory + "/libgatehouse-\(name).so", directory + "/\(name).so"]
        return candidates.first { access($0, F_OK) == 0 } ?? candidates[0]
    }

    public init(path: String) throws(PluginLoadError) {
        self.path = path
        guard access(path, F_OK) == 0 else {
            throw PluginLoadError(code: .fileNotFound, path: path, message: "no such file")
        }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "dlopen failed"
            throw PluginLoadError(code: .notLoadable, path: path, message: "cannot be loaded: \(reason)")
        }
        guard let symbol = dlsym(handle, GH_PLUGIN_ENTRY_SYMBOL) else {
            throw PluginLoadError(
                code: .missingEntryPoint, path: path,
                message: "does not export `\(GH_PLUGIN_ENTRY_SYMBOL)`; is it a gatehouse plugin?")
        }
        let entry = unsafeBitCast(symbol, to: gh_plugin_entry_fn.self)
        guard let raw = entry(GH_PLUGIN_ABI_VERSION) else {
            throw PluginLoadError(
                code: .refusedHostVersion, path: path,
                message: "refused to serve this host's plugin ABI version \(GH_PLUGIN_ABI_VERSION)")
        }
        // Read only the two leading fields before anything else: they are the same in every
        // ABI version.
        let header = UnsafeRawPointer(raw)
        let abi = header.load(as: UInt32.self)
        let size = header.load(fromByteOffset: 4, as: UInt32.self)
        guard abi == GH_PLUGIN_ABI_VERSION else {
            throw PluginLoadError(
                code: .abiVersionMismatch, path: path,
                message:
                    "was built for plugin ABI version \(abi), this gatehouse speaks version \(GH_PLUGIN_ABI_VERSION); rebuild it against this gatehouse_plugin.h"
            )
        }
        guard size >= MemoryLayout<gh_plugin_descriptor>.size else {
            throw PluginLoadError(
                code: .descriptorTooSmall, path: path,
                message: "descriptor is \(size) bytes, ABI \(abi) needs \(MemoryLayout<gh_plugin_descriptor>.size)")
        }
        let descriptor = raw.pointee
        self.descriptor = raw
        self.name = descriptor.name.map { String(cString: $0) } ?? "(unnamed)"
        self.version = descriptor.version.map { String(cString: $0) } ?? "?"
        self.kind = descriptor.kind
        self.roles = descriptor.roles

        var missing: [String] = []
        let ops = descriptor.ops
        if ops.create == nil { missing.append("create") }
        if ops.start == nil { missing.append("start") }
        if ops.stop == nil { missing.append("stop") }
        if ops.destroy == nil { missing.append("destroy") }
        if descriptor.kind == GH_KIND_TRANSPORT && roles & GH_ROLE_UPSTREAM != 0 {
            if ops.open_identity == nil { missing.append("open_identity") }
            if ops.close_identity == nil { missing.append("close_identity") }
            if ops.send == nil { missing.append("send") }
            if ops.command_result == nil { missing.append("command_result") }
        }
        if descriptor.kind == GH_KIND_FIREWALL && ops.control == nil { missing.append("control") }
        guard missing.isEmpty else {
            throw PluginLoadError(
                code: .missingOperation, path: path,
                message: "plugin `\(name)` lacks required operation(s): \(missing.joined(separator: ", "))")
        }
    }

    /// Refuses the plugin unless it is a transport that can play `role`.
    public func requireFirewall() throws(PluginLoadError) {
        guard kind == GH_KIND_FIREWALL else {
            throw PluginLoadError(code: .wrongKind, path: path, message: "plugin `\(name)` is not a firewall plugin")
        }
    }

    public func requireTransport(role: TransportRole) throws(PluginLoadError) {
        guard kind == GH_KIND_TRANSPORT, roles & role.rawValue != 0 else {
            throw PluginLoadError(
                code: .wrongKind, path: path,
                message: "plugin `\(name)` is not a transport that can play the \(role) role")
        }
    }
}
