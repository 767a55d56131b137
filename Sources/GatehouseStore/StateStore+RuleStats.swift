import SQLiteDB

/// What one telemetry rule did since the daemon started (`gatehouse rules stats`).
public struct TelemetryRuleStats: Sendable, Equatable, Codable {
    /// `route`, `drop`, or `default` for the messages no rule routes (dropped).
    public var kind: String
    public var rule: String
    public var file: String
    public var line: Int
    /// Messages it sent upstream (into the outbox).
    public var routed: Int
    /// Messages it kept in the archive.
    public var archived: Int
    /// Messages it dropped (a `drop` rule, or the default).
    public var dropped: Int
    /// Messages it sent upstream whose time to live (its `ttl`) ran out before the hub took them.
    public var expired: Int
    /// Times its condition failed (the evaluation budget ran out).
    public var failed: Int

    public init(
        kind: String, rule: String, file: String = "", line: Int = 0, routed: Int = 0, archived: Int = 0,
        dropped: Int = 0, expired: Int = 0, failed: Int = 0
    ) {
        self.kind = kind
        self.rule = rule
        self.file = file
        self.line = line
        self.routed = routed
        self.archived = archived
        self.dropped = dropped
        self.expired = expired
        self.failed = failed
    }
}

extension StateStore {
    /// Replaces the rules' counters (the status heartbeat, every second). Unsynced: losing the
    /// last second of counters in a power cut is harmless.
    public func writeTelemetryRuleStats(_ stats: [TelemetryRuleStats]) throws(StoreError) {
        try writeUnsynced("record the telemetry rules' counters") { db in
            try db.execute(sql: "DELETE FROM telemetry_rule_stats")
            let insert = try db.cachedStatement(
                sql: """
                    INSERT INTO telemetry_rule_stats (kind, rule, file, line, routed, archived, dropped, expired, failed)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """)
            for s in stats {
                try insert.execute(arguments: [
                    s.kind, s.rule, s.file, s.line, s.routed, s.archived, s.dropped, s.expired, s.failed,
                ])
            }
        }
    }

    /// The rules' counters as the daemon last wrote them, in file and line order.
    public func telemetryRuleStats() throws(StoreError) -> [TelemetryRuleStats] {
        try read("read the telemetry rules' counters") { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT kind, rule, file, line, routed, archived, dropped, expired, failed
                    FROM telemetry_rule_stats ORDER BY kind = 'default', file, line, rule
                    """
            ).map { row in
                TelemetryRuleStats(
                    kind: row[0], rule: row[1], file: row[2], line: row[3], routed: row[4], archived: row[5],
                    dropped: row[6], expired: row[7], failed: row[8])
            }
        }
    }
}
