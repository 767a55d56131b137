import Dispatch
import FoundationEssentials
import GatehouseBasics
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import Logging
import Synchronization

/// Who may reach the hub, and how: the signer of SAS tokens, leaf provisioning, removal of
/// devices, and the recorded state of every upstream link (docs/architecture.md, "The core").
///
/// - A device's hub identity is opened once, the first time its telemetry is stored (or at
///   start, for every device in the registry), after DPS registration when provisioning is on.
/// - A removed device (`gatehouse devices remove`, read again on SIGHUP) has its identity
///   closed, its derived key forgotten and its waiting telemetry dropped; nothing is signed
///   for it any more.
/// - Link changes arrive on the hub plugin's I/O thread, which must not wait for SQLite
///   (`gh_host_api.link_state` is non-blocking): they are recorded in memory, the latest per
///   device, and written by this owner's own writer thread in one transaction a pass.
public final class DeviceIdentities: Sendable {
    let store: StateStore
    let logger: Logger
    let signer: any DeviceSigner
    /// Registers devices with DPS before their identity is opened, when configured.
    let provisioner: Provisioner?
    /// Devices removed in the registry: never relayed, no hub identity, no signature.
    public let revoked: Revocations
    /// Link states, reconnects, signatures (docs/operations.md).
    let metrics: GatewayMetrics
    /// "tpm" when the device keys live in the TPM, else "key": the signing histogram's label.
    let signerKind: String
    /// Devices whose upstream identity was asked to open.
    private let opened = Mutex<Set<String>>([])
    private let upstreamSlot = Mutex<PluginInstance?>(nil)
    /// Link changes not written yet, the latest per device: a link that flaps while the
    /// database is slow costs one row write, not one a change.
    private let linkChanges = Mutex<[String: LinkStateChange]>([:])
    private let writer = LinkStateWriter()

    public init(
        store: StateStore, signer: any DeviceSigner, logger: Logger, provisioning: GatewayConfig.Provisioning? = nil,
        metrics: GatewayMetrics = GatewayMetrics()
    ) throws(StoreError) {
        self.store = store
        self.signer = signer
        self.metrics = metrics
        signerKind = signer is TPMDeviceSigner || signer is GatewayIdentitySigner ? "tpm" : "key"
        self.logger = logger
        let revoked = Revocations(try store.removedDeviceIDs())
        self.revoked = revoked
        provisioner = try provisioning.map { settings throws(StoreError) in
            try Provisioner(
                settings: settings, signer: signer, store: store, logger: logger, revoked: revoked, metrics: metrics)
        }
    }

    // MARK: - Lifecycle

    /// Resets the recorded link states, starts the link-state writer and opens the identity of
    /// every known device; the gateway's own identity (`ownIdentity`, already registered) first
    /// and directly. `onRemoved` is told of each removed device (the relay drops its telemetry).
    public func start(upstream: PluginInstance, ownIdentity: String? = nil) throws(StoreError) {
        upstreamSlot.withLock { $0 = upstream }
        try store.resetLinkStates(atMS: TelemetryRelay.nowMS())
        writer.start { [self] in writeLinkStates() }
        if let ownIdentity, opened.withLock({ $0.insert(ownIdentity).inserted }) {
            openIdentity(ownIdentity)
        }
        for device in try store.devices() where !device.isRemoved { openIfNeeded(device.id) }
    }

    /// Writes what is recorded, then marks every link down: called once nothing is sent any
    /// more, before the hub transport closes its links (link changes after this are not
    /// written; the next start resets them).
    public func stop() {
        writer.stop()
        writeLinkStates()
        do {
            try store.markLinksDown(reason: "gatehoused stopping", atMS: TelemetryRelay.nowMS())
        } catch {
            logger.error("cannot record the links as down", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Identities

    /// Opens the device's hub identity the first time it is seen (after DPS registration when
    /// provisioning is on); a removed device's is never opened. `seenOnSite`: the device's first
    /// telemetry was just stored (logged), rather than the device being known from the registry.
    public func openIfNeeded(_ deviceID: String, seenOnSite: Bool = false) {
        guard !revoked.contains(deviceID) else { return }
        guard opened.withLock({ $0.insert(deviceID).inserted }) else { return }
        if seenOnSite {
            logger.info("new leaf device seen on the site broker", metadata: ["device": "\(deviceID)"])
        }
        if let provisioner {
            // Registered with DPS first (once; the registry remembers), then connected.
            provisioner.ensure(deviceID) { [self] in openIdentity(deviceID) }
        } else {
            openIdentity(deviceID)
        }
    }

    private func openIdentity(_ deviceID: String) {
        guard !revoked.contains(deviceID), let upstream = upstreamSlot.withLock({ $0 }) else { return }
        let status = upstream.openIdentity(deviceID)
        if status != .ok {
            logger.error(
                "upstream refused to open the device identity",
                metadata: ["device": "\(deviceID)", "status": "\(status)"])
        }
    }

    /// Re-reads which devices are removed (`gatehouse devices remove` changes the registry and
    /// sends SIGHUP). For each newly removed device: identity closed, derived key forgotten,
    /// then `drop` (the relay forgets its telemetry and returns how much). A device added again
    /// is relayed again from its next message.
    public func applyRegistry(drop: (String) -> Int) {
        let now: Set<String>
        do {
            now = try store.removedDeviceIDs()
        } catch {
            logger.error("cannot read the removed devices from the registry", metadata: ["error": "\(error)"])
            return
        }
        let (removed, restored) = revoked.replace(with: now)
        for device in removed.sorted() { remove(device, drop: drop) }
        for device in restored.sorted() {
            logger.info("device added again; relayed from its next message", metadata: ["device": "\(device)"])
        }
    }

    /// Everything held for a device removed before this start goes too.
    public func applyRemovedAtStart(drop: (String) -> Int) {
        for device in revoked.all.sorted() { remove(device, drop: drop) }
    }

    private func remove(_ deviceID: String, drop: (String) -> Int) {
        opened.withLock { _ = $0.remove(deviceID) }
        metrics.forgetHubLink(deviceID)
        provisioner?.forget(deviceID)
        signer.forget(deviceID: deviceID)
        if let upstream = upstreamSlot.withLock({ $0 }) { _ = upstream.closeIdentity(deviceID) }
        let dropped = drop(deviceID)
        logger.notice(
            "device removed: hub identity closed, derived key forgotten, not relayed any more",
            metadata: ["device": "\(deviceID)", "dropped": "\(dropped)"])
    }

    // MARK: - Plugin callbacks

    /// Signs a SAS token for the hub transport; never for a removed device.
    public func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError> {
        guard !revoked.contains(deviceID) else {
            logger.warning("refused to sign for a removed device", metadata: ["device": "\(deviceID)"])
            return .failure(PluginStatusError(.refused))
        }
        let started = ContinuousClock.now
        do {
            let token = try signer.sign(deviceID: deviceID, resource: resource, expiry: expiry)
            metrics.signed(ok: true, signer: signerKind, duration: ContinuousClock.now - started)
            return .success(token)
        } catch {
            metrics.signed(ok: false, signer: signerKind, duration: ContinuousClock.now - started)
            logger.error("refused to sign a SAS token", metadata: ["device": "\(deviceID)", "reason": "\(error)"])
            return .failure(PluginStatusError(.refused))
        }
    }

    /// Records a link change (written later by the writer thread); false for a removed device,
    /// whose change is only logged.
    @discardableResult
    public func recordLink(deviceID: String, state: LinkState, reason: String, plugin: String) -> Bool {
        if revoked.contains(deviceID) {
            logger.info(
                "upstream link of a removed device changed", metadata: ["device": "\(deviceID)", "state": "\(state)"])
            return false
        }
        var metadata: Logger.Metadata = ["device": "\(deviceID)", "state": "\(state)", "plugin": "\(plugin)"]
        if !reason.isEmpty { metadata["reason"] = "\(reason)" }
        logger.log(level: state == .down ? .warning : .info, "upstream link changed", metadata: metadata)
        let change = LinkStateChange(
            deviceID: deviceID, state: "\(state)", reason: reason, atMS: TelemetryRelay.nowMS())
        linkChanges.withLock { $0[deviceID] = change }
        metrics.hubLink(deviceID, state: "\(state)")
        writer.wake()
        return true
    }

    /// Writes the link changes recorded since the last pass, in one transaction.
    private func writeLinkStates() {
        let changes = linkChanges.withLock { changes in
            defer { changes.removeAll(keepingCapacity: true) }
            return Array(changes.values)
        }
        // A device removed meanwhile keeps its `removed` state.
        let kept = changes.filter { !revoked.contains($0.deviceID) }
        guard !kept.isEmpty else { return }
        do {
            try store.setLinkStates(kept)
        } catch {
            logger.error(
                "cannot record link states",
                metadata: ["devices": "\(kept.map(\.deviceID).sorted().joined(separator: ","))", "error": "\(error)"])
        }
    }
}

/// The thread that writes link states: woken by a change, it waits 20 ms so that a burst of
/// changes (a hub that drops every link at once) is one transaction, then writes.
final class LinkStateWriter: Sendable {
    private let signal = DispatchSemaphore(value: 0)
    private let pending = Atomic<Bool>(false)
    private let running = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)

    func start(_ write: @escaping @Sendable () -> Void) {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        NamedThread.start(name: "gatehouse.links") { [self] in
            while running.load(ordering: .acquiring) {
                signal.wait()
                guard running.load(ordering: .acquiring) else { break }
                NamedThread.sleep(.milliseconds(20))
                pending.store(false, ordering: .releasing)
                write()
            }
            done.signal()
        }
    }

    func wake() {
        if !pending.exchange(true, ordering: .acquiringAndReleasing) { signal.signal() }
    }

    /// Stops the thread and waits for it (its last write included).
    func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        signal.signal()
        done.wait()
    }
}

/// The set of removed devices, shared by the relay, the identities and the provisioner.
public final class Revocations: Sendable {
    private let ids: Mutex<Set<String>>

    public init(_ ids: Set<String>) { self.ids = Mutex(ids) }

    public func contains(_ deviceID: String) -> Bool { ids.withLock { $0.contains(deviceID) } }
    public var isEmpty: Bool { ids.withLock { $0.isEmpty } }
    public var all: Set<String> { ids.withLock { $0 } }

    /// Swaps in the registry's set; returns the newly removed and the restored ids.
    func replace(with fresh: Set<String>) -> (removed: Set<String>, restored: Set<String>) {
        ids.withLock { current in
            defer { current = fresh }
            return (fresh.subtracting(current), current.subtracting(fresh))
        }
    }
}
