import SQLiteDB

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
    /// The decision's id, also in the daemon's log lines about it ("" for rows from before).
    public var decisionID: String

    public init(
        id: Int64 = 0, timeMS: Int64, deviceID: String, commandKind: String, commandName: String, caller: String,
        tenant: String, effect: String, rules: String, reason: String, decisionID: String = ""
    ) {
        self.id = id
        self.decisionID = decisionID
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

/// A command id the gate accepted, kept for replay protection until `expiresMS` (the token's
/// expiry plus the allowed clock skew).
public struct CommandIDRecord: Sendable, Equatable, Hashable {
    /// Identifies the caller: a hash of the token's issuer and `oid`/`sub`, never the token.
    public var caller: String
    public var deviceID: String
    public var commandID: String
    public var expiresMS: Int64

    public init(caller: String, deviceID: String, commandID: String, expiresMS: Int64) {
        self.caller = caller
        self.deviceID = deviceID
        self.commandID = commandID
        self.expiresMS = expiresMS
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
                    INSERT INTO audit (time_ms, device_id, command_kind, command_name, caller, tenant, effect, rules, reason,
                        decision_id)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    record.timeMS, record.deviceID, record.commandKind, record.commandName, record.caller,
                    record.tenant,
                    record.effect, record.rules, record.reason, record.decisionID,
                ])
            return db.lastInsertedRowID
        }
    }

    /// Appends decisions in one transaction (one fsync): the audit log's group commit. The
    /// command ids the gate accepted go into the same transaction, so an id is durable exactly
    /// when its decision is, before the command is delivered.
    public func appendAudit(_ records: [AuditRecord], commandIDs: [CommandIDRecord] = []) throws(StoreError) {
        try write("write \(records.count) audit record(s)") { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO audit (time_ms, device_id, command_kind, command_name, caller, tenant, effect, rules, reason,
                        decision_id)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            for record in records {
                try statement.execute(arguments: [
                    record.timeMS, record.deviceID, record.commandKind, record.commandName, record.caller,
                    record.tenant, record.effect, record.rules, record.reason, record.decisionID,
                ])
            }
            if commandIDs.isEmpty { return }
            let insert = try db.cachedStatement(
                sql: """
                    INSERT INTO command_id (caller, device_id, command_id, expires_ms) VALUES (?, ?, ?, ?)
                    ON CONFLICT (caller, device_id, command_id) DO UPDATE SET expires_ms = max(expires_ms, excluded.expires_ms)
                    """)
            for id in commandIDs {
                try insert.execute(arguments: [id.caller, id.deviceID, id.commandID, id.expiresMS])
            }
        }
    }

    /// The command ids still live at `nowMS`: what the gate's replay index starts from.
    public func liveCommandIDs(nowMS: Int64) throws(StoreError) -> [CommandIDRecord] {
        try read("read the command ids") { db in
            try Row.fetchAll(
                db, sql: "SELECT caller, device_id, command_id, expires_ms FROM command_id WHERE expires_ms > ?",
                arguments: [nowMS]
            ).map { row in
                CommandIDRecord(caller: row[0], deviceID: row[1], commandID: row[2], expiresMS: row[3])
            }
        }
    }

    /// Decisions, newest first, optionally for one device (or one decision id) and from a time on.
    public func auditRecords(
        deviceID: String? = nil, decisionID: String? = nil, sinceMS: Int64 = 0, limit: Int = 100
    ) throws(StoreError)
        -> [AuditRecord]
    {
        try read("read the audit log") { db in
            var sql = """
                SELECT id, time_ms, device_id, command_kind, command_name, caller, tenant, effect, rules, reason,
                    decision_id
                FROM audit WHERE time_ms >= ?
                """
            var arguments: StatementArguments = [sinceMS]
            if let deviceID {
                sql += " AND device_id = ?"
                arguments += [deviceID]
            }
            if let decisionID {
                sql += " AND decision_id = ?"
                arguments += [decisionID]
            }
            sql += " ORDER BY id DESC LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                AuditRecord(
                    id: row[0], timeMS: row[1], deviceID: row[2], commandKind: row[3], commandName: row[4],
                    caller: row[5],
                    tenant: row[6], effect: row[7], rules: row[8], reason: row[9], decisionID: row[10])
            }
        }
    }

    /// Applies the retention limits; returns how many records went. Also forgets the command
    /// ids whose tokens have expired (they can no longer be replayed: the token is refused).
    @discardableResult
    public func pruneAudit(_ retention: AuditRetention, nowMS: Int64) throws(StoreError) -> Int {
        try write("prune the audit log") { db in
            try db.execute(sql: "DELETE FROM command_id WHERE expires_ms <= ?", arguments: [nowMS])
            try db.execute(sql: "DELETE FROM audit WHERE time_ms < ?", arguments: [nowMS - retention.maxAgeMS])
            var removed = db.changesCount
            try db.execute(
                sql: "DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?", arguments: [retention.maxRows])
            removed += db.changesCount
            return removed
        }
    }
}
