import DequeModule
import Dispatch
import FoundationEssentials
import GateRules
import GatehouseBasics
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import Logging
import Synchronization

/// The telemetry path: site telemetry in, durable outbox, hub out (docs/architecture.md,
/// "The telemetry path").
///
/// The promises it keeps (docs/architecture.md, "Failure model"):
/// - `ingest` returns `.ok` only once the batch is committed in the outbox, so a transport that
///   acknowledges after `ingest` never acknowledges a message that a crash could lose;
/// - a message leaves the outbox only when the hub acknowledged it (`delivered(.ok)`);
/// - messages of one device are sent in outbox order within a priority lane; after a link loss
///   the unacknowledged ones are sent again, in order (duplicates are possible, loss is not);
/// - across lanes, high goes before normal before low: every pass of the dispatcher hands out
///   every device's high messages before any normal one, and a device's window takes its high
///   messages first;
/// - a message past its time to live (a route's `ttl`) is dropped and counted, never sent.
///
/// With `[gateway] rules_dir` and telemetry rules, `ingest` routes each message first, outside
/// the locks (`TelemetryRouting`): upstream (into the outbox, with a priority and maybe a time
/// to live), archive (the same transaction), or drop — each counted per rule. Without them every
/// message goes upstream at normal priority, as fast as before rules existed.
///
/// It owns the outbox and nothing else: which devices exist, their keys and links belong to
/// `DeviceIdentities`, commands to `CommandPath`; `HostRouter` hands each plugin callback to
/// its owner.
///
/// Concurrency: two locks, always taken in this order.
/// - `book` serialises everything that writes outbox rows *and* decides what is in memory
///   (ingest, limit enforcement, refill). Because commit and in-memory append happen under one
///   lock, memory holds, for each priority lane, a gap-free, duplicate-free prefix of that lane's
///   rows; each lane spills to disk and is read back on its own (high first).
/// - `lanes` holds the per-device queues and in-flight sets; deliveries and link changes touch
///   only it and never block on SQLite.
/// One dispatcher thread sends, flushes acknowledgements to SQLite in batches and refills memory
/// from disk; transports' callbacks only update state and wake it (docs/architecture.md,
/// "Threads"). Expiry by age runs from `OutboxExpiry`, a periodic service.
public final class TelemetryRelay: Sendable {
    let store: StateStore
    let logger: Logger
    /// Devices removed with `gatehouse devices remove`: their telemetry is dropped at ingest.
    let revoked: Revocations
    private let book: Mutex<Book>
    private let lanes: Mutex<Lanes>
    /// The hub transport's reports (`delivered`) not yet applied to `lanes`.
    private let reports = Mutex<[(seq: Int64, status: PluginStatus)]>([])
    private let counters = Counters()
    private let wake = DispatchSemaphore(value: 0)
    private let wakeRequested = Atomic<Bool>(false)
    private let running = Atomic<Bool>(false)
    /// Mirrors `Book.spilled`, so the dispatcher can skip the `book` lock (held by ingest across
    /// its fsync) when memory already holds the whole outbox.
    private let spilledHint = Atomic<Bool>(true)
    private let upstreamSlot = Mutex<PluginInstance?>(nil)
    private let dispatcherDone = DispatchSemaphore(value: 0)
    private let expiryRequested = Atomic<Bool>(false)
    /// The most payload bytes kept in memory; past it, the outbox is read back from disk.
    let memoryCap: Int

    /// The telemetry rules (`configure`); nil: everything goes upstream at normal priority.
    private let rules = Mutex<RulesSetup?>(nil)
    /// The last policy prepared for routing, rebuilt when a reload swaps the policy.
    private let routingCache = Mutex<TelemetryRouting?>(nil)
    let deviceFacts = DeviceFacts()
    let ruleCounters = TelemetryRuleCounters()
    let archive: ArchiveKeeper
    /// Only the rare events are recorded here (the hub side's dead letters); the metrics read
    /// the relay's own counters when scraped (`GatewayMetrics.collect`).
    let metrics: GatewayMetrics

    struct RulesSetup: Sendable {
        let handle: PolicyHandle
        let gateway: Value
    }

    /// What `book` guards: the outbox's size on disk and, per priority lane, whether memory
    /// mirrors all of it.
    struct Book {
        var policy: OutboxPolicy
        var messages: Int
        var bytes: Int
        /// Per lane (indexed by `OutboxPriority.rawValue`): true when some committed rows of the
        /// lane are not in memory; they start at `spillCursor` of the lane.
        var spilled: [Bool] = [true, true, true]
        var spillCursor: [Int64] = [0, 0, 0]

        var anySpilled: Bool { spilled[0] || spilled[1] || spilled[2] }
    }

    /// One device's queues, one a priority lane. A class, so that mutating it in
    /// `Lanes.byDevice` never copies the queues (a struct in a dictionary is copied on write
    /// while the dictionary holds it). Touched only under the `lanes` lock.
    final class Lane {
        var high = Deque<OutboxRecord>()
        var normal = Deque<OutboxRecord>()
        var low = Deque<OutboxRecord>()
        /// Sent, not yet acknowledged, in send order (acknowledgements mostly come in that order:
        /// the first is the one removed).
        var inflight = Deque<OutboxRecord>()
        var linkUp = false
        var retryAfter: ContinuousClock.Instant? = nil

        var isEmpty: Bool { high.isEmpty && normal.isEmpty && low.isEmpty }

        func append(_ record: OutboxRecord) {
            switch record.priority {
            case .high: high.append(record)
            case .normal: normal.append(record)
            case .low: low.append(record)
            }
        }

        func pop(_ priority: OutboxPriority) -> OutboxRecord? {
            switch priority {
            case .high: high.popFirst()
            case .normal: normal.popFirst()
            case .low: low.popFirst()
            }
        }

        /// Puts a record back at its place (outbox order) in its lane.
        func reinsert(_ record: OutboxRecord) {
            func put(_ queue: inout Deque<OutboxRecord>) {
                let position = queue.firstIndex { $0.seq > record.seq } ?? queue.endIndex
                queue.insert(record, at: position)
            }
            switch record.priority {
            case .high: put(&high)
            case .normal: put(&normal)
            case .low: put(&low)
            }
        }

        /// Removes the queued records whose seq is in `seqs`; returns their payload bytes.
        func remove(_ seqs: Set<Int64>) -> Int {
            var freed = 0
            func prune(_ queue: inout Deque<OutboxRecord>) {
                queue.removeAll { record in
                    guard seqs.contains(record.seq) else { return false }
                    freed += record.payload.count
                    return true
                }
            }
            prune(&high)
            prune(&normal)
            prune(&low)
            return freed
        }

        /// Payload bytes of everything queued and in flight.
        var memoryBytes: Int {
            (high.reduce(0) { $0 + $1.payload.count } + normal.reduce(0) { $0 + $1.payload.count }
                + low.reduce(0) { $0 + $1.payload.count } + inflight.reduce(0) { $0 + $1.payload.count })
        }
    }

    /// What `lanes` guards.
    struct Lanes {
        var byDevice: [String: Lane] = [:]
        /// Devices that may have something to send now.
        var ready = Set<String>()
        /// seq → device of everything in flight.
        var inflightDevice: [Int64: String] = [:]
        /// Acknowledged seqs not yet removed from SQLite (with those that expired before they
        /// were sent), and per-device counts of the acknowledged ones.
        var acknowledged: [Int64] = []
        var acknowledgedBytes = 0
        var acknowledgedPerDevice: [String: Int] = [:]
        /// When the oldest of `acknowledged` was acknowledged (nil: none waits).
        var acknowledgedSince: ContinuousClock.Instant?
        var memoryBytes = 0
        /// Messages the hub transport said can never be delivered (`send` → `.invalid`,
        /// `delivered` → `.refused`), waiting for the dispatcher to move them to the dead letters.
        var doomed: [(seq: Int64, reason: String)] = []
        var inflightPerDevice: Int

        /// A queued record past its time to live: it leaves SQLite with the acknowledged ones
        /// (not counted as delivered) and memory now.
        mutating func expire(_ record: OutboxRecord) {
            if acknowledged.isEmpty { acknowledgedSince = .now }
            acknowledged.append(record.seq)
            acknowledgedBytes += record.size
            memoryBytes -= record.payload.count
        }

        /// Rows that leave SQLite with the next commit (acknowledged, or expired before they
        /// were sent): already counted, so no sweep may drop and count them again.
        var pendingDeletion: Set<Int64> { Set(acknowledged).union(doomed.map(\.seq)) }

        /// What no limit, age or time-to-live sweep may take: what is in flight, and what is
        /// already on its way out.
        var inFlightOrPendingDeletion: Set<Int64> {
            Set(inflightDevice.keys).union(acknowledged).union(doomed.map(\.seq))
        }

        /// The device's lane, created on first use.
        mutating func lane(_ device: String) -> Lane {
            if let lane = byDevice[device] { return lane }
            let lane = Lane()
            byDevice[device] = lane
            return lane
        }
    }

    final class Counters: Sendable {
        let ingested = Atomic<Int>(0)
        let delivered = Atomic<Int>(0)
        /// Messages that left the outbox without delivery (limits, max_age, removed devices,
        /// time to live).
        let dropped = Atomic<Int>(0)
        /// Of `dropped`: past their route's time to live.
        let expired = Atomic<Int>(0)
        /// Messages the telemetry rules sent nowhere (a `drop`, or no route).
        let ruleDropped = Atomic<Int>(0)
        let archived = Atomic<Int>(0)
        /// Messages moved to the dead letters by the hub side.
        let deadLettered = Atomic<Int>(0)
        /// Every message of a batch `ingest` took (whatever became of it), for the metrics.
        let received = Atomic<Int>(0)
        /// Of `dropped`, by cause (the metrics' `reason` label): the outbox's byte limit, its
        /// `max_age`, and removed devices.
        let droppedFull = Atomic<Int>(0)
        let droppedAge = Atomic<Int>(0)
        let droppedRemoved = Atomic<Int>(0)
    }

    /// Why rows left the outbox undelivered (`forget`).
    enum DropCause {
        case full, maxAge, removed, ttl
    }

    /// What `ingest` did: the status for the transport, and the devices of the stored messages
    /// (whose hub identities must be open).
    public struct Ingested: Sendable {
        public var status: PluginStatus
        public var devices: [String]
    }

    public init(
        store: StateStore, policy: OutboxPolicy, revoked: Revocations, logger: Logger, memoryCap: Int = 16 << 20,
        metrics: GatewayMetrics = GatewayMetrics()
    ) throws(StoreError) {
        self.store = store
        self.metrics = metrics
        self.revoked = revoked
        self.logger = logger
        self.memoryCap = memoryCap
        archive = ArchiveKeeper(store: store, policy: ArchivePolicy(), logger: logger)
        // Rows requeued while no daemon ran are in the totals already (read next); forget them
        // as "requeued", or a later SIGHUP would take them in a second time.
        _ = try store.takeRequeuedOutbox()
        let totals = try store.outboxTotals()
        // At start nothing is in memory: every lane is "spilled" and the dispatcher's refills
        // read it back in order, high first.
        book = Mutex(Book(policy: policy, messages: totals.messages, bytes: totals.bytes))
        lanes = Mutex(Lanes(inflightPerDevice: policy.inflightPerDevice))
        if totals.messages > 0 {
            logger.info(
                "outbox holds messages from before the restart; they will be sent first",
                metadata: ["messages": "\(totals.messages)", "bytes": "\(totals.bytes)"])
        }
    }

    // MARK: - Lifecycle

    /// Starts the dispatcher, which sends through `upstream`.
    public func start(upstream: PluginInstance) {
        upstreamSlot.withLock { $0 = upstream }
        running.store(true, ordering: .sequentiallyConsistent)
        NamedThread.start(name: "gatehouse.relay") { [self] in dispatcherLoop() }
        requestWake()
    }

    /// Applies the telemetry rules on ingest (`[gateway] rules_dir`): `handle.current` is read
    /// for every batch, so a reload takes effect at the next one. The rule set must have been
    /// checked against `TelemetryDestination.all`. Nil, or a rule set without telemetry rules:
    /// everything goes upstream at normal priority.
    public func configure(rules handle: PolicyHandle?, gateway: GatewayConfig.Gateway, archive policy: ArchivePolicy) {
        archive.update(policy)
        let value: Value = .map([
            "id": .string(gateway.id), "tenant": .string(gateway.tenant), "site": .string(gateway.site),
            "tags": .map([:]),
        ])
        rules.withLock { $0 = handle.map { RulesSetup(handle: $0, gateway: value) } }
        routingCache.withLock { $0 = nil }
        if handle != nil { refreshDeviceFacts() }
    }

    /// Applies a reloaded `[archive]` budget.
    public func update(archive policy: ArchivePolicy) { archive.update(policy) }

    /// The routing of the live policy, or nil when no telemetry rule applies.
    func currentRouting() -> TelemetryRouting? {
        guard let setup = rules.withLock({ $0 }) else { return nil }
        let policy = setup.handle.current
        guard policy.telemetryRuleCount > 0 else { return nil }
        let (routing, fresh) = routingCache.withLock { cached -> (TelemetryRouting, Bool) in
            if let cached, cached.policy === policy { return (cached, false) }
            let routing = TelemetryRouting(policy: policy, gateway: setup.gateway)
            cached = routing
            return (routing, true)
        }
        if fresh { ruleCounters.register(routing) }
        return routing
    }

    /// Re-reads the devices' model and tags for the telemetry rules (every 10 s and on SIGHUP),
    /// when the live rules read `device`.
    public func refreshDeviceFacts() {
        guard let setup = rules.withLock({ $0 }), setup.handle.current.telemetryReads.contains(.device) else { return }
        do {
            deviceFacts.replace(try store.devicesWithMetadata())
        } catch {
            logger.error("cannot read the devices' tags for the telemetry rules", metadata: ["error": "\(error)"])
        }
    }

    /// Prunes the archive to its `[archive]` budget (the "archive pruning" service).
    public func pruneArchive() { archive.prune(nowMS: Self.nowMS()) }

    /// Each telemetry rule's counts since start.
    public var ruleStats: [TelemetryRuleStats] { ruleCounters.snapshot }
    /// Changes whenever `ruleStats` does.
    public var ruleStatsGeneration: Int { ruleCounters.generation }

    /// Forgets a removed device: its lane, and its waiting telemetry in the outbox. Returns how
    /// many messages were dropped.
    func dropDevice(_ deviceID: String) -> Int {
        lanes.withLock { lanes in
            lanes.ready.remove(deviceID)
            guard let lane = lanes.byDevice.removeValue(forKey: deviceID) else { return }
            for record in lane.inflight { lanes.inflightDevice.removeValue(forKey: record.seq) }
            lanes.memoryBytes -= lane.memoryBytes
        }
        var dropped = 0
        do {
            try book.withLock { (book: inout Book) throws(StoreError) in
                let records = try store.dropOutbox(ofDevice: deviceID, keep: lanes.withLock { $0.pendingDeletion })
                dropped = records.count
                forget(records, in: &book, reason: "dropped the waiting telemetry of a removed device", cause: .removed)
            }
        } catch {
            logger.error("cannot drop a removed device's outbox messages", metadata: ["error": "\(error)"])
        }
        return dropped
    }

    /// Waits up to `timeout` for in-flight messages to be acknowledged, then stops the
    /// dispatcher after a last flush. Messages still queued stay in the outbox for next time.
    public func drain(timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        // Stop handing out new work; what is in flight may still be acknowledged.
        lanes.withLock { lanes in
            for lane in lanes.byDevice.values { lane.linkUp = false }
            lanes.ready.removeAll()
        }
        while ContinuousClock.now < deadline, lanes.withLock({ !$0.inflightDevice.isEmpty }) {
            NamedThread.sleep(.milliseconds(10))
        }
        let left = lanes.withLock { $0.inflightDevice.count }
        if left > 0 {
            logger.warning(
                "stopping with messages in flight; they stay in the outbox and are sent again",
                metadata: ["inflight": "\(left)"])
        }
        running.store(false, ordering: .sequentiallyConsistent)
        requestWake()
        dispatcherDone.wait()
    }

    /// Applies a reloaded outbox policy (limits, drop policy, window). Durability applies at
    /// the next start.
    public func update(policy: OutboxPolicy) {
        book.withLock { $0.policy = policy }
        lanes.withLock { $0.inflightPerDevice = policy.inflightPerDevice }
        requestWake()
    }

    // MARK: - Ingest

    /// Makes a batch durable (`gh_host_api.ingest`): `.ok` only once it is committed.
    public func ingest(_ messages: [PluginMessage], from plugin: String) -> Ingested {
        guard running.load(ordering: .relaxed) else { return Ingested(status: .stopped, devices: []) }
        let now = Self.nowMS()
        var records: [OutboxRecord]
        var archived: [ArchiveRecord] = []
        var received: [String: (count: Int, lastMS: Int64)]?
        var routed: (routing: TelemetryRouting, tally: TelemetryRouting.Tally)?
        var refused: [String] = []
        if let routing = currentRouting() {
            // A removed device's messages are not judged (see below for why it is checked again).
            var accepted = messages
            if !revoked.isEmpty {
                refused = messages.filter { revoked.contains($0.deviceID) }.map(\.deviceID)
                if !refused.isEmpty { accepted.removeAll { revoked.contains($0.deviceID) } }
            }
            // The rules decide before the `book` lock, which ingest holds across its fsync and
            // the dispatcher takes to flush and refill: neither waits for the rules.
            let batch = routing.route(accepted, nowMS: now, facts: deviceFacts)
            records = batch.records
            archived = batch.archived
            received = batch.received
            routed = (routing, batch.tally)
        } else {
            records = messages.map { message in
                OutboxRecord(
                    deviceID: message.deviceID,
                    properties: message.properties.map { OutboxProperty($0.key, $0.value) }, payload: message.payload,
                    createdMS: message.createdUnixMS == 0 ? now : message.createdUnixMS, enqueuedMS: now)
            }
        }
        var devices: [String] = []
        var archivedBytes = 0
        do throws(StoreError) {
            try book.withLock { (book: inout Book) throws(StoreError) in
                // A removed device's telemetry is acknowledged and dropped, not relayed. Checked
                // under `book`, which removal also takes, so nothing of it slips in meanwhile.
                // (A device removed while the rules judged its messages was counted by them.)
                if !revoked.isEmpty {
                    if let kept = received {
                        // Each kept message once, whether it went to the outbox, the archive or both.
                        for (device, count) in kept where revoked.contains(device) {
                            refused += Array(repeating: device, count: count.count)
                            received?.removeValue(forKey: device)
                        }
                        archived.removeAll { revoked.contains($0.deviceID) }
                    } else {
                        refused = records.filter { revoked.contains($0.deviceID) }.map(\.deviceID)
                    }
                    records.removeAll { revoked.contains($0.deviceID) }
                }
                guard !records.isEmpty || !archived.isEmpty else { return }
                if !records.isEmpty { records = try makeRoom(for: records, in: &book) }
                guard !records.isEmpty || !archived.isEmpty else { return }
                // What the hub acknowledged since the last commit leaves in this transaction.
                let delivered = takeAcknowledged()
                let stored: [OutboxRecord]
                do throws(StoreError) {
                    stored = try store.appendToOutbox(
                        records, archiving: archived, received: received, removing: delivered.seqs,
                        deliveredPerDevice: delivered.perDevice)
                } catch {
                    giveBack(delivered)
                    throw error
                }
                archivedBytes = archived.reduce(0) { $0 + $1.size }
                book.messages += stored.count - delivered.seqs.count
                book.bytes += stored.reduce(0) { $0 + $1.size } - delivered.bytes
                counters.ingested.add(stored.count, ordering: .relaxed)
                guard !stored.isEmpty else { return }
                lanes.withLock { lanes in
                    var spilled = false
                    for record in stored {
                        let lane = record.priority.rawValue
                        if !book.spilled[lane], lanes.memoryBytes + record.payload.count > memoryCap {
                            book.spilled[lane] = true
                            book.spillCursor[lane] = record.seq
                        }
                        if book.spilled[lane] {
                            spilled = true
                        } else {
                            Self.enqueue(record, into: &lanes)
                        }
                    }
                    if spilled { spilledHint.store(true, ordering: .relaxed) }
                }
                devices = Self.distinctDevices(stored)
            }
        } catch {
            logger.error(
                "cannot make telemetry durable; not acknowledging it (the site broker will redeliver)",
                metadata: ["plugin": "\(plugin)", "messages": "\(messages.count)", "error": "\(error)"])
            return Ingested(status: .unavailable, devices: [])
        }
        if let routed {
            // Counted once committed: a batch that failed is redelivered, and counted then.
            ruleCounters.add(routed.tally, from: routed.routing)
            counters.ruleDropped.add(routed.tally.droppedMessages, ordering: .relaxed)
        }
        if !archived.isEmpty {
            counters.archived.add(archived.count, ordering: .relaxed)
            archive.added(messages: archived.count, bytes: archivedBytes)
        }
        counters.received.add(messages.count, ordering: .relaxed)
        if !refused.isEmpty {
            counters.dropped.add(refused.count, ordering: .relaxed)
            counters.droppedRemoved.add(refused.count, ordering: .relaxed)
            logger.warning(
                "dropped telemetry of a removed device",
                metadata: [
                    "devices": "\(Set(refused).sorted().joined(separator: ","))", "dropped": "\(refused.count)",
                ])
        }
        requestWake()
        return Ingested(status: .ok, devices: devices)
    }

    /// The device ids of a batch, each once, in order of first appearance.
    private static func distinctDevices(_ records: [OutboxRecord]) -> [String] {
        var seen = Set<String>()
        return records.compactMap { seen.insert($0.deviceID).inserted ? $0.deviceID : nil }
    }

    /// Enforces the byte limit before a batch is appended; returns what may be appended.
    private func makeRoom(for records: [OutboxRecord], in book: inout Book) throws(StoreError) -> [OutboxRecord] {
        let incoming = records.reduce(0) { $0 + $1.size }
        let excess = book.bytes + incoming - book.policy.maxBytes
        guard excess > 0 else { return records }
        switch book.policy.drop {
        case .newest:
            // Keep the waiting messages; take as many of the new ones as fit.
            var room = book.policy.maxBytes - book.bytes
            var kept: [OutboxRecord] = []
            for record in records where record.size <= room {
                kept.append(record)
                room -= record.size
            }
            let dropped = records.count - kept.count
            counters.dropped.add(dropped, ordering: .relaxed)
            counters.droppedFull.add(dropped, ordering: .relaxed)
            logger.warning(
                "outbox full: dropped newest messages (policy drop = \"newest\")",
                metadata: ["dropped": "\(dropped)", "limit_bytes": "\(book.policy.maxBytes)"])
            return kept
        case .oldest:
            let keep = lanes.withLock { $0.inFlightOrPendingDeletion }
            let dropped = try store.dropOldest(freeing: excess, keep: keep)
            forget(
                dropped, in: &book, reason: "outbox full: dropped oldest messages (policy drop = \"oldest\")",
                cause: .full)
            return records
        }
    }

    /// Accounts for rows deleted without delivery: counters, the log, and memory.
    private func forget(
        _ dropped: [DroppedRecord], in book: inout Book, reason: Logger.Message, cause: DropCause
    ) {
        let expired = cause == .ttl
        guard !dropped.isEmpty else { return }
        // A row the dispatcher took meanwhile (sent, expired on its way out, refused) is its to
        // account for: counted once, whichever way it leaves.
        let forgotten: [DroppedRecord] = lanes.withLock { lanes in
            let taken = lanes.inFlightOrPendingDeletion
            let forgotten = taken.isEmpty ? dropped : dropped.filter { !taken.contains($0.seq) }
            let gone = Set(forgotten.map(\.seq))
            for device in Set(forgotten.map(\.deviceID)) {
                guard let lane = lanes.byDevice[device] else { continue }
                lanes.memoryBytes -= lane.remove(gone)
            }
            return forgotten
        }
        guard !forgotten.isEmpty else { return }
        book.messages -= forgotten.count
        book.bytes -= forgotten.reduce(0) { $0 + $1.size }
        counters.dropped.add(forgotten.count, ordering: .relaxed)
        switch cause {
        case .full: counters.droppedFull.add(forgotten.count, ordering: .relaxed)
        case .maxAge: counters.droppedAge.add(forgotten.count, ordering: .relaxed)
        case .removed: counters.droppedRemoved.add(forgotten.count, ordering: .relaxed)
        case .ttl: break  // counted in `expired` below
        }
        if expired {
            counters.expired.add(forgotten.count, ordering: .relaxed)
            ruleCounters.expired(forgotten.map(\.ttlRule))
        }
        let devices = Set(forgotten.map(\.deviceID)).sorted().prefix(10).joined(separator: ",")
        let level: Logger.Level = expired ? .info : .warning
        logger.log(level: level, reason, metadata: ["dropped": "\(forgotten.count)", "devices": "\(devices)"])
    }

    private static func enqueue(_ record: OutboxRecord, into lanes: inout Lanes) {
        lanes.lane(record.deviceID).append(record)
        lanes.memoryBytes += record.payload.count
        lanes.ready.insert(record.deviceID)
    }

    private static func enqueue(_ records: [OutboxRecord], into lanes: inout Lanes) {
        for record in records { enqueue(record, into: &lanes) }
    }

    // MARK: - Delivery and links

    /// The hub transport's report for one sent message. Only queued here: the dispatcher applies
    /// every report since its last pass under one hold of the `lanes` lock (`applyReports`), so
    /// the transport's I/O thread never waits for that lock while the dispatcher builds a batch,
    /// and a burst of PUBACKs costs one lock and one wake-up, not one each.
    public func delivered(token: UInt64, status: PluginStatus) {
        reports.withLock { $0.append((Int64(bitPattern: token), status)) }
        requestWake()
    }

    /// Applies the queued reports (dispatcher thread): `spare` is the dispatcher's own array,
    /// swapped with the queue so neither side allocates per pass.
    private func applyReports(_ spare: inout [(seq: Int64, status: PluginStatus)]) {
        reports.withLock { swap(&$0, &spare) }
        guard !spare.isEmpty else { return }
        var acknowledged = 0
        lanes.withLock { lanes in
            for (seq, status) in spare where Self.apply(seq, status, to: &lanes) && status == .ok {
                acknowledged += 1
            }
        }
        spare.removeAll(keepingCapacity: true)
        if acknowledged > 0 { counters.delivered.add(acknowledged, ordering: .relaxed) }
    }

    /// One report, under the `lanes` lock. Unknown seqs (a removed device's late
    /// acknowledgements) change nothing: false.
    private static func apply(_ seq: Int64, _ status: PluginStatus, to lanes: inout Lanes) -> Bool {
        guard let device = lanes.inflightDevice.removeValue(forKey: seq), let lane = lanes.byDevice[device],
            let index = lane.inflight.firstIndex(where: { $0.seq == seq })
        else { return false }
        // Usually the first (acknowledgements come in send order): a Deque removes it in O(1).
        let record = lane.inflight.remove(at: index)
        if status == .refused || status == .invalid {
            // Never to be sent again: the dispatcher moves it to the dead letters (SQLite is
            // not written on the transport's thread). The device's next message goes on.
            lanes.doomed.append((seq, status == .invalid ? DeadLetterReason.hubLimit : DeadLetterReason.hubRefused))
            lanes.memoryBytes -= record.payload.count
        } else if status == .ok {
            if lanes.acknowledged.isEmpty { lanes.acknowledgedSince = .now }
            lanes.acknowledged.append(seq)
            lanes.acknowledgedBytes += record.size
            lanes.acknowledgedPerDevice[device, default: 0] += 1
            lanes.memoryBytes -= record.payload.count
        } else {
            // Not acknowledged: back into its lane at its place in outbox order.
            lane.reinsert(record)
        }
        lanes.ready.insert(device)
        return true
    }

    /// A device's upstream link went up or down: an up link may send at once.
    func setLink(_ deviceID: String, up: Bool) {
        lanes.withLock { lanes in
            let lane = lanes.lane(deviceID)
            lane.linkUp = up
            lane.retryAfter = nil
            if up { lanes.ready.insert(deviceID) }
        }
        requestWake()
    }

    // MARK: - The dispatcher

    private func requestWake() {
        if !wakeRequested.exchange(true, ordering: .acquiringAndReleasing) { wake.signal() }
    }

    private func dispatcherLoop() {
        #if DEBUG
            // The watchdog test's wedge (debug builds only): the loop stops beating after N s.
            let wedgeAfter = ProcessInfo.processInfo.environment["GATEHOUSE_DEBUG_WEDGE_RELAY_AFTER"].flatMap(Int.init)
            let started = ContinuousClock.now
        #endif
        var reportsSpare: [(seq: Int64, status: PluginStatus)] = []
        while true {
            metrics.liveness.beat(.relay)
            #if DEBUG
                if let wedgeAfter, ContinuousClock.now - started > .seconds(wedgeAfter) {
                    logger.critical("GATEHOUSE_DEBUG_WEDGE_RELAY_AFTER: the relay's dispatcher wedges on purpose")
                    while true { NamedThread.sleep(.seconds(3600)) }
                }
            #endif
            _ = wake.wait(timeout: .now() + .milliseconds(20))
            wakeRequested.store(false, ordering: .sequentiallyConsistent)
            let stopping = !running.load(ordering: .sequentiallyConsistent)
            applyReports(&reportsSpare)
            // Sending first: it is what latency waits for, and it never touches SQLite.
            if !stopping { sendReady() }
            // Acknowledged messages leave SQLite with the next ingest's commit. Only when none
            // took them within 50 ms (a quiet site) or 4,096 wait does the dispatcher delete them
            // itself: under load it never waits for an ingest's fsync.
            let (pending, since) = lanes.withLock { ($0.acknowledged.count, $0.acknowledgedSince) }
            if stopping || pending >= 4096 || since.map({ ContinuousClock.now - $0 >= .milliseconds(50) }) == true {
                flushAcknowledged()
            }
            if stopping { break }
            if expiryRequested.exchange(false, ordering: .acquiringAndReleasing) { expireOld() }
            moveDoomed()
            refillIfNeeded()
            sendReady()
        }
        dispatcherDone.signal()
    }

    /// Asks the dispatcher to drop messages older than the policy's `max_age` on its next pass
    /// (`OutboxExpiry` calls this every second): the work stays on the thread that owns the outbox.
    public func requestExpiry() {
        expiryRequested.store(true, ordering: .releasing)
        requestWake()
    }

    /// Takes in the rows `gatehouse dead-letters requeue` put back into the outbox while the
    /// daemon runs (it sends SIGHUP): counted, and queued in their lane unless that lane is
    /// spilled past them, in which case its refill reads them.
    public func adoptRequeued() {
        do {
            try book.withLock { (book: inout Book) throws(StoreError) in
                let records = try store.takeRequeuedOutbox()
                guard !records.isEmpty else { return }
                book.messages += records.count
                book.bytes += records.reduce(0) { $0 + $1.size }
                lanes.withLock { lanes in
                    for record in records {
                        let lane = Int(record.priority.rawValue)
                        if book.spilled[lane], record.seq >= book.spillCursor[lane] { continue }
                        lanes.lane(record.deviceID).reinsert(record)
                        lanes.memoryBytes += record.payload.count
                        lanes.ready.insert(record.deviceID)
                    }
                }
                logger.info("requeued dead letters taken into the outbox", metadata: ["messages": "\(records.count)"])
            }
        } catch {
            logger.error("cannot read the requeued outbox rows", metadata: ["error": "\(error)"])
        }
        requestWake()
    }

    /// Moves what the hub side refused for good to the dead letters, one transaction a reason
    /// (docs/architecture.md, "Failure model"). On a failure they stay in the outbox, out of
    /// memory: the next start sends them again (a duplicate chance, never a loss).
    private func moveDoomed() {
        let doomed = lanes.withLock { lanes in
            defer { lanes.doomed.removeAll(keepingCapacity: true) }
            return lanes.doomed
        }
        guard !doomed.isEmpty else { return }
        let byReason = Dictionary(grouping: doomed, by: \.reason).mapValues { $0.map(\.seq) }
        for (reason, seqs) in byReason.sorted(by: { $0.key < $1.key }) {
            do {
                try book.withLock { (book: inout Book) throws(StoreError) in
                    let moved = try store.moveToDeadLetters(
                        seqs: seqs, reason: reason,
                        detail: reason == DeadLetterReason.hubLimit
                            ? "over IoT Hub's limits (docs/protocols.md §4)"
                            : "the hub dropped the connection each time it was sent",
                        nowMS: Self.nowMS())
                    book.messages -= moved.count
                    book.bytes -= moved.reduce(0) { $0 + $1.outboxSize }
                    counters.deadLettered.add(moved.count, ordering: .relaxed)
                    metrics.deadLetter(source: "hub", reason: reason, count: moved.count)
                    counters.dropped.add(moved.count, ordering: .relaxed)
                    let devices = Set(moved.map(\.deviceID)).sorted().prefix(10).joined(separator: ",")
                    logger.warning(
                        "dead letters kept: messages the hub will never take",
                        metadata: ["reason": "\(reason)", "messages": "\(moved.count)", "devices": "\(devices)"])
                }
            } catch {
                logger.error(
                    "cannot move refused messages to the dead letters; they stay in the outbox",
                    metadata: ["reason": "\(reason)", "messages": "\(seqs.count)", "error": "\(error)"])
            }
        }
    }

    /// Acknowledged messages not yet deleted from SQLite.
    struct Acknowledged {
        var seqs: [Int64]
        var bytes: Int
        var perDevice: [String: Int]
    }

    /// Takes the acknowledged messages out of `lanes`, for one transaction to delete.
    private func takeAcknowledged() -> Acknowledged {
        lanes.withLock { lanes in
            defer {
                lanes.acknowledged.removeAll(keepingCapacity: true)
                lanes.acknowledgedBytes = 0
                lanes.acknowledgedPerDevice.removeAll(keepingCapacity: true)
                lanes.acknowledgedSince = nil
            }
            return Acknowledged(
                seqs: lanes.acknowledged, bytes: lanes.acknowledgedBytes, perDevice: lanes.acknowledgedPerDevice)
        }
    }

    /// Puts back what a failed transaction did not delete, for the next one.
    private func giveBack(_ delivered: Acknowledged) {
        guard !delivered.seqs.isEmpty else { return }
        lanes.withLock { lanes in
            lanes.acknowledged.append(contentsOf: delivered.seqs)
            lanes.acknowledgedBytes += delivered.bytes
            lanes.acknowledgedPerDevice.merge(delivered.perDevice, uniquingKeysWith: +)
            if lanes.acknowledgedSince == nil { lanes.acknowledgedSince = .now }
        }
    }

    /// Removes acknowledged messages from SQLite in one transaction, when no ingest took them
    /// along (a quiet site, or more than 1,024 waiting).
    private func flushAcknowledged() {
        do {
            try book.withLock { (book: inout Book) throws(StoreError) in
                let delivered = takeAcknowledged()
                guard !delivered.seqs.isEmpty else { return }
                do throws(StoreError) {
                    try store.removeFromOutbox(delivered.seqs, deliveredPerDevice: delivered.perDevice)
                } catch {
                    giveBack(delivered)
                    throw error
                }
                book.messages -= delivered.seqs.count
                book.bytes -= delivered.bytes
            }
        } catch {
            // The rows stay, and are deleted with the next commit (or sent again after a restart:
            // a duplicate, never a loss).
            logger.error("cannot remove delivered messages from the outbox", metadata: ["error": "\(error)"])
        }
    }

    /// Reads the next part of the outbox back into memory when memory has room again: the
    /// highest spilled lane first, one batch a pass.
    private func refillIfNeeded() {
        guard spilledHint.load(ordering: .relaxed) else { return }
        do {
            try book.withLock { (book: inout Book) throws(StoreError) in
                guard book.anySpilled, lanes.withLock({ $0.memoryBytes }) < memoryCap / 2 else { return }
                defer { spilledHint.store(book.anySpilled, ordering: .relaxed) }
                guard let priority = OutboxPriority.descending.first(where: { book.spilled[$0.rawValue] }) else {
                    return
                }
                let lane = priority.rawValue
                let batchLimit = 2000
                let records = try store.outboxRecords(
                    priority: priority, fromSeq: book.spillCursor[lane], limit: batchLimit)
                lanes.withLock { Self.enqueue(records, into: &$0) }
                if let last = records.last { book.spillCursor[lane] = last.seq + 1 }
                if records.count < batchLimit { book.spilled[lane] = false }
            }
        } catch {
            logger.error("cannot read the outbox back from disk", metadata: ["error": "\(error)"])
        }
    }

    /// Hands every sendable message to the upstream transport: high before normal before low
    /// across devices, in outbox order within a device's lane. A message past its time to live
    /// is not sent: it leaves the outbox with the next commit and is counted.
    private func sendReady() {
        guard let upstream = upstreamSlot.withLock({ $0 }) else { return }
        while true {
            let now = ContinuousClock.now
            let nowMS = Self.nowMS()
            var expiredRules: [String?] = []
            let batch: [OutboxRecord] = lanes.withLock { lanes in
                var batch: [OutboxRecord] = []
                let window = lanes.inflightPerDevice
                lanes: for priority in OutboxPriority.descending {
                    for device in lanes.ready {
                        guard let lane = lanes.byDevice[device], lane.linkUp, lane.inflight.count < window else {
                            continue
                        }
                        if let retry = lane.retryAfter, retry > now { continue }
                        while lane.inflight.count < window, let next = lane.pop(priority) {
                            if next.expiresMS != 0, next.expiresMS <= nowMS {
                                lanes.expire(next)
                                expiredRules.append(next.ttlRule)
                                continue
                            }
                            lane.inflight.append(next)
                            lanes.inflightDevice[next.seq] = device
                            batch.append(next)
                        }
                        if batch.count >= 1024 { break lanes }
                    }
                }
                // A device that cannot send more now leaves `ready`; an ingest, a delivery or
                // a link change puts it back.
                for device in lanes.ready {
                    guard let lane = lanes.byDevice[device] else {
                        lanes.ready.remove(device)
                        continue
                    }
                    if let retry = lane.retryAfter, retry > now { continue }
                    if !lane.linkUp || lane.isEmpty || lane.inflight.count >= window { lanes.ready.remove(device) }
                }
                return batch
            }
            if !expiredRules.isEmpty {
                counters.dropped.add(expiredRules.count, ordering: .relaxed)
                counters.expired.add(expiredRules.count, ordering: .relaxed)
                ruleCounters.expired(expiredRules)
            }
            guard !batch.isEmpty else { return }
            for record in batch {
                let message = PluginMessage(
                    deviceID: record.deviceID, payload: record.payload,
                    properties: record.properties.map { .init($0.key, $0.value) }, createdUnixMS: record.createdMS)
                let status = upstream.send(message, token: UInt64(bitPattern: record.seq))
                if status == .invalid {
                    // Over IoT Hub's limits: it can never be sent; a dead letter, not a retry.
                    _ = lanes.withLock { Self.apply(record.seq, .invalid, to: &$0) }
                } else if status != .ok {
                    // Not accepted: back in line; try this device again shortly.
                    lanes.withLock { lanes in
                        _ = Self.apply(record.seq, status, to: &lanes)
                        lanes.byDevice[record.deviceID]?.retryAfter = .now + .milliseconds(500)
                    }
                }
                if status != .ok { requestWake() }
            }
        }
    }

    /// Drops messages older than the policy's max age, and those past their route's time to
    /// live (also those spilled to disk, which the dispatcher would otherwise meet only later).
    private func expireOld() {
        do {
            try book.withLock { (book: inout Book) throws(StoreError) in
                guard book.messages > 0 else { return }
                let now = Self.nowMS()
                let cutoff = now - Int64(book.policy.maxAge.components.seconds * 1000)
                let keep = lanes.withLock { $0.inFlightOrPendingDeletion }
                let dropped = try store.dropOlderThan(cutoff, keep: keep)
                forget(dropped, in: &book, reason: "dropped messages older than the outbox's max_age", cause: .maxAge)
                let expired = try store.dropExpired(nowMS: now, keep: keep)
                forget(
                    expired, in: &book, reason: "dropped messages past their route's time to live (ttl)", cause: .ttl)
            }
        } catch {
            logger.error("cannot expire old outbox messages", metadata: ["error": "\(error)"])
        }
    }

    // MARK: - Introspection (tests, status)

    public struct Snapshot: Sendable {
        public var outboxMessages: Int
        public var outboxBytes: Int
        public var inflight: Int
        public var memoryBytes: Int
        public var ingested: Int
        public var delivered: Int
        public var dropped: Int
        /// Of `dropped`: past their route's time to live.
        public var expired: Int = 0
        /// Sent nowhere by the telemetry rules.
        public var ruleDropped: Int = 0
        public var archived: Int = 0
        /// Every message a successful `ingest` took.
        public var received: Int = 0
        /// Of `dropped`, by cause: the byte limit, `max_age`, removed devices, the hub side's
        /// dead letters (the rest of `dropped` is `expired`).
        public var droppedFull: Int = 0
        public var droppedAge: Int = 0
        public var droppedRemoved: Int = 0
        public var deadLettered: Int = 0
    }

    public var snapshot: Snapshot {
        let (messages, bytes) = book.withLock { ($0.messages, $0.bytes) }
        let (inflight, memory) = lanes.withLock { ($0.inflightDevice.count, $0.memoryBytes) }
        return Snapshot(
            outboxMessages: messages, outboxBytes: bytes, inflight: inflight, memoryBytes: memory,
            ingested: counters.ingested.load(ordering: .relaxed),
            delivered: counters.delivered.load(ordering: .relaxed),
            dropped: counters.dropped.load(ordering: .relaxed), expired: counters.expired.load(ordering: .relaxed),
            ruleDropped: counters.ruleDropped.load(ordering: .relaxed),
            archived: counters.archived.load(ordering: .relaxed), received: counters.received.load(ordering: .relaxed),
            droppedFull: counters.droppedFull.load(ordering: .relaxed),
            droppedAge: counters.droppedAge.load(ordering: .relaxed),
            droppedRemoved: counters.droppedRemoved.load(ordering: .relaxed),
            deadLettered: counters.deadLettered.load(ordering: .relaxed))
    }

    static func nowMS() -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1000)
    }
}
