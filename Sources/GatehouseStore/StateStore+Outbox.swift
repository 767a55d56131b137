import Foundation
import GRDB

/// A message waiting in the outbox for the hub's acknowledgement.
public struct OutboxRecord: Sendable, Equatable {
    /// The outbox's own sequence: strictly increasing in commit order, so per-device order is
    /// the order of `seq`.
    public var seq: Int64
    public var deviceID: String
    /// The IoT Hub property bag, already encoded (`k=v&k2=v2`).
    public var properties: String
    public var payload: [UInt8]
    public var createdMS: Int64
    public var enqueuedMS: Int64

    /// What the record counts against the outbox's byte limit.
    public var size: Int { deviceID.utf8.count + properties.utf8.count + payload.count }

    public init(
        seq: Int64 = 0, deviceID: String, properties: String, payload: [UInt8], createdMS: Int64, enqueuedMS: Int64
    ) {
        self.seq = seq
        self.deviceID = deviceID
        self.properties = properties
        self.payload = payload
        self.createdMS = createdMS
        self.enqueuedMS = enqueuedMS
    }
}

/// A record that left the outbox without delivery, for counting and logging.
public struct DroppedRecord: Sendable, Equatable {
    public var seq: Int64
    public var deviceID: String
    public var size: Int
}

extension StateStore {
    /// Appends a batch in ONE transaction and returns the records with their sequence numbers.
    /// When this returns, the batch is durable; the caller may acknowledge it downstream.
    /// Also records each device as seen (the registry learns devices from their traffic).
    public func appendToOutbox(_ records: [OutboxRecord]) throws(StoreError) -> [OutboxRecord] {
        try write("append \(records.count) message(s) to the outbox") { db in
            let insert = try db.cachedStatement(
                sql: """
                    INSERT INTO outbox (device_id, properties, payload, created_ms, enqueued_ms, size)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """)
            let seen = try db.cachedStatement(
                sql: """
                    INSERT INTO device (id, first_seen_ms, last_seen_ms, messages_in) VALUES (?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                        messages_in = messages_in + excluded.messages_in
                    """)
            var stored = records
            var perDevice: [String: (count: Int, lastMS: Int64)] = [:]
            for index in stored.indices {
                let record = stored[index]
                try insert.execute(arguments: [
                    record.deviceID, record.properties, Data(record.payload), record.createdMS, record.enqueuedMS,
                    record.size,
                ])
                stored[index].seq = db.lastInsertedRowID
                perDevice[record.deviceID, default: (0, 0)].count += 1
                perDevice[record.deviceID]!.lastMS = record.enqueuedMS
            }
            for (device, info) in perDevice {
                try seen.execute(arguments: [device, info.lastMS, info.lastMS, info.count])
            }
            return stored
        }
    }

    /// Removes acknowledged records, in one transaction.
    public func removeFromOutbox(_ seqs: [Int64], deliveredPerDevice: [String: Int] = [:]) throws(StoreError) {
        guard !seqs.isEmpty else { return }
        try writeUnsynced("remove \(seqs.count) delivered message(s) from the outbox") { db in
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq = ?")
            for seq in seqs { try delete.execute(arguments: [seq]) }
            let count = try db.cachedStatement(sql: "UPDATE device SET messages_out = messages_out + ? WHERE id = ?")
            for (device, delivered) in deliveredPerDevice { try count.execute(arguments: [delivered, device]) }
        }
    }

    /// Records from `seq` on, in order, at most `limit`.
    public func outboxRecords(fromSeq seq: Int64, limit: Int) throws(StoreError) -> [OutboxRecord] {
        try read("read the outbox") { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT seq, device_id, properties, payload, created_ms, enqueued_ms FROM outbox
                    WHERE seq >= ? ORDER BY seq LIMIT ?
                    """, arguments: [seq, limit])
            return rows.map { row in
                OutboxRecord(
                    seq: row[0], deviceID: row[1], properties: row[2], payload: [UInt8](row[3] as Data),
                    createdMS: row[4],
                    enqueuedMS: row[5])
            }
        }
    }

    /// Number of records and bytes now in the outbox.
    public func outboxTotals() throws(StoreError) -> (messages: Int, bytes: Int) {
        try read("count the outbox") { db in
            let row = try Row.fetchOne(db, sql: "SELECT count(*), coalesce(sum(size), 0) FROM outbox")!
            return (row[0], row[1])
        }
    }

    /// Drops the oldest records (never those in `keep`, which are in flight) until at least
    /// `bytes` are freed or nothing is left to drop.
    public func dropOldest(freeing bytes: Int, keep: Set<Int64>) throws(StoreError) -> [DroppedRecord] {
        try write("drop the oldest outbox messages") { db in
            var dropped: [DroppedRecord] = []
            var freed = 0
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, device_id, size FROM outbox ORDER BY seq")
            while freed < bytes, let row = try rows.next() {
                let record = DroppedRecord(seq: row[0], deviceID: row[1], size: row[2])
                if keep.contains(record.seq) { continue }
                dropped.append(record)
                freed += record.size
            }
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq = ?")
            for record in dropped { try delete.execute(arguments: [record.seq]) }
            return dropped
        }
    }

    /// Drops records enqueued before `cutoffMS` (never those in `keep`), oldest first.
    public func dropOlderThan(_ cutoffMS: Int64, keep: Set<Int64>, limit: Int = 10_000) throws(StoreError)
        -> [DroppedRecord]
    {
        try write("drop expired outbox messages") { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT seq, device_id, size, enqueued_ms FROM outbox ORDER BY seq LIMIT ?", arguments: [limit]
            )
            var dropped: [DroppedRecord] = []
            for row in rows {
                let enqueued: Int64 = row[3]
                if enqueued >= cutoffMS { break }
                let record = DroppedRecord(seq: row[0], deviceID: row[1], size: row[2])
                if !keep.contains(record.seq) { dropped.append(record) }
            }
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq = ?")
            for record in dropped { try delete.execute(arguments: [record.seq]) }
            return dropped
        }
    }
}
