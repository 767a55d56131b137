import SQLiteDB

/// A message that can never be delivered, kept instead of wedging its device (docs/architecture.md,
/// "Failure model"). Never logged with its bytes.
///
/// - From the site side (`source == .site`): the site transport consumed and acknowledged it
///   without ever holding it whole (over `[site] max_message_bytes`, or no device in its topic).
///   Only the payload's first `headLimit` bytes are kept; `isComplete` is false for anything
///   larger, and such a dead letter cannot be requeued.
/// - From the hub side (`source == .hub`): it left the outbox because the hub can never take it
///   (over IoT Hub's limits: `hub-limit`) or kept refusing it (`hub-refused`). The whole message
///   is kept — properties and payload — so `requeueDeadLetter(id:)` can put it back.
public struct DeadLetterRecord: Sendable, Equatable {
    public enum Source: String, Sendable, CaseIterable {
        case site
        case hub
    }

    /// The most payload bytes kept of a message that is not kept whole (4 KiB; the plugin ABI's
    /// `GH_DEAD_LETTER_HEAD_MAX`).
    public static let headLimit = 4096

    public var id: Int64
    /// When it became a dead letter, milliseconds since 1970.
    public var timeMS: Int64
    /// The device it came from; empty when its topic named none.
    public var deviceID: String
    public var source: Source
    /// Where it arrived on the site broker (site dead letters); empty for hub ones, whose wire
    /// topic is the hub transport's business.
    public var topic: String
    /// Its application properties (hub dead letters; a site one has them in its topic).
    public var properties: [OutboxProperty]
    /// The payload's full size in bytes.
    public var size: Int
    /// A short, stable word: `too-large`, `no-device` (site), `hub-limit`, `hub-refused` (hub).
    public var reason: String
    /// One line for people: the limit and the sizes, how often the hub refused it.
    public var detail: String
    /// The whole payload (`isComplete`) or its first `headLimit` bytes.
    public var payload: [UInt8]
    /// When the gateway first saw the message.
    public var createdMS: Int64
    /// The outbox row it came from (hub dead letters), for logs.
    public var outboxSeq: Int64?

    /// Whether `payload` is the whole payload.
    public var isComplete: Bool { payload.count == size }

    /// Whether `requeueDeadLetter(id:)` can put it back into the outbox.
    public var isRequeueable: Bool { source == .hub && isComplete && !deviceID.isEmpty }

    /// What it counts against the dead letters' byte limit.
    public var storedBytes: Int {
        deviceID.utf8.count + topic.utf8.count + detail.utf8.count + reason.utf8.count + payload.count
            + properties.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
    }

    /// What the message counted against the outbox's byte limit (`OutboxRecord.size`).
    public var outboxSize: Int {
        deviceID.utf8.count + properties.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } + size
    }

    public init(
        id: Int64 = 0, timeMS: Int64, deviceID: String, source: Source, topic: String = "",
        properties: [OutboxProperty] = [], size: Int, reason: String, detail: String = "", payload: [UInt8],
        createdMS: Int64 = 0, outboxSeq: Int64? = nil
    ) {
        self.id = id
        self.timeMS = timeMS
        self.deviceID = deviceID
        self.source = source
        self.topic = topic
        self.properties = properties
        self.size = size
        self.reason = reason
        self.detail = detail
        self.payload = payload
        self.createdMS = createdMS == 0 ? timeMS : createdMS
        self.outboxSeq = outboxSeq
    }
}

/// The reasons gatehouse gives for dead letters.
public enum DeadLetterReason {
    /// Site: over `[site] max_message_bytes` (the site transport's limit).
    public static let tooLarge = "too-large"
    /// Site: the topic names no device.
    public static let noDevice = "no-device"
    /// Hub: over IoT Hub's documented limits; the hub transport refused it before sending.
    public static let hubLimit = "hub-limit"
    /// Hub: the hub dropped the connection each time it was sent.
    public static let hubRefused = "hub-refused"
}

/// How many dead letters are kept: at most `maxBytes` (`DeadLetterRecord.storedBytes`, oldest
/// go first) and none older than `maxAgeMS`.
public struct DeadLetterRetention: Sendable, Equatable {
    public var maxBytes: Int
    public var maxAgeMS: Int64

    public init(maxBytes: Int = 64 << 20, maxAgeMS: Int64 = 30 * 24 * 3600 * 1000) {
        self.maxBytes = maxBytes
        self.maxAgeMS = maxAgeMS
    }
}

/// Which dead letters `purgeDeadLetters` removes.
public enum DeadLetterSelection: Sendable, Equatable {
    case all
    case ids([Int64])
    /// Those that became dead letters before this time (milliseconds since 1970).
    case olderThan(Int64)
}

/// What `gatehouse status` shows of the dead letters.
public struct DeadLetterTotals: Sendable, Equatable, Codable {
    /// Dead letters kept now, and their `storedBytes`.
    public var count: Int
    public var bytes: Int
    /// Of those, how many became dead letters at or after `since` (the daemon's start).
    public var sinceCount: Int
    /// Kept dead letters by reason.
    public var byReason: [String: Int]
    /// When the newest one was made; 0 if none.
    public var newestMS: Int64

    public init(count: Int = 0, bytes: Int = 0, sinceCount: Int = 0, byReason: [String: Int] = [:], newestMS: Int64 = 0)
    {
        self.count = count
        self.bytes = bytes
        self.sinceCount = sinceCount
        self.byReason = byReason
        self.newestMS = newestMS
    }
}

extension StateStore {
    private static let deadLetterColumns = """
        id, time_ms, device_id, source, topic, props, size, reason, detail, payload, created_ms, outbox_seq
        """

    private static func deadLetter(_ row: Row) -> DeadLetterRecord {
        DeadLetterRecord(
            id: row[0], timeMS: row[1], deviceID: row[2], source: DeadLetterRecord.Source(rawValue: row[3]) ?? .site,
            topic: row[4], properties: OutboxProperty.decode(row[5] as [UInt8]) ?? [], size: row[6], reason: row[7],
            detail: row[8], payload: row[9], createdMS: row[10], outboxSeq: row[11])
    }

    private static func insert(_ letters: [DeadLetterRecord], in db: Database) throws -> [DeadLetterRecord] {
        let insert = try db.cachedStatement(
            sql: """
                INSERT INTO dead_letter (time_ms, device_id, source, topic, props, size, reason, detail, payload,
                    complete, created_ms, outbox_seq, stored_bytes)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
        var stored = letters
        for index in stored.indices {
            var letter = stored[index]
            // Never more than the head of a message that is not kept whole.
            if letter.payload.count != letter.size, letter.payload.count > DeadLetterRecord.headLimit {
                letter.payload = Array(letter.payload.prefix(DeadLetterRecord.headLimit))
            }
            try insert.execute(arguments: [
                letter.timeMS, letter.deviceID, letter.source.rawValue, letter.topic,
                OutboxProperty.encode(letter.properties), letter.size, letter.reason, letter.detail,
                letter.payload, letter.isComplete, letter.createdMS, letter.outboxSeq, letter.storedBytes,
            ])
            letter.id = db.lastInsertedRowID
            stored[index] = letter
        }
        return stored
    }

    /// Keeps dead letters, in one transaction; returns them with their ids. Durable (synced like
    /// the outbox) when this returns: the site transport acknowledges the message only then.
    @discardableResult
    public func addDeadLetters(_ letters: [DeadLetterRecord]) throws(StoreError) -> [DeadLetterRecord] {
        guard !letters.isEmpty else { return [] }
        return try write("keep \(letters.count) dead letter(s)") { db in try Self.insert(letters, in: db) }
    }

    /// Moves outbox rows to the dead letters in ONE transaction: each row becomes a hub dead
    /// letter (whole: properties and payload) with `reason` and `detail`, and leaves the outbox.
    /// Rows no longer in the outbox (acknowledged, dropped meanwhile) are skipped. Returns what
    /// moved, in outbox order; `outboxSize` is what each counted against the outbox.
    public func moveToDeadLetters(
        seqs: [Int64], reason: String, detail: String = "", nowMS: Int64
    ) throws(StoreError) -> [DeadLetterRecord] {
        guard !seqs.isEmpty else { return [] }
        return try write("move \(seqs.count) message(s) from the outbox to the dead letters") { db in
            let select = try db.cachedStatement(
                sql: "SELECT seq, device_id, props, payload, created_ms FROM outbox WHERE seq = ?")
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq = ?")
            var letters: [DeadLetterRecord] = []
            for seq in Set(seqs).sorted() {
                guard let row = try Row.fetchOne(select, arguments: [seq]) else { continue }
                let payload: [UInt8] = row[3]
                letters.append(
                    DeadLetterRecord(
                        timeMS: nowMS, deviceID: row[1], source: .hub,
                        properties: OutboxProperty.decode(row[2] as [UInt8]) ?? [], size: payload.count, reason: reason,
                        detail: detail, payload: payload, createdMS: row[4], outboxSeq: seq))
                try delete.execute(arguments: [seq])
            }
            return try Self.insert(letters, in: db)
        }
    }

    /// Dead letters, newest first, optionally of one device.
    public func deadLetters(deviceID: String? = nil, limit: Int = 100) throws(StoreError) -> [DeadLetterRecord] {
        try read("read the dead letters") { db in
            guard try db.tableExists("dead_letter") else { return [] }  // a database v9 has not migrated yet
            var sql = "SELECT \(Self.deadLetterColumns) FROM dead_letter"
            var arguments: StatementArguments = []
            if let deviceID {
                sql += " WHERE device_id = ?"
                arguments += [deviceID]
            }
            sql += " ORDER BY id DESC LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map(Self.deadLetter)
        }
    }

    /// Dead letters with an id above `afterID`, oldest first: pages for an export.
    public func deadLetters(afterID: Int64, limit: Int) throws(StoreError) -> [DeadLetterRecord] {
        try read("read the dead letters") { db in
            guard try db.tableExists("dead_letter") else { return [] }
            return try Row.fetchAll(
                db, sql: "SELECT \(Self.deadLetterColumns) FROM dead_letter WHERE id > ? ORDER BY id LIMIT ?",
                arguments: [afterID, limit]
            ).map(Self.deadLetter)
        }
    }

    public func deadLetter(id: Int64) throws(StoreError) -> DeadLetterRecord? {
        try read("read a dead letter") { db in
            guard try db.tableExists("dead_letter") else { return nil }
            return try Row.fetchOne(
                db, sql: "SELECT \(Self.deadLetterColumns) FROM dead_letter WHERE id = ?", arguments: [id]
            ).map(Self.deadLetter)
        }
    }

    /// Removes dead letters; returns how many went.
    @discardableResult
    public func purgeDeadLetters(_ selection: DeadLetterSelection) throws(StoreError) -> Int {
        try write("purge dead letters") { db in
            switch selection {
            case .all:
                try db.execute(sql: "DELETE FROM dead_letter")
                return db.changesCount
            case .olderThan(let cutoffMS):
                try db.execute(sql: "DELETE FROM dead_letter WHERE time_ms < ?", arguments: [cutoffMS])
                return db.changesCount
            case .ids(let ids):
                let delete = try db.cachedStatement(sql: "DELETE FROM dead_letter WHERE id = ?")
                var removed = 0
                for id in Set(ids) {
                    try delete.execute(arguments: [id])
                    removed += db.changesCount
                }
                return removed
            }
        }
    }

    /// Puts a hub dead letter back into the outbox, in one transaction: a new outbox row (a new,
    /// highest sequence number: it goes after everything waiting; `created_ms` as it was), the
    /// row named in `outbox_requeued` for a running gatehoused (`takeRequeuedOutbox`), the dead
    /// letter gone. Throws `.notFound` for an unknown id and `.notRequeueable` for a dead
    /// letter whose payload was not kept whole.
    public func requeueDeadLetter(id: Int64, nowMS: Int64) throws(StoreError) -> OutboxRecord {
        let outcome: Result<OutboxRecord, StoreError> = try write("requeue dead letter \(id)") { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT \(Self.deadLetterColumns) FROM dead_letter WHERE id = ?", arguments: [id])
            else {
                return .failure(StoreError(code: .notFound, message: "no dead letter \(id)"))
            }
            let letter = Self.deadLetter(row)
            guard letter.isRequeueable else {
                return .failure(
                    StoreError(
                        code: .notRequeueable,
                        message: "dead letter \(id) cannot be requeued: "
                            + (letter.source == .site
                                ? "the site side kept only the first \(letter.payload.count) of its \(letter.size) bytes"
                                : "its payload was not kept whole")))
            }
            var record = OutboxRecord(
                deviceID: letter.deviceID, properties: letter.properties, payload: letter.payload,
                createdMS: letter.createdMS, enqueuedMS: nowMS)
            try db.execute(
                sql: """
                    INSERT INTO outbox (device_id, props, payload, created_ms, enqueued_ms, size)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    record.deviceID, OutboxProperty.encode(record.properties), record.payload,
                    record.createdMS, record.enqueuedMS, record.size,
                ])
            record.seq = db.lastInsertedRowID
            try db.execute(sql: "INSERT INTO outbox_requeued (seq) VALUES (?)", arguments: [record.seq])
            try db.execute(sql: "DELETE FROM dead_letter WHERE id = ?", arguments: [id])
            return .success(record)
        }
        return try outcome.get()
    }

    /// The outbox rows `requeueDeadLetter` added since the last call, in outbox order, and
    /// forgets them (one transaction). A running gatehoused calls it on SIGHUP to take those
    /// rows into memory (it reads the outbox only at start and when it refills); at start it
    /// calls it once and discards the answer, since the start reads the whole outbox anyway.
    public func takeRequeuedOutbox() throws(StoreError) -> [OutboxRecord] {
        try write("take the requeued outbox rows") { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT o.seq, o.device_id, o.props, o.payload, o.created_ms, o.enqueued_ms
                    FROM outbox_requeued r JOIN outbox o ON o.seq = r.seq ORDER BY o.seq
                    """)
            try db.execute(sql: "DELETE FROM outbox_requeued")
            return rows.map { row in
                OutboxRecord(
                    seq: row[0], deviceID: row[1], properties: OutboxProperty.decode(row[2] as [UInt8]) ?? [],
                    payload: row[3], createdMS: row[4], enqueuedMS: row[5])
            }
        }
    }

    /// Applies the retention: drops dead letters older than `maxAgeMS`, then the oldest until the
    /// rest fit in `maxBytes`. Returns how many went.
    @discardableResult
    public func pruneDeadLetters(_ retention: DeadLetterRetention, nowMS: Int64) throws(StoreError) -> Int {
        try write("prune the dead letters") { db in
            try db.execute(sql: "DELETE FROM dead_letter WHERE time_ms < ?", arguments: [nowMS - retention.maxAgeMS])
            var removed = db.changesCount
            let total = try Int.fetchOne(db, sql: "SELECT coalesce(sum(stored_bytes), 0) FROM dead_letter") ?? 0
            guard total > retention.maxBytes else { return removed }
            // Newest first: keep while they fit, drop from the first that does not on.
            var kept = 0
            var cutoff: Int64?
            let rows = try Row.fetchCursor(db, sql: "SELECT id, stored_bytes FROM dead_letter ORDER BY id DESC")
            while let row = try rows.next() {
                let bytes: Int = row[1]
                if kept + bytes > retention.maxBytes {
                    cutoff = row[0]
                    break
                }
                kept += bytes
            }
            if let cutoff {
                try db.execute(sql: "DELETE FROM dead_letter WHERE id <= ?", arguments: [cutoff])
                removed += db.changesCount
            }
            return removed
        }
    }

    /// Counts for `gatehouse status`; `sinceMS`: the daemon's start.
    public func deadLetterTotals(sinceMS: Int64 = 0) throws(StoreError) -> DeadLetterTotals {
        try read("count the dead letters") { db in
            var totals = DeadLetterTotals()
            // The CLI reads without migrating: a database gatehoused has not opened since an
            // upgrade has no dead letters yet.
            guard try db.tableExists("dead_letter") else { return totals }
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT count(*), coalesce(sum(stored_bytes), 0), coalesce(sum(time_ms >= ?), 0),
                        coalesce(max(time_ms), 0)
                    FROM dead_letter
                    """, arguments: [sinceMS])!
            totals.count = row[0]
            totals.bytes = row[1]
            totals.sinceCount = row[2]
            totals.newestMS = row[3]
            for row in try Row.fetchAll(db, sql: "SELECT reason, count(*) FROM dead_letter GROUP BY reason") {
                totals.byReason[row[0]] = row[1]
            }
            return totals
        }
    }
}
