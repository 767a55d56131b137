import SQLiteDB

/// A message the telemetry rules keep on the gateway (`route telemetry … to archive`), within
/// the `[archive]` budget; `gatehouse archive export` writes them out.
public struct ArchiveRecord: Sendable, Equatable {
    /// Increasing in commit order (0 until stored).
    public var id: Int64
    /// When it was archived (the gateway's ingest), ms since 1970.
    public var timeMS: Int64
    /// When the gateway first saw it (as the outbox's `created_ms`).
    public var createdMS: Int64
    public var deviceID: String
    /// Where the site transport received it; empty if the transport did not say.
    public var topic: String
    public var properties: [OutboxProperty]
    public var payload: [UInt8]
    /// The rule that routed it to the archive.
    public var rule: String

    public init(
        id: Int64 = 0, timeMS: Int64, createdMS: Int64, deviceID: String, topic: String,
        properties: [OutboxProperty] = [], payload: [UInt8], rule: String
    ) {
        self.id = id
        self.timeMS = timeMS
        self.createdMS = createdMS
        self.deviceID = deviceID
        self.topic = topic
        self.properties = properties
        self.payload = payload
        self.rule = rule
    }

    /// What the record counts against `[archive] max_bytes`.
    public var size: Int {
        deviceID.utf8.count + topic.utf8.count
            + properties.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } + payload.count
    }
}

extension StateStore {
    /// Inserts archived messages inside the caller's transaction (the ingest's: one fsync).
    static func insert(_ records: [ArchiveRecord], in db: Database) throws {
        let insert = try db.cachedStatement(
            sql: """
                INSERT INTO archive (time_ms, created_ms, device_id, topic, props, payload, size, rule)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """)
        for record in records {
            try insert.execute(arguments: [
                record.timeMS, record.createdMS, record.deviceID, record.topic,
                OutboxProperty.encode(record.properties), record.payload, record.size, record.rule,
            ])
        }
    }

    /// Number of archived messages and their bytes (one scan: read it at start, then keep count).
    public func archiveTotals() throws(StoreError) -> (messages: Int, bytes: Int) {
        try read("count the archive") { db in
            let row = try Row.fetchOne(db, sql: "SELECT count(*), coalesce(sum(size), 0) FROM archive")!
            return (row[0], row[1])
        }
    }

    /// Deletes archived messages older than `cutoffMS`, then the oldest until at least
    /// `freeing` more bytes are gone. Returns what it deleted.
    public func pruneArchive(olderThan cutoffMS: Int64, freeing: Int) throws(StoreError) -> (messages: Int, bytes: Int)
    {
        let due = try read("read the archive's oldest message") { db in
            try Int64.fetchOne(db, sql: "SELECT time_ms FROM archive ORDER BY id LIMIT 1")
        }
        guard let due, due < cutoffMS || freeing > 0 else { return (0, 0) }
        return try write("prune the archive") { db in
            var messages = 0
            var bytes = 0
            let old = try Row.fetchOne(
                db, sql: "SELECT count(*), coalesce(sum(size), 0) FROM archive WHERE time_ms < ?",
                arguments: [cutoffMS])!
            if (old[0] as Int) > 0 {
                try db.execute(sql: "DELETE FROM archive WHERE time_ms < ?", arguments: [cutoffMS])
                messages += old[0] as Int
                bytes += old[1] as Int
            }
            guard freeing > bytes else { return (messages, bytes) }
            var freed = 0
            var lastID: Int64?
            let rows = try Row.fetchCursor(db, sql: "SELECT id, size FROM archive ORDER BY id")
            while freed < freeing - bytes, let row = try rows.next() {
                lastID = row[0]
                freed += row[1] as Int
                messages += 1
            }
            if let lastID { try db.execute(sql: "DELETE FROM archive WHERE id <= ?", arguments: [lastID]) }
            return (messages, bytes + freed)
        }
    }

    /// Archived messages with `id` above `afterID` and archived at or after `sinceMS` (and of
    /// `device`, if given), oldest first, at most `limit`: a page of `gatehouse archive export`.
    public func archiveRecords(sinceMS: Int64 = 0, afterID: Int64 = 0, device: String? = nil, limit: Int)
        throws(StoreError) -> [ArchiveRecord]
    {
        try read("read the archive") { db in
            var sql = """
                SELECT id, time_ms, created_ms, device_id, topic, props, payload, rule FROM archive
                WHERE id > ? AND time_ms >= ?
                """
            var arguments: StatementArguments = [afterID, sinceMS]
            if let device {
                sql += " AND device_id = ?"
                arguments += [device]
            }
            sql += " ORDER BY id LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                ArchiveRecord(
                    id: row[0], timeMS: row[1], createdMS: row[2], deviceID: row[3], topic: row[4],
                    properties: OutboxProperty.decode(row[5] as [UInt8]) ?? [], payload: row[6],
                    rule: row[7])
            }
        }
    }
}
