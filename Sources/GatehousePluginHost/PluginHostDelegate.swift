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
    /// A message the site transport consumed but can never deliver (`gh_host_api.dead_letter`):
    /// keep it as a dead letter (source "site"), count it and log it without its bytes, and
    /// return `.ok` only once it is durable — the transport acknowledges it to its broker then.
    /// Any other status: nothing was kept, and the transport does not acknowledge.
    func deadLetter(_ letter: PluginDeadLetter, plugin: String) -> PluginStatus
}

extension PluginHostDelegate {
    /// Until the host keeps dead letters: logs the message as dropped (never its bytes) and
    /// answers `.ok`, so the transport acknowledges it and the device's next messages flow.
    public func deadLetter(_ letter: PluginDeadLetter, plugin: String) -> PluginStatus {
        log(
            level: .warning,
            message: "dropped a message that can never be delivered (this host keeps no dead letters): "
                + "device \(letter.deviceID.isEmpty ? "-" : letter.deviceID), \(letter.size) bytes, "
                + "reason \(letter.reason)\(letter.detail.isEmpty ? "" : " (\(letter.detail))")",
            plugin: plugin)
        return .ok
    }
}
