import FoundationEssentials
import GatehousePluginABI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What a firewall plugin author writes: a type that conforms to `FirewallPlugin`, exported with
///
/// ```swift
/// @_cdecl("gatehouse_plugin_entry")
/// public func gatehousePluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? {
///     PluginExport.firewall(MyFirewall.self, hostABI: hostABI)
/// }
/// ```
public protocol FirewallPlugin: AnyObject, Sendable {
    static var pluginName: String { get }
    static var pluginVersion: String { get }

    /// Parses the plugin's config section; nothing touches the host yet.
    init(config: PluginConfig, host: PluginHost) throws(PluginError)
    /// Runs one action (see `GH_FIREWALL_*`); its text, or an error naming the rule or setting.
    func control(_ action: FirewallAction) throws(PluginError) -> String
    /// At daemon start, and on a fresh instance at each reload: apply.
    func start() throws(PluginError)
    /// Only when the daemon stops: keep the rules (fail closed) unless configured otherwise. An
    /// instance replaced on reload is destroyed without `stop`: its successor's rules stay.
    func stop()
}

extension PluginExport {
    private static let firewallType = Mutex<(any FirewallPlugin.Type)?>(nil)
    private static let firewallDescriptor = Mutex<SendableRawPointer?>(nil)

    /// Call from a firewall plugin's `gatehouse_plugin_entry`. NULL for an unknown host ABI.
    public static func firewall(_ type: any FirewallPlugin.Type, hostABI: UInt32) -> UnsafeRawPointer? {
        guard hostABI == GH_PLUGIN_ABI_VERSION else { return nil }
        firewallType.withLock { $0 = type }
        return firewallDescriptor.withLock { storage in
            if let storage { return UnsafeRawPointer(storage.pointer) }
            let descriptor = UnsafeMutablePointer<gh_plugin_descriptor>.allocate(capacity: 1)
            descriptor.initialize(to: makeFirewallDescriptor(type))
            storage = SendableRawPointer(pointer: UnsafeMutableRawPointer(descriptor))
            return UnsafeRawPointer(descriptor)
        }
    }

    private static func makeFirewallDescriptor(_ type: any FirewallPlugin.Type) -> gh_plugin_descriptor {
        var descriptor = gh_plugin_descriptor()
        descriptor.abi_version = GH_PLUGIN_ABI_VERSION
        descriptor.struct_size = UInt32(MemoryLayout<gh_plugin_descriptor>.size)
        descriptor.name = UnsafePointer(strdup(type.pluginName))  // static: never freed
        descriptor.version = UnsafePointer(strdup(type.pluginVersion))
        descriptor.kind = GH_KIND_FIREWALL
        descriptor.roles = 0
        descriptor.ops.create = { api, context, _, json, out, errorOut in
            guard let api, let out, let type = PluginExport.firewallType.withLock({ $0 }) else { return GH_ERR_INVALID }
            do throws(PluginError) {
                let config = try PluginConfig(json: [UInt8](ghBytes: json))
                let plugin = try type.init(config: config, host: PluginHost(api: api, context: context))
                out.pointee = Unmanaged.passRetained(FirewallBox(plugin)).toOpaque()
                return GH_OK
            } catch {
                error.write(into: errorOut)
                return GH_ERR_INVALID
            }
        }
        descriptor.ops.start = { instance, errorOut in
            guard let plugin = FirewallBox.from(instance) else { return GH_ERR_INVALID }
            do throws(PluginError) {
                try plugin.start()
                return GH_OK
            } catch {
                error.write(into: errorOut)
                return GH_ERR_REFUSED
            }
        }
        descriptor.ops.stop = { instance, _ in FirewallBox.from(instance)?.stop() }
        descriptor.ops.destroy = { instance in
            guard let instance else { return }
            Unmanaged<FirewallBox>.fromOpaque(instance).release()
        }
        descriptor.ops.control = { instance, action, reply, replyContext, errorOut in
            guard let plugin = FirewallBox.from(instance), let action = FirewallAction(rawValue: action) else {
                return GH_ERR_INVALID
            }
            do throws(PluginError) {
                let text = try plugin.control(action)
                withGHBytes(text) { reply?(replyContext, $0) }
                return GH_OK
            } catch {
                error.write(into: errorOut)
                return GH_ERR_REFUSED
            }
        }
        return descriptor
    }
}

/// Holds the firewall plugin object behind the opaque instance pointer.
final class FirewallBox: Sendable {
    let plugin: any FirewallPlugin
    init(_ plugin: any FirewallPlugin) { self.plugin = plugin }

    static func from(_ raw: UnsafeMutableRawPointer?) -> (any FirewallPlugin)? {
        raw.map { Unmanaged<FirewallBox>.fromOpaque($0).takeUnretainedValue().plugin }
    }
}
