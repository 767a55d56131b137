import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import Logging

/// The host side of the plugin ABI: every callback a plugin makes lands here and is handed to
/// the one part that owns it (docs/architecture.md, "The core"):
///
///     ingest, delivered ───────────────▶ TelemetryRelay    (outbox, dispatch)
///     link_state, sign_sas ────────────▶ DeviceIdentities  (signer, provisioning, removal, links)
///     command, deliver_result ─────────▶ CommandPath       (verify, rules, audit, deliver, answer)
///     log ─────────────────────────────▶ the daemon's logger
///
/// The router decides nothing and holds no state of its own. No callback waits for SQLite
/// except `ingest`, whose contract is to return once the batch is durable.
public final class HostRouter: PluginHostDelegate {
    public let telemetry: TelemetryRelay
    public let identities: DeviceIdentities
    public let commands: CommandPath
    let logger: Logger

    public init(telemetry: TelemetryRelay, identities: DeviceIdentities, commands: CommandPath, logger: Logger) {
        self.telemetry = telemetry
        self.identities = identities
        self.commands = commands
        self.logger = logger
    }

    /// The three owners over one state store, as the daemon builds them.
    public convenience init(
        store: StateStore, policy: OutboxPolicy, signer: any DeviceSigner, logger: Logger,
        provisioning: GatewayConfig.Provisioning? = nil, memoryCap: Int = 16 << 20,
        metrics: GatewayMetrics = GatewayMetrics()
    ) throws(StoreError) {
        let identities = try DeviceIdentities(
            store: store, signer: signer, logger: logger, provisioning: provisioning, metrics: metrics)
        let telemetry = try TelemetryRelay(
            store: store, policy: policy, revoked: identities.revoked, logger: logger, memoryCap: memoryCap,
            metrics: metrics)
        self.init(
            telemetry: telemetry, identities: identities,
            commands: CommandPath(store: store, logger: logger, metrics: metrics), logger: logger)
    }

    // MARK: - Starting and stopping the two paths of telemetry

    /// Starts the relay's dispatcher, then opens the hub identities (the gateway's own first),
    /// and drops what is still held for devices removed before this start.
    public func start(upstream: PluginInstance, ownIdentity: String? = nil) throws(StoreError) {
        telemetry.start(upstream: upstream)
        try identities.start(upstream: upstream, ownIdentity: ownIdentity)
        identities.applyRemovedAtStart(drop: telemetry.dropDevice)
    }

    /// Lets in-flight messages be acknowledged for up to `timeout`, stops the dispatcher, then
    /// records every link as down (before the hub transport closes them).
    public func drain(timeout: Duration) {
        telemetry.drain(timeout: timeout)
        identities.stop()
    }

    /// Re-reads the removed devices from the registry, and takes in requeued dead letters
    /// (SIGHUP).
    public func applyRegistry() {
        identities.applyRegistry(drop: telemetry.dropDevice)
        telemetry.adoptRequeued()
    }

    // MARK: - PluginHostDelegate

    public func ingest(_ messages: [PluginMessage], from plugin: String) -> PluginStatus {
        let result = telemetry.ingest(messages, from: plugin)
        for device in result.devices { identities.openIfNeeded(device, seenOnSite: true) }
        return result.status
    }

    public func delivered(token: UInt64, status: PluginStatus) {
        telemetry.delivered(token: token, status: status)
    }

    public func linkStateChanged(deviceID: String, state: LinkState, reason: String, plugin: String) {
        // The site transport reports its own connection to the site broker with no device id
        // (gatehouse_plugin.h, link_state): for the metrics and systemd's readiness.
        if deviceID.isEmpty {
            identities.metrics.siteLink(up: state == .up)
            logger.log(
                level: state == .up ? .info : .warning, "site link changed",
                metadata: ["state": "\(state)", "plugin": "\(plugin)", "reason": "\(reason)"])
            return
        }
        guard identities.recordLink(deviceID: deviceID, state: state, reason: reason, plugin: plugin) else { return }
        telemetry.setLink(deviceID, up: state == .up)
    }

    public func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError> {
        identities.signSAS(deviceID: deviceID, resource: resource, expiry: expiry)
    }

    public func command(
        _ command: PluginCommand, respond: @escaping @Sendable (_ status: Int32, _ body: [UInt8]) -> Void
    ) {
        commands.handle(command, respond: respond)
    }

    public func deliverResult(token: UInt64, status: Int32, body: [UInt8], plugin: String) {
        commands.deliverResult(token: token, status: status, body: body)
    }

    /// A message the site transport could not ingest (too large, no device in its topic): kept
    /// as a dead letter, durable before this returns, so the transport may then acknowledge it
    /// (`gh_host_api.dead_letter`). Logged with sizes only, never payload bytes.
    public func deadLetter(_ letter: PluginDeadLetter, plugin: String) -> PluginStatus {
        let now = TelemetryRelay.nowMS()
        let record = DeadLetterRecord(
            timeMS: now, deviceID: letter.deviceID, source: .site, topic: letter.topic, size: letter.size,
            reason: letter.reason.rawValue, detail: letter.detail, payload: letter.head,
            createdMS: letter.receivedUnixMS)
        do {
            _ = try identities.store.addDeadLetters([record])
        } catch {
            logger.error(
                "cannot keep a dead letter; not acknowledging it (the site broker will send it again)",
                metadata: ["device": "\(letter.deviceID)", "plugin": "\(plugin)", "error": "\(error)"])
            return .unavailable
        }
        identities.metrics.deadLetter(source: "site", reason: letter.reason.rawValue)
        logger.warning(
            "dead letter kept: a site message that can never be relayed",
            metadata: [
                "device": "\(letter.deviceID)", "reason": "\(letter.reason)", "bytes": "\(letter.size)",
                "detail": "\(letter.detail)", "plugin": "\(plugin)",
            ])
        return .ok
    }

    public func log(level: PluginLogLevel, message: String, plugin: String) {
        let mapped: Logger.Level =
            switch level {
            case .debug: .debug
            case .info: .info
            case .warning: .warning
            case .error: .error
            }
        logger.log(level: mapped, "\(message)", metadata: ["plugin": "\(plugin)"])
    }
}
