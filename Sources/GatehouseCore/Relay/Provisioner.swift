import Dispatch
import Foundation
import GatehouseProvisioning
import GatehouseStore
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Registers leaf devices with DPS on their behalf before their hub identity is opened.
///
/// A device id must match one of the configured `allow` patterns (fnmatch globs); others are
/// logged once and wait. Registrations run on a background queue, at most `concurrency` at a
/// time, signed by the gateway's signer (the key in memory or derived in the TPM), and retried
/// with exponential backoff (30 s doubling to 15 min) when DPS refuses or cannot be reached.
/// The assignment is recorded in the registry, so a restart does not register again.
final class Provisioner: Sendable {
    let settings: GatewayConfig.Provisioning
    let signer: any DeviceSigner
    let store: StateStore
    let logger: Logger
    private let slots: DispatchSemaphore
    private let queue = DispatchQueue(label: "gatehouse.provisioning", attributes: .concurrent)
    /// Devices assigned (from the registry at start, then as DPS answers).
    private let assigned: Mutex<Set<String>>
    /// Removed devices: not registered, their pending retries end.
    private let revoked: Revocations

    init(
        settings: GatewayConfig.Provisioning, signer: any DeviceSigner, store: StateStore, logger: Logger,
        revoked: Revocations = Revocations([])
    ) throws(StoreError) {
        self.revoked = revoked
        self.settings = settings
        self.signer = signer
        self.store = store
        self.logger = logger
        slots = DispatchSemaphore(value: settings.concurrency)
        assigned = Mutex(Set(try store.devices().filter { $0.provisioning == "assigned" }.map(\.id)))
    }

    func isAllowed(_ deviceID: String) -> Bool {
        settings.allow.contains { fnmatch($0, deviceID, 0) == 0 }
    }

    /// Calls `ready` (on some thread) once the device is registered — at once if it already is.
    func ensure(_ deviceID: String, then ready: @escaping @Sendable () -> Void) {
        guard !revoked.contains(deviceID) else { return }
        if assigned.withLock({ $0.contains(deviceID) }) {
            ready()
            return
        }
        guard isAllowed(deviceID) else {
            logger.warning(
                "device is not in [provisioning] allow; it is not registered and its telemetry waits in the outbox",
                metadata: ["device": "\(deviceID)"])
            record(deviceID, "failed: not in [provisioning] allow")
            return
        }
        schedule(deviceID, after: .zero, attempt: 0, then: ready)
    }

    private func schedule(
        _ deviceID: String, after delay: Duration, attempt: Int, then ready: @escaping @Sendable () -> Void
    ) {
        let ms = Int(delay.components.seconds * 1000)
        queue.asyncAfter(deadline: .now() + .milliseconds(ms)) { [self] in
            // A device removed meanwhile is not registered (and its retries end here).
            guard !revoked.contains(deviceID) else { return }
            slots.wait()
            defer { slots.signal() }
            guard !revoked.contains(deviceID) else { return }
            record(deviceID, "assigning")
            let dps = DPSSettings(
                host: settings.endpoint, port: settings.port, idScope: settings.idScope, caFile: settings.caFile)
            do throws(ProvisioningError) {
                let assignment = try DPSClient.register(registrationID: deviceID, settings: dps) { resource, expiry in
                    try signer.sign(deviceID: deviceID, resource: resource, expiry: expiry, policyName: "registration")
                }
                guard !revoked.contains(deviceID) else { return }
                assigned.withLock { _ = $0.insert(deviceID) }
                record(deviceID, "assigned", hub: assignment.assignedHub)
                logger.info(
                    "device registered with DPS",
                    metadata: ["device": "\(deviceID)", "assigned_hub": "\(assignment.assignedHub)"])
                ready()
            } catch {
                guard !revoked.contains(deviceID) else { return }
                let next = min(Duration.seconds(30) * (1 << min(attempt, 5)), .seconds(900))
                record(deviceID, "failed: \(error.message)")
                logger.error(
                    "DPS registration failed; will retry",
                    metadata: ["device": "\(deviceID)", "error": "\(error)", "retry_in": "\(next)"])
                schedule(deviceID, after: next, attempt: attempt + 1, then: ready)
            }
        }
    }

    /// Forgets a removed device's assignment: added again, it is registered again.
    func forget(_ deviceID: String) {
        assigned.withLock { _ = $0.remove(deviceID) }
    }

    private func record(_ deviceID: String, _ state: String, hub: String = "") {
        do {
            try store.setProvisioning(deviceID: deviceID, state: state, assignedHub: hub, atMS: Relay.nowMS())
        } catch {
            logger.error(
                "cannot record a provisioning state", metadata: ["device": "\(deviceID)", "error": "\(error)"])
        }
    }
}
