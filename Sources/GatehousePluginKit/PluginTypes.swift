import GatehousePluginABI

// The types both sides of the plugin ABI use: a plugin's author (this kit) and the host's
// loader (GatehousePluginHost).

public struct PluginStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let ok = PluginStatus(rawValue: GH_OK)
    public static let invalid = PluginStatus(rawValue: GH_ERR_INVALID)
    public static let unavailable = PluginStatus(rawValue: GH_ERR_UNAVAILABLE)
    public static let refused = PluginStatus(rawValue: GH_ERR_REFUSED)
    public static let noSpace = PluginStatus(rawValue: GH_ERR_NO_SPACE)
    public static let `internal` = PluginStatus(rawValue: GH_ERR_INTERNAL)
    public static let stopped = PluginStatus(rawValue: GH_ERR_STOPPED)

    public var description: String {
        switch self {
        case .ok: "ok"
        case .invalid: "invalid"
        case .unavailable: "unavailable"
        case .refused: "refused"
        case .noSpace: "no-space"
        case .internal: "internal"
        case .stopped: "stopped"
        default: "status(\(rawValue))"
        }
    }
}

public struct PluginStatusError: Error, Sendable {
    public var status: PluginStatus
    public init(_ status: PluginStatus) { self.status = status }
}

public enum LinkState: Int32, Sendable, CustomStringConvertible {
    case down = 0
    case connecting = 1
    case up = 2

    public var description: String {
        switch self {
        case .down: "down"
        case .connecting: "connecting"
        case .up: "up"
        }
    }
}

public enum PluginLogLevel: Int32, Sendable {
    case debug = 0
    case info = 1
    case warning = 2
    case error = 3
}

/// What a firewall plugin is asked to do (`GH_FIREWALL_*`).
public enum FirewallAction: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case render = 1
    case check = 2
    case apply = 3
    case status = 4
    case remove = 5

    public var description: String {
        switch self {
        case .render: "render"
        case .check: "check"
        case .apply: "apply"
        case .status: "status"
        case .remove: "remove"
        }
    }
}

/// The role a transport instance plays.
public enum TransportRole: UInt32, Sendable, CustomStringConvertible {
    case downstream = 1  // GH_ROLE_DOWNSTREAM
    case upstream = 2  // GH_ROLE_UPSTREAM

    public var description: String { self == .downstream ? "downstream" : "upstream" }
}

/// A plugin refused its configuration or failed to start. `configKey` names the offending key
/// of its config section when the plugin said which.
public struct PluginError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var configKey: String?

    public init(_ message: String, configKey: String? = nil) {
        self.message = message
        self.configKey = configKey
    }

    public var description: String { message }
}

extension PluginError {
    package static func from(_ error: gh_error, fallback: String) -> PluginError {
        let message = withUnsafeBytes(of: error.message) { String(decodingCString: $0) }
        let key = withUnsafeBytes(of: error.config_key) { String(decodingCString: $0) }
        return PluginError(message.isEmpty ? fallback : message, configKey: key.isEmpty ? nil : key)
    }
}

extension String {
    /// Decodes a NUL-terminated string from a fixed C char array, never reading past its end.
    package init(decodingCString bytes: UnsafeRawBufferPointer) {
        let end = bytes.firstIndex(of: 0) ?? bytes.count
        self = String(decoding: bytes[..<end], as: UTF8.self)
    }
}
