import DequeModule
import Dispatch
import FoundationEssentials
import GatehouseBasics
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
///
/// Registrations beyond `concurrency` wait in a FIFO as closures, not on threads: each slot
/// (a thread while it has work) takes the next when one ends. Each waiting registration used to
/// park a dispatch worker on a semaphore; the process's dispatch pool, which grows slowly, then
/// filled with parked waiters, and fewer registrations than `concurrency` ran: 15 of 32 after
/// 10 s with 500 devices waiting, 1 of 4 with other dispatch work blocked beside it
/// (`ProvisionerTests`).
final class Provisioner: Sendable {
    let settings: GatewayConfig.Provisioning
    let signer: any DeviceSigner
    let store: StateStore
    let logger: Logger
    /// Registrations by outcome and their durations (docs/operations.md).
    let metrics: GatewayMetrics
    /// How many registrations run, and those waiting for a slot, first come first served.
    private struct Slots {
        var running = 0
        var waiting = Deque<@Sendable () -> Void>()
    }
    private let slots = Mutex(Slots())
    /// Where retries wait for their backoff.
    private let queue = DispatchQueue(label: "gatehouse.provisioning.backoff")
    /// Devices assigned (from the registry at start, then as DPS answers).
    private let assigned: Mutex<Set<String>>
    /// Removed devices: not registered, their pending retries end.
    private let revoked: Revocations
    /// One registration with DPS (`DPSClient.register`; tests put a stand-in here).
    typealias Register =
        @Sendable (_ registrationID: String, _ settings: DPSSettings, _ sign: (String, Int64) throws -> String)
        throws(ProvisioningError) -> DPSAssignment
    private let register: Register

    init(
        settings: GatewayConfig.Provisioning, signer: any DeviceSigner, store: StateStore, logger: Logger,
        revoked: Revocations = Revocations([]), metrics: GatewayMetrics = GatewayMetrics(),
        register: @escaping Register = { id, dps, sign throws(ProvisioningError) in
            try DPSClient.register(registrationID: id, settings: dps, sign: sign)
        }
    ) throws(StoreError) {
        self.register = register
        self.metrics = metrics
        self.revoked = revoked
        self.settings = settings
        self.signer = signer
        self.store = store
        self.logger = logger
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
        let job: @Sendable () -> Void = { [self] in registerNow(deviceID, attempt: attempt, then: ready) }
        guard delay > .zero else { return enqueue(job) }
        let ms = Int(delay.components.seconds * 1000)
        queue.asyncAfter(deadline: .now() + .milliseconds(ms)) { [self] in enqueue(job) }
    }

    /// Runs `job` now if a slot is free, else queues it for the next slot.
    private func enqueue(_ job: @escaping @Sendable () -> Void) {
        let concurrency = max(settings.concurrency, 1)
        let startNow = slots.withLock { slots in
            guard slots.running < concurrency else {
                slots.waiting.append(job)
                return false
            }
            slots.running += 1
            return true
        }
        guard startNow else { return }
        // A thread of its own for the slot, which runs jobs until none waits: a registration
        // blocks for seconds (TLS, DPS's retry-after), and the dispatch pool's threads, shared by
        // the whole process, grow too slowly for `concurrency` blocked jobs.
        NamedThread.start(name: "gatehouse.provisioning") { [self] in
            var next: (@Sendable () -> Void)? = job
            while let current = next {
                current()
                next = slots.withLock { slots in
                    if let waiting = slots.waiting.popFirst() { return waiting }
                    slots.running -= 1
                    return nil
                }
            }
        }
    }

    /// One registration attempt, in a slot.
    private func registerNow(_ deviceID: String, attempt: Int, then ready: @escaping @Sendable () -> Void) {
        // A device removed meanwhile is not registered (and its retries end here).
        guard !revoked.contains(deviceID) else { return }
        record(deviceID, "assigning")
        let started = ContinuousClock.now
        let dps = DPSSettings(
            host: settings.endpoint, port: settings.port, idScope: settings.idScope, caFile: settings.caFile)
        do throws(ProvisioningError) {
            let assignment = try register(deviceID, dps) { resource, expiry in
                try signer.sign(deviceID: deviceID, resource: resource, expiry: expiry, policyName: "registration")
            }
            metrics.provisioned(ok: true, duration: ContinuousClock.now - started)
            guard !revoked.contains(deviceID) else { return }
            assigned.withLock { _ = $0.insert(deviceID) }
            record(deviceID, "assigned", hub: assignment.assignedHub)
            logger.info(
                "device registered with DPS",
                metadata: ["device": "\(deviceID)", "assigned_hub": "\(assignment.assignedHub)"])
            ready()
        } catch {
            metrics.provisioned(ok: false, duration: ContinuousClock.now - started)
            guard !revoked.contains(deviceID) else { return }
            let next = min(Duration.seconds(30) * (1 << min(attempt, 5)), .seconds(900))
            record(deviceID, "failed: \(error.message)")
            logger.error(
                "DPS registration failed; will retry",
                metadata: ["device": "\(deviceID)", "error": "\(error)", "retry_in": "\(next)"])
            schedule(deviceID, after: next, attempt: attempt + 1, then: ready)
        }
    }

    /// Forgets a removed device's assignment: added again, it is registered again.
    func forget(_ deviceID: String) {
        assigned.withLock { _ = $0.remove(deviceID) }
    }

    private func record(_ deviceID: String, _ state: String, hub: String = "") {
        do {
            try store.setProvisioning(deviceID: deviceID, state: state, assignedHub: hub, atMS: TelemetryRelay.nowMS())
        } catch {
            logger.error(
                "cannot record a provisioning state", metadata: ["device": "\(deviceID)", "error": "\(error)"])
        }
    }
}
