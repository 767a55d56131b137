import CSQLite
import SQLiteDB

/// A message's lane in the outbox: after an outage, high drains before normal before low
/// (the telemetry rules' `priority`; without rules everything is normal).
public enum OutboxPriority: Int, Sendable, CaseIterable, Comparable {
    case low = 0
    case normal = 1
    case high = 2

    /// High first.
    public static let descending: [OutboxPriority] = [.high, .normal, .low]

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// A message waiting in the outbox for the hub's acknowledgement.
public struct OutboxRecord: Sendable, Equatable {
    /// The outbox's own sequence: strictly increasing in commit order, so per-device order is
    /// the order of `seq`.
    public var seq: Int64
    public var deviceID: String
    /// The application properties in arrival order, as key and value: no transport's encoding
    /// (the hub transport encodes them once, for its own wire).
    public var properties: [OutboxProperty]
    public var payload: [UInt8]
    public var createdMS: Int64
    public var enqueuedMS: Int64
    public var priority: OutboxPriority
    /// When its time to live (a route's `ttl`) runs out, ms since 1970: past it the message is
    /// dropped and counted, never sent. 0: no time to live (only `[outbox] max_age` applies).
    public var expiresMS: Int64
    /// The rule whose `ttl` it carries, to count an expiry against (nil without a ttl).
    public var ttlRule: String?

    /// What the record counts against the outbox's byte limit.
    public var size: Int {
        deviceID.utf8.count + properties.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } + payload.count
    }

    public init(
        seq: Int64 = 0, deviceID: String, properties: [OutboxProperty] = [], payload: [UInt8], createdMS: Int64,
        enqueuedMS: Int64, priority: OutboxPriority = .normal, expiresMS: Int64 = 0, ttlRule: String? = nil
    ) {
        self.seq = seq
        self.deviceID = deviceID
        self.properties = properties
        self.payload = payload
        self.createdMS = createdMS
        self.enqueuedMS = enqueuedMS
        self.priority = priority
        self.expiresMS = expiresMS
        self.ttlRule = ttlRule
    }
}

/// One application property of a message.
public struct OutboxProperty: Sendable, Hashable {
    public var key: String
    public var value: String

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }

    /// The column's encoding: for each property, the key's and then the value's UTF-8 length
    /// as a LEB128 varint followed by its bytes. Written by hand because it is ten lines and no
    /// dependency does exactly this; it is neither JSON (escaping) nor a property bag (percent
    /// encoding), so storing and reading back costs no transport's encoding.
    static func encode(_ properties: [OutboxProperty]) -> [UInt8] {
        var bytes: [UInt8] = []
        for property in properties {
            for text in [property.key, property.value] {
                var length = UInt64(text.utf8.count)
                repeat {
                    bytes.append(UInt8(length & 0x7f) | (length >= 0x80 ? 0x80 : 0))
                    length >>= 7
                } while length > 0
                bytes.append(contentsOf: text.utf8)
            }
        }
        return bytes
    }

    /// Reads `encode`'s format back; nil if the bytes are not in it (a damaged row).
    static func decode(_ bytes: some Collection<UInt8>) -> [OutboxProperty]? {
        var properties: [OutboxProperty] = []
        var index = bytes.startIndex
        func text() -> String? {
            var length: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard index != bytes.endIndex, shift < 63 else { return nil }
                let byte = bytes[index]
                index = bytes.index(after: index)
                length |= UInt64(byte & 0x7f) << shift
                if byte & 0x80 == 0 { break }
                shift += 7
            }
            guard length <= UInt64(bytes.distance(from: index, to: bytes.endIndex)) else { return nil }
            let end = bytes.index(index, offsetBy: Int(length))
            defer { index = end }
            return String(validating: bytes[index..<end], as: UTF8.self)
        }
        while index != bytes.endIndex {
            guard let key = text(), let value = text() else { return nil }
            properties.append(OutboxProperty(key, value))
        }
        return properties
    }
}

/// A record that left the outbox without delivery, for counting and logging.
public struct DroppedRecord: Sendable, Equatable {
    public var seq: Int64
    public var deviceID: String
    public var size: Int
    /// For an expired record, the rule whose `ttl` ran out.
    public var ttlRule: String? = nil
}

extension StateStore {
    /// Appends a batch in ONE transaction and returns the records with their sequence numbers.
    /// When this returns, the batch is durable; the caller may acknowledge it downstream.
    /// Also records each device as seen (the registry learns devices from their traffic).
    ///
    /// `removing`: delivered messages to delete in the same transaction (group commit: the
    /// relay hands over what the hub acknowledged since the last commit, so under load one fsync
    /// covers both, and the dispatcher never waits for the ingest's commit to delete). Expired
    /// ones may be among them; only `deliveredPerDevice` counts as delivered.
    ///
    /// `archiving`: messages the telemetry rules keep on the gateway (`archive`), in the same
    /// transaction. `received`: the messages each device sent that the gateway keeps (outbox or
    /// archive, each once) and when, for the registry; nil: the outbox records.
    public func appendToOutbox(
        _ records: [OutboxRecord], archiving archived: [ArchiveRecord] = [],
        received: [String: (count: Int, lastMS: Int64)]? = nil, removing delivered: [Int64] = [],
        deliveredPerDevice: [String: Int] = [:]
    ) throws(StoreError) -> [OutboxRecord] {
        try write("append \(records.count) message(s) to the outbox") { db in
            if !delivered.isEmpty { try Self.remove(delivered, deliveredPerDevice: deliveredPerDevice, in: db) }
            let insert = try db.cachedStatement(
                sql: """
                    INSERT INTO outbox (device_id, props, payload, created_ms, enqueued_ms, size, priority, expires_ms,
                        ttl_rule)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            let seen = try db.cachedStatement(
                sql: """
                    INSERT INTO device (id, first_seen_ms, last_seen_ms, messages_in) VALUES (?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                        messages_in = messages_in + excluded.messages_in
                    """)
            var stored = records
            var perDevice: [String: (count: Int, lastMS: Int64)] = [:]
            defer {
                sqlite3_reset(insert.sqliteStatement)
                sqlite3_clear_bindings(insert.sqliteStatement)
            }
            for index in stored.indices {
                let record = stored[index]
                try Self.insertOutboxRow(record, with: insert.sqliteStatement, in: db)
                stored[index].seq = db.lastInsertedRowID
                if received == nil {
                    perDevice[record.deviceID, default: (0, 0)].count += 1
                    perDevice[record.deviceID]!.lastMS = record.enqueuedMS
                }
            }
            if !archived.isEmpty { try Self.insert(archived, in: db) }
            for (device, info) in received ?? perDevice {
                try seen.execute(arguments: [device, info.lastMS, info.lastMS, info.count])
            }
            return stored
        }
    }

    /// Inserts one row with the prepared INSERT of `appendToOutbox`, binding straight to SQLite,
    /// without building `StatementArguments` for each row (when the store used GRDB, its
    /// arguments boxed every value and copied the payload into a `Data`, which was 7–9 % of the
    /// relay's ingest thread: docs/benchmarks.md, "Where the relay's time goes").
    /// SQLite copies what is bound (SQLITE_TRANSIENT) before `sqlite3_step` returns.
    private static func insertOutboxRow(_ record: OutboxRecord, with statement: SQLiteStatement, in db: Database)
        throws
    {
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        func bind(_ column: Int32, _ bytes: [UInt8]) -> Int32 {
            // An empty blob, never NULL (sqlite3_bind_blob binds NULL for a nil pointer).
            bytes.isEmpty
                ? sqlite3_bind_zeroblob(statement, column, 0)
                : bytes.withUnsafeBytes {
                    sqlite3_bind_blob(statement, column, $0.baseAddress, Int32($0.count), transient)
                }
        }
        sqlite3_reset(statement)
        var rc = sqlite3_bind_text(statement, 1, record.deviceID, -1, transient)
        rc = rc == SQLITE_OK ? bind(2, OutboxProperty.encode(record.properties)) : rc
        rc = rc == SQLITE_OK ? bind(3, record.payload) : rc
        rc = rc == SQLITE_OK ? sqlite3_bind_int64(statement, 4, record.createdMS) : rc
        rc = rc == SQLITE_OK ? sqlite3_bind_int64(statement, 5, record.enqueuedMS) : rc
        rc = rc == SQLITE_OK ? sqlite3_bind_int64(statement, 6, Int64(record.size)) : rc
        rc = rc == SQLITE_OK ? sqlite3_bind_int64(statement, 7, Int64(record.priority.rawValue)) : rc
        if rc == SQLITE_OK {
            rc =
                record.expiresMS == 0
                ? sqlite3_bind_null(statement, 8) : sqlite3_bind_int64(statement, 8, record.expiresMS)
        }
        if rc == SQLITE_OK {
            rc =
                record.ttlRule.map { sqlite3_bind_text(statement, 9, $0, -1, transient) }
                ?? sqlite3_bind_null(statement, 9)
        }
        if rc == SQLITE_OK { rc = sqlite3_step(statement) }
        guard rc == SQLITE_DONE else {
            let message = String(cString: sqlite3_errmsg(db.sqliteConnection))
            sqlite3_reset(statement)
            throw DatabaseError(
                resultCode: ResultCode(rawValue: rc), message: message, sql: String(cString: sqlite3_sql(statement)))
        }
    }

    /// Removes acknowledged records, in one transaction.
    public func removeFromOutbox(_ seqs: [Int64], deliveredPerDevice: [String: Int] = [:]) throws(StoreError) {
        guard !seqs.isEmpty else { return }
        try writeUnsynced("remove \(seqs.count) delivered message(s) from the outbox") { db in
            try Self.remove(seqs, deliveredPerDevice: deliveredPerDevice, in: db)
        }
    }

    private static func remove(_ seqs: [Int64], deliveredPerDevice: [String: Int], in db: Database) throws {
        // Acknowledged rows come mostly in runs of consecutive seqs: one DELETE a run.
        let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq BETWEEN ? AND ?")
        let sorted = seqs.sorted()
        guard var start = sorted.first else { return }
        var end = start
        for seq in sorted.dropFirst() where seq != end {
            if seq == end + 1 {
                end = seq
                continue
            }
            try delete.execute(arguments: [start, end])
            (start, end) = (seq, seq)
        }
        try delete.execute(arguments: [start, end])
        let count = try db.cachedStatement(sql: "UPDATE device SET messages_out = messages_out + ? WHERE id = ?")
        for (device, delivered) in deliveredPerDevice { try count.execute(arguments: [delivered, device]) }
    }

    /// Records from `seq` on, in order, at most `limit`; with `priority`, only those of that lane.
    public func outboxRecords(priority: OutboxPriority? = nil, fromSeq seq: Int64, limit: Int) throws(StoreError)
        -> [OutboxRecord]
    {
        try read("read the outbox") { db in
            let columns = "seq, device_id, props, payload, created_ms, enqueued_ms, priority, expires_ms, ttl_rule"
            let rows: [Row]
            if let priority {
                rows = try Row.fetchAll(
                    db,
                    sql: "SELECT \(columns) FROM outbox WHERE priority = ? AND seq >= ? ORDER BY priority, seq LIMIT ?",
                    arguments: [priority.rawValue, seq, limit])
            } else {
                rows = try Row.fetchAll(
                    db, sql: "SELECT \(columns) FROM outbox WHERE seq >= ? ORDER BY seq LIMIT ?",
                    arguments: [seq, limit])
            }
            return rows.map { row in
                let encoded = row[2] as [UInt8]
                // A row whose properties do not read back is still sent, without them (its
                // payload is what matters most); the migration and `append` only write valid ones.
                return OutboxRecord(
                    seq: row[0], deviceID: row[1], properties: OutboxProperty.decode(encoded) ?? [],
                    payload: row[3], createdMS: row[4], enqueuedMS: row[5],
                    priority: OutboxPriority(rawValue: row[6]) ?? .normal, expiresMS: row[7] ?? 0, ttlRule: row[8])
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

    /// Per priority lane: how many messages wait and when the oldest was enqueued (nil: none).
    /// Both come from the `(priority, seq)` index, without reading a payload: cheap enough for a
    /// metrics scrape whatever the outbox holds.
    public func outboxLanes() throws(StoreError) -> [OutboxPriority: (messages: Int, oldestEnqueuedMS: Int64?)] {
        try read("count the outbox's lanes") { db in
            var lanes: [OutboxPriority: (messages: Int, oldestEnqueuedMS: Int64?)] = [:]
            for priority in OutboxPriority.allCases {
                let count =
                    try Int.fetchOne(
                        db, sql: "SELECT count(*) FROM outbox WHERE priority = ?", arguments: [priority.rawValue])
                    ?? 0
                let oldest = try Int64.fetchOne(
                    db, sql: "SELECT enqueued_ms FROM outbox WHERE priority = ? ORDER BY seq LIMIT 1",
                    arguments: [priority.rawValue])
                lanes[priority] = (count, oldest)
            }
            return lanes
        }
    }

    /// Drops the oldest records of the lowest priority first (never those in `keep`, which are
    /// in flight) until at least `bytes` are freed or nothing is left to drop.
    public func dropOldest(freeing bytes: Int, keep: Set<Int64>) throws(StoreError) -> [DroppedRecord] {
        try write("drop the oldest outbox messages") { db in
            var dropped: [DroppedRecord] = []
            var freed = 0
            let rows = try Row.fetchCursor(db, sql: "SELECT seq, device_id, size FROM outbox ORDER BY priority, seq")
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
        // Most seconds nothing has expired: one indexed read of the oldest row answers that,
        // without a write transaction (which would wait for the writer and fsync).
        let oldest = try read("read the outbox's oldest message") { db in
            try Int64.fetchOne(db, sql: "SELECT enqueued_ms FROM outbox ORDER BY seq LIMIT 1")
        }
        guard let oldest, oldest < cutoffMS else { return [] }
        return try write("drop expired outbox messages") { db in
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

extension StateStore {
    /// Drops records whose time to live ran out by `nowMS` (never those in `keep`, in flight),
    /// at most `limit`. One indexed read answers "nothing expired" without a write transaction.
    public func dropExpired(nowMS: Int64, keep: Set<Int64>, limit: Int = 10_000) throws(StoreError)
        -> [DroppedRecord]
    {
        let due = try read("read the outbox's times to live") { db in
            try Int64.fetchOne(
                db, sql: "SELECT 1 FROM outbox WHERE expires_ms IS NOT NULL AND expires_ms <= ? LIMIT 1",
                arguments: [nowMS])
        }
        guard due != nil else { return [] }
        return try write("drop outbox messages past their time to live") { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT seq, device_id, size, ttl_rule FROM outbox
                    WHERE expires_ms IS NOT NULL AND expires_ms <= ? ORDER BY expires_ms LIMIT ?
                    """, arguments: [nowMS, limit])
            let dropped = rows.map { DroppedRecord(seq: $0[0], deviceID: $0[1], size: $0[2], ttlRule: $0[3]) }
                .filter { !keep.contains($0.seq) }
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq = ?")
            for record in dropped { try delete.execute(arguments: [record.seq]) }
            return dropped
        }
    }
}
