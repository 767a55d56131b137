import FoundationEssentials
import GatehousePluginKit

#if canImport(Glibc)
    import Glibc
#endif

/// The `amqp` transport plugin, upstream only: a pool of AMQP 1.0 connections to IoT Hub, many
/// device identities on each, every identity authorised by its own CBS put-token that the host
/// signs (`AMQPHub`; docs/protocols.md §3, docs/configuration.md "[hub] over AMQP").
final class AMQPTransport: TransportPlugin {
    static let pluginName = "amqp"
    static let pluginVersion = "0.1.0"
    static let roles: Set<TransportRole> = [.upstream]

    struct Settings: Sendable {
        /// The hub's host name: TLS name, `open.hostname`, CBS audiences, link addresses.
        var hostname: String
        /// Where to connect, if not `hostname`.
        var address: String
        var port: Int = 5671
        var caFile: String?
        var sasTTL: Int64 = 3600
        var sasl: SASLNegotiation.Mode = .mssbcbs
        var devicesPerConnection: Int = ConnectionPool.defaultCapacity
        /// How many times in a row the hub may reject one message before it is reported refused.
        var maxDeliveryAttempts: Int = 3
        var apiVersion: String = "2020-09-30"
        var idleTimeoutMS: Int = 240_000
        /// Which devices attach the two direct-method links (about 5 KB of proton's memory a
        /// device, docs/benchmarks.md "Upstream transports"): without them the hub cannot call
        /// the device's methods (C2D commands still work).
        var methods: MethodLinks = .all
    }

    /// `methods`: true, false, or the device IDs (shell-style patterns: `*`, `?`, `[…]`) that
    /// take direct methods — the actuators of a site whose sensors only report.
    enum MethodLinks: Sendable, Equatable {
        case all
        case none
        case matching([String])

        func attaches(_ deviceID: String) -> Bool {
            switch self {
            case .all: true
            case .none: false
            case .matching(let patterns): patterns.contains { fnmatch($0, deviceID, 0) == 0 }
            }
        }
    }

    private let hub: AMQPHub

    init(role: TransportRole, config: PluginConfig, host: PluginHost) throws(PluginError) {
        guard role == .upstream else { throw PluginError("the amqp transport serves [hub] only (upstream)") }
        hub = try AMQPHub(settings: try Self.settings(config), host: host)
    }

    static func settings(_ config: PluginConfig) throws(PluginError) -> Settings {
        try config.requireKnownKeys([
            "hostname", "address", "port", "ca_file", "sas_ttl", "sasl", "devices_per_connection",
            "max_delivery_attempts", "api_version", "idle_timeout", "methods",
        ])
        let hostname = try config.string("hostname")
        guard !hostname.isEmpty, !hostname.contains("/") else {
            throw PluginError(
                "`hostname` must be the hub's host name, e.g. myhub.azure-devices.net", configKey: "hostname")
        }
        let saslName = try config.string("sasl", default: SASLNegotiation.Mode.mssbcbs.rawValue)
        guard let sasl = SASLNegotiation.Mode(rawValue: saslName) else {
            throw PluginError(
                "`sasl` must be \"mssbcbs\" (as Azure's C SDK), \"anonymous\" or \"none\" (no SASL layer, as the C# SDK)",
                configKey: "sasl")
        }
        return Settings(
            hostname: hostname,
            address: try config.string("address", default: hostname),
            port: try config.integer("port", default: 5671, range: 1...65535),
            caFile: try config.optionalString("ca_file"),
            // Short lifetimes (down to 10 s) exist for tests of the renewal.
            sasTTL: Int64(try config.integer("sas_ttl", default: 3600, range: 10...31_536_000)),
            sasl: sasl,
            // IoT Hub takes at most 999 tokens a connection; the C# SDK stops at 995.
            devicesPerConnection: try config.integer(
                "devices_per_connection", default: ConnectionPool.defaultCapacity, range: 1...999),
            maxDeliveryAttempts: try config.integer("max_delivery_attempts", default: 3, range: 2...100),
            apiVersion: try config.string("api_version", default: "2020-09-30"),
            idleTimeoutMS: try config.integer("idle_timeout", default: 240, range: 10...3600) * 1000,
            methods: try methodLinks(config))
    }

    private static func methodLinks(_ config: PluginConfig) throws(PluginError) -> MethodLinks {
        if let flag = try? config.bool("methods", default: true) { return flag ? .all : .none }
        guard let patterns = try? config.strings("methods", default: []), !patterns.isEmpty,
            !patterns.contains(where: \.isEmpty)
        else {
            throw PluginError(
                "`methods` must be true, false, or a list of device-ID patterns such as [\"pump-*\", \"valve-?\"]",
                configKey: "methods")
        }
        return .matching(patterns)
    }

    func start() throws(PluginError) { hub.start() }

    func stop(drainMilliseconds: UInt32) { hub.stop(drainMilliseconds: drainMilliseconds) }

    func openIdentity(_ deviceID: String) -> PluginStatus { hub.open(deviceID) }

    func closeIdentity(_ deviceID: String) -> PluginStatus { hub.close(deviceID) }

    func send(_ message: PluginMessage, token: UInt64) -> PluginStatus { hub.send(message, token: token) }

    func commandResult(token: UInt64, status: Int32, body: [UInt8]) {
        hub.commandResult(token: token, status: status, body: body)
    }
}

/// The plugin's one exported symbol (gatehouse_plugin.h).
@_cdecl("gatehouse_plugin_entry")
public func gatehousePluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? {
    PluginExport.transport(AMQPTransport.self, hostABI: hostABI)
}
