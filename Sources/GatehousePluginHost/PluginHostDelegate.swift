import GatehousePluginABI
import GatehousePluginKit

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
