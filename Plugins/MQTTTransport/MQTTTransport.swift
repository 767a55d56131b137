import FoundationEssentials
import GatehouseBasics
import GatehousePluginKit

/// The `mqtt` transport plugin, in either role:
/// - `[site]` (downstream): subscribes to leaf telemetry on the site broker, acknowledging after
///   the host made it durable (`SiteSubscriber`);
/// - `[hub]` (upstream): one MQTT connection (`HubMQTTClient`) per device identity to IoT Hub
///   (`HubConnections`).
final class MQTTTransport: TransportPlugin {
    static let pluginName = "mqtt"
    static let pluginVersion = "0.1.0"
    static let roles: Set<TransportRole> = [.downstream, .upstream]
    static let canDeliver = true

    private enum Role {
        case site(SiteSubscriber)
        case hub(HubConnections)
    }

    private let role: Role

    init(role: TransportRole, config: PluginConfig, host: PluginHost) throws(PluginError) {
        switch role {
        case .downstream:
            self.role = .site(try SiteSubscriber(settings: try Self.siteSettings(config), host: host))
        case .upstream:
            self.role = .hub(try HubConnections(settings: try Self.hubSettings(config), host: host))
        }
    }

    static func siteSettings(_ config: PluginConfig) throws(PluginError) -> SiteSubscriber.Settings {
        try config.requireKnownKeys([
            "host", "port", "client_id", "username", "password_file", "topics", "keepalive", "max_batch", "commands",
            "method_timeout", "max_message_bytes",
        ])
        var filters: [DeviceTopicFilter] = []
        for topic in try config.strings("topics", default: ["devices/+/messages/events/#"]) {
            guard let filter = DeviceTopicFilter(topic) else {
                throw PluginError(
                    "`\(topic)` is not a topic filter with a `+` level for the device id (e.g. devices/+/messages/events/#)",
                    configKey: "topics")
            }
            filters.append(filter)
        }
        var password: [UInt8]? = nil
        if let file = try config.optionalString("password_file") {
            guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw PluginError("cannot read the password file \(file)", configKey: "password_file")
            }
            password = Array(contents.trimmingWhitespace.utf8)
        }
        return SiteSubscriber.Settings(
            host: try config.string("host", default: "127.0.0.1"),
            port: try config.integer("port", default: 1883, range: 1...65535),
            clientID: try config.string("client_id", default: "gatehouse"),
            username: try config.optionalString("username"),
            password: password,
            filters: filters,
            keepAlive: UInt16(try config.integer("keepalive", default: 30, range: 5...3600)),
            maxBatch: try config.integer("max_batch", default: 1000, range: 1...65535),
            commands: try config.bool("commands", default: true),
            methodTimeout: .seconds(try config.integer("method_timeout", default: 30, range: 1...300)),
            // Larger payloads are dead letters. Up to 256 MiB: MQTT's own limit is 256 MiB less
            // the headers, and mosquitto's message_size_limit should be at least this.
            maxMessageBytes: try config.size(
                "max_message_bytes", default: SiteSubscriber.defaultMaxMessageBytes, range: 1024...(256 << 20)))
    }

    static func hubSettings(_ config: PluginConfig) throws(PluginError) -> HubConnections.Settings {
        try config.requireKnownKeys([
            "hostname", "address", "port", "ca_file", "keepalive", "sas_ttl", "api_version", "max_delivery_attempts",
        ])
        let hostname = try config.string("hostname")
        guard !hostname.isEmpty, !hostname.contains("/") else {
            throw PluginError(
                "`hostname` must be the hub's host name, e.g. myhub.azure-devices.net", configKey: "hostname")
        }
        return HubConnections.Settings(
            hostname: hostname,
            address: try config.string("address", default: hostname),
            port: try config.integer("port", default: 8883, range: 1...65535),
            caFile: try config.optionalString("ca_file"),
            keepAlive: Int32(try config.integer("keepalive", default: 60, range: 5...1177)),
            // Short lifetimes (down to 10 s) exist for tests of the renewal; the hub's own
            // default lifetime in the SDKs is an hour.
            sasTTL: Int64(try config.integer("sas_ttl", default: 3600, range: 10...31_536_000)),
            apiVersion: try config.string("api_version", default: "2021-04-12"),
            // How often the hub may drop a fresh connection at a message (acknowledging nothing)
            // before the message is reported refused and becomes a dead letter.
            maxDeliveryAttempts: try config.integer("max_delivery_attempts", default: 3, range: 2...100))
    }

    func start() throws(PluginError) {
        switch role {
        case .site(let site): site.start()
        case .hub(let hub): hub.start()
        }
    }

    func stop(drainMilliseconds: UInt32) {
        switch role {
        case .site(let site): site.stop()
        case .hub(let hub): hub.stop(drainMilliseconds: drainMilliseconds)
        }
    }

    func openIdentity(_ deviceID: String) -> PluginStatus {
        guard case .hub(let hub) = role else { return .invalid }
        return hub.open(deviceID)
    }

    func closeIdentity(_ deviceID: String) -> PluginStatus {
        guard case .hub(let hub) = role else { return .invalid }
        return hub.close(deviceID)
    }

    func send(_ message: PluginMessage, token: UInt64) -> PluginStatus {
        guard case .hub(let hub) = role else { return .invalid }
        return hub.send(message, token: token)
    }

    func deliver(_ command: PluginCommand, token: UInt64) -> PluginStatus {
        guard case .site(let site) = role else { return .invalid }
        return site.deliver(command, token: token)
    }

    func commandResult(token: UInt64, status: Int32, body: [UInt8]) {
        guard case .hub(let hub) = role else { return }
        hub.commandResult(token: token, status: status, body: body)
    }
}

/// The plugin's one exported symbol (gatehouse_plugin.h).
@_cdecl("gatehouse_plugin_entry")
public func gatehousePluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? {
    PluginExport.transport(MQTTTransport.self, hostABI: hostABI)
}
