import GatehousePluginABI

/// What the host does when a plugin calls back. Implemented by the daemon's core; every method
/// may be called from any plugin thread.
public protocol PluginHostDelegate: AnyObject, Sendable {
    /// Makes the batch durable and returns only then (see `gh_host_api.ingest`).
    func ingest(_ messages: [PluginMessage], from plugin: String) -> PluginStatus
    /// The hub acknowledged (or the link lost) the send with `token`.
    func delivered(token: UInt64, status: PluginStatus)
    func linkStateChanged(deviceID: String, state: LinkState, reason: String, plugin: String)
    /// Returns the complete SAS token, or a status if the host will not sign.
    func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError>
    /// A command from the hub; answer later through `respond`.
    func command(_ command: PluginCommand, respond: @escaping @Sendable (_ status: Int32, _ body: [UInt8]) -> Void)
    /// The outcome of a `PluginInstance.deliver` on the site side (see `gh_host_api.deliver_result`).
    func deliverResult(token: UInt64, status: Int32, body: [UInt8], plugin: String)
    func log(level: PluginLogLevel, message: String, plugin: String)
}

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
