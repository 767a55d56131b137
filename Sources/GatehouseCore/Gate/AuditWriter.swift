import Dispatch
import FoundationEssentials
import GatehouseBasics
import GatehouseStore
import Logging
import Synchronization

/// Writes the audit log with group commit: every record appended while the previous batch was
/// being synced goes into the next transaction, so under load one fsync covers many decisions
/// (the same idea as the outbox's ingest). `append` returns once its record is durable. The
/// command id a decision accepted (replay protection) is written in the same transaction as
/// its row: no extra fsync, and durable before the command is delivered.
final class AuditWriter: Sendable {
    private struct Queue {
        var records: [AuditRecord] = []
        var commandIDs: [CommandIDRecord] = []
        var waiters: [@Sendable (Bool) -> Void] = []
        var stopped = false
    }

    private let store: StateStore
    private let logger: Logger
    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)

    init(store: StateStore, logger: Logger) {
        self.store = store
        self.logger = logger
        NamedThread.start(name: "gatehouse.audit") { [self] in run() }
    }

    /// Appends a decision; true once it is durable, false if it could not be written.
    func append(_ record: AuditRecord, commandID: CommandIDRecord? = nil) async -> Bool {
        await withCheckedContinuation { continuation in
            append(record, commandID: commandID) { written in continuation.resume(returning: written) }
        }
    }

    /// Appends a decision; `completion` runs on the audit thread once it is durable (true) or
    /// could not be written (false).
    func append(
        _ record: AuditRecord, commandID: CommandIDRecord? = nil, completion: @escaping @Sendable (Bool) -> Void
    ) {
        let accepted = queue.withLock { queue in
            guard !queue.stopped else { return false }
            queue.records.append(record)
            if let commandID { queue.commandIDs.append(commandID) }
            queue.waiters.append(completion)
            return true
        }
        if accepted { wake.signal() } else { completion(false) }
    }

    func stop() {
        queue.withLock { $0.stopped = true }
        wake.signal()
    }

    private func run() {
        while true {
            wake.wait()
            let (records, commandIDs, waiters, stopped) = queue.withLock { queue in
                defer {
                    queue.records.removeAll(keepingCapacity: true)
                    queue.commandIDs.removeAll(keepingCapacity: true)
                    queue.waiters.removeAll(keepingCapacity: true)
                }
                return (queue.records, queue.commandIDs, queue.waiters, queue.stopped)
            }
            if !records.isEmpty {
                var written = true
                do {
                    try store.appendAudit(records, commandIDs: commandIDs)
                } catch {
                    written = false
                    logger.error(
                        "cannot write the audit log; the commands concerned are refused",
                        metadata: ["records": "\(records.count)", "error": "\(error)"])
                }
                for waiter in waiters { waiter(written) }
            }
            if stopped { return }
        }
    }
}
