import GRDB

/// One decision of the command gate, as the audit log keeps it. Never holds a token or a
/// payload: the caller is named by its subject, the command by its kind and name.
public struct AuditRecord: Sendable, Equatable, Codable {
    public var id: Int64
    public var timeMS: Int64
    public var deviceID: String
    /// "c2d-message" or "direct-method".
    public var commandKind: String
    public var commandName: String
    /// The caller's subject (`oid`, else `sub`), or "" when the token did not verify.
    public var caller: String
    public var tenant: String
    /// "allow" or "deny".
    public var effect: String
    /// The deciding rules, "name (file:line)" joined by "; ", or "" when none decided.
    public var rules: String
    public var reason: String

    public init(
        id: Int64 = 0, timeMS: Int64, deviceID: String, commandKind: String, commandName: String, caller: String,
        tenant: String, effect: String, rules: String, reason: String
    ) {
        self.id = id
        self.timeMS = timeMS
        self.deviceID = deviceID
        self.commandKind = commandKind
        self.commandName = commandName
        self.caller = caller
        self.tenant = tenant
        self.effect = effect
        self.rules = rules
        self.reason = reason
    }
}

/// How long the audit log keeps decisions.
public struct AuditRetention: Sendable, Equatable {
    public var maxRows: Int
    public var maxAgeMS: Int64

    public init(maxRows: Int = 1_000_000, maxAgeMS: Int64 = 90 * 24 * 3600 * 1000) {
        self.maxRows = maxRows
        self.maxAgeMS = maxAgeMS
    }
}

extension StateStore {
    /// Appends a decision. Synced like the outbox: an audited decision survives a power cut.
    @discardableResult
    public func appendAudit(_ record: AuditRecord) throws(StoreError) -> Int64 {
        try write("write an audit record") { db in
            try db.execute(
                sql: """
                    INSERT INTO audit (time_ms, device_id, command_kind, command_name, caller, tenant, effect, rules, reason)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    record.timeMS, record.deviceID, record.commandKind, record.commandName, record.caller,
                    record.tenant,
                    record.effect, record.rules, record.reason,
                ])
            return db.lastInsertedRowID
        }
    }

    /// Appends decisions in one transaction (one fsync): the audit log's group commit.
    public func appendAudit(_ records: [AuditRecord]) throws(StoreError) {
        try write("write \(records.count) audit record(s)") { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO audit (time_ms, device_id, command_kind, command_name, caller, tenant, effect, rules, reason)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            for record in records {
                try statement.execute(arguments: [
                    record.timeMS, record.deviceID, record.commandKind, record.commandName, record.caller,
                    record.tenant, record.effect, record.rules, record.reason,
                ])
            }
        }
    }

    /// Decisions, newest first, optionally for one device and from a time on.
    public func auditRecords(deviceID: String? = nil, sinceMS: Int64 = 0, limit: Int = 100) throws(StoreError)
        -> [AuditRecord]
    {
        try read("read the audit log") { db in
            var sql = """
                SELECT id, time_ms, device_id, command_kind, command_name, caller, tenant, effect, rules, reason
                FROM audit WHERE time_ms >= ?
                """
            var arguments: StatementArguments = [sinceMS]
            if let deviceID {
                sql += " AND device_id = ?"
                arguments += [deviceID]
            }
            sql += " ORDER BY id DESC LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                AuditRecord(
                    id: row[0], timeMS: row[1], deviceID: row[2], commandKind: row[3], commandName: row[4],
                    caller: row[5],
                    tenant: row[6], effect: row[7], rules: row[8], reason: row[9])
            }
        }
    }

    /// Applies the retention limits; returns how many records went.
    @discardableResult
    public func pruneAudit(_ retention: AuditRetention, nowMS: Int64) throws(StoreError) -> Int {
        try write("prune the audit log") { db in
            try db.execute(sql: "DELETE FROM audit WHERE time_ms < ?", arguments: [nowMS - retention.maxAgeMS])
            var removed = db.changesCount
            try db.execute(
                sql: "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?", arguments: [retention.maxRows])
            removed += db.changesCount
            return removed
        }
    }
}
