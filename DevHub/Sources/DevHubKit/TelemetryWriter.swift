import Dispatch
import Logging
import NIOCore
import Synchronization

/// Writes received telemetry to the store in batches, off the event loops.
///
/// Sessions hand over each message with an optional promise; the writer commits everything
/// that arrived while the previous batch was being written in one transaction, then
/// completes the promises. A QoS 1 message is PUBACKed only from that promise, so an
/// acknowledged message is on disk.
final class TelemetryWriter: Sendable {
    private struct Entry: Sendable {
        var record: TelemetryRecord
        var promise: EventLoopPromise<Void>?
    }

    /// The messages waiting for the next batch, and whether a batch is already scheduled.
    /// Transitions: idle (`scheduled == false`, nothing pending) → append → scheduled → the
    /// batch takes everything pending and clears `scheduled` → idle or scheduled again.
    private struct State {
        var pending: [Entry] = []
        var scheduled = false
        var batches = 0
    }

    private let store: DevHubStore
    private let retention: Int
    private let logger: Logger
    private let queue = DispatchQueue(label: "devhub.telemetry-writer")
    private let state = Mutex(State())

    /// `retention`: how many of the newest messages to keep (older ones are pruned now and then).
    init(store: DevHubStore, retention: Int, logger: Logger) {
        self.store = store
        self.retention = retention
        self.logger = logger
    }

    func append(_ record: TelemetryRecord, promise: EventLoopPromise<Void>?) {
        let schedule = state.withLock { state in
            state.pending.append(Entry(record: record, promise: promise))
            guard !state.scheduled else { return false }
            state.scheduled = true
            return true
        }
        if schedule { queue.async { self.writeBatch() } }
    }

    /// Waits until everything appended so far is written (for shutdown).
    func drain() {
        queue.sync {}
        queue.sync { self.writeBatch() }
    }

    private func writeBatch() {
        let (batch, prune) = state.withLock { state in
            let batch = state.pending
            state.pending = []
            state.scheduled = false
            state.batches += 1
            return (batch, state.batches % 200 == 0)
        }
        guard !batch.isEmpty else { return }
        do {
            try store.insertTelemetry(batch.map(\.record))
            for entry in batch { entry.promise?.succeed() }
        } catch {
            logger.error("cannot store \(batch.count) telemetry message(s): \(error)")
            for entry in batch { entry.promise?.fail(error) }
        }
        if prune {
            do { try store.pruneTelemetry(keep: retention) } catch {
                logger.warning("cannot prune telemetry: \(error)")
            }
        }
    }
}
