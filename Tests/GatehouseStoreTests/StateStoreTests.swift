import FoundationEssentials
import GatehouseStore
import GatehouseTestSupport
import SQLiteDB
import Testing

@Suite("State store (SQLite on disk)")
struct StateStoreTests {
    func record(_ device: String, _ payload: String, at ms: Int64 = 1000) -> OutboxRecord {
        OutboxRecord(
            deviceID: device, properties: [OutboxProperty("k", "v")], payload: Array(payload.utf8), createdMS: ms,
            enqueuedMS: ms)
    }

    @Test("appends are durable and ordered, and survive reopening")
    func appendAndReopen() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        do {
            let store = try StateStore(path: path)
            let stored = try store.appendToOutbox([record("a", "1"), record("b", "2"), record("a", "3")])
            #expect(stored.map(\.seq) == [1, 2, 3])
            try store.removeFromOutbox([2], deliveredPerDevice: ["b": 1])
        }
        let reopened = try StateStore(path: path)
        let left = try reopened.outboxRecords(fromSeq: 0, limit: 10)
        #expect(left.map { String(decoding: $0.payload, as: UTF8.self) } == ["1", "3"])
        #expect(try reopened.outboxTotals().messages == 2)
        let devices = try reopened.devices()
        #expect(devices.map(\.id) == ["a", "b"])
        #expect(devices.first { $0.id == "a" }?.messagesIn == 2)
        #expect(devices.first { $0.id == "b" }?.messagesOut == 1)
        // Sequence numbers never go back, even after deletes (AUTOINCREMENT).
        #expect(try reopened.appendToOutbox([record("c", "4")]).first?.seq == 4)
    }

    @Test("dropping the oldest frees bytes and never touches what is in flight")
    func dropOldest() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let stored = try store.appendToOutbox((0..<10).map { record("d", "payload-\($0)") })
        let inFlight: Set<Int64> = [stored[0].seq]
        let dropped = try store.dropOldest(freeing: stored[1].size * 2, keep: inFlight)
        #expect(dropped.map(\.seq) == [stored[1].seq, stored[2].seq])
        let left = try store.outboxRecords(fromSeq: 0, limit: 100).map(\.seq)
        #expect(left.first == stored[0].seq)
        #expect(left.count == 8)
    }

    @Test("expiry drops only records older than the cutoff")
    func dropOlderThan() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        _ = try store.appendToOutbox([
            record("d", "old", at: 100), record("d", "older-but-in-flight", at: 150), record("d", "new", at: 900),
        ])
        let dropped = try store.dropOlderThan(500, keep: [2])
        #expect(dropped.map(\.seq) == [1])
        #expect(try store.outboxRecords(fromSeq: 0, limit: 10).map(\.seq) == [2, 3])
    }

    @Test("status and link states are readable by a read-only reader (the CLI)")
    func statusReadOnly() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        let store = try StateStore(path: path)
        try store.setLinkState(deviceID: "pump-1", state: "up", reason: "", atMS: 5)
        try store.writeStatus(DaemonStatus(pid: 42, version: "t", startedMS: 1, heartbeatMS: 2, outboxMessages: 3))
        let reader = try StateStore(readingFrom: path)
        #expect(try reader.readStatus()?.outboxMessages == 3)
        #expect(try reader.devices().first?.linkState == "up")
        #expect(throws: StoreError.self) { _ = try StateStore(readingFrom: dir.file("missing.db")) }
    }

    @Test("inspect reads the schema without writing: what a start would migrate, nothing applied")
    func inspectWithoutSideEffects() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        let none = try StateStore.inspect(path: path)
        #expect(!none.exists)
        #expect(none.pending.first == "v1-registry-outbox-status")
        #expect(!FileManager.default.fileExists(atPath: path), "inspect created the database")

        _ = try StateStore(path: path)
        let current = try StateStore.inspect(path: path)
        #expect(current.exists && current.pending.isEmpty && current.applied > 5)

        // An older version's database: two migrations not applied yet.
        let older = try DatabaseQueue(path: path)
        try older.write { db in
            try db.execute(
                sql: "DELETE FROM grdb_migrations WHERE identifier IN ('v9-dead-letters', 'v10-telemetry-routes')")
        }
        let before = try older.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations") }
        older.close()
        let report = try StateStore.inspect(path: path)
        #expect(report.pending.starts(with: ["v9-dead-letters", "v10-telemetry-routes"]))
        let after = try DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations")
        }
        #expect(after == before, "inspect applied a migration")

        try DatabaseQueue(path: path).write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        let error = #expect(throws: StoreError.self) { _ = try StateStore.inspect(path: path) }
        #expect(error?.code == .newerSchema)
    }

    @Test("a database a newer gatehouse migrated is refused by the daemon and the CLI, and left as it is")
    func newerSchemaRefused() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        _ = try StateStore(path: path)
        // What a newer version leaves behind: a migration this one does not know.
        let newer = try DatabaseQueue(path: path)
        try newer.write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        newer.close()

        let error = #expect(throws: StoreError.self) { _ = try StateStore(path: path) }
        #expect(error?.code == .newerSchema)
        #expect(error?.message.contains("written by a newer gatehouse") == true)
        #expect(error?.message.contains("v99-from-the-future") == true)
        let readError = #expect(throws: StoreError.self) { _ = try StateStore(readingFrom: path) }
        #expect(readError?.code == .newerSchema)

        let applied = try DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier")
        }
        #expect(applied.last == "v99-from-the-future")
    }
}

@Suite("Audit log (SQLite on disk)")
struct AuditLogTests {
    func decision(_ device: String, _ effect: String, at ms: Int64) -> AuditRecord {
        AuditRecord(
            timeMS: ms, deviceID: device, commandKind: "direct-method", commandName: "reboot", caller: "user-1",
            tenant: "t1",
            effect: effect, rules: "operators may reboot (10-commands.rules:4)", reason: "")
    }

    @Test("decisions are kept, queried newest first, and pruned by age and count")
    func appendQueryPrune() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        for (index, device) in ["a", "b", "a", "a"].enumerated() {
            try store.appendAudit(decision(device, index % 2 == 0 ? "allow" : "deny", at: Int64(1000 * (index + 1))))
        }
        let forA = try store.auditRecords(deviceID: "a")
        #expect(forA.map(\.timeMS) == [4000, 3000, 1000])
        #expect(try store.auditRecords(sinceMS: 2500).count == 2)
        // 1000 and 2000 are too old
        #expect(try store.pruneAudit(AuditRetention(maxRows: 10, maxAgeMS: 2000), nowMS: 4500) == 2)
        #expect(try store.pruneAudit(AuditRetention(maxRows: 1, maxAgeMS: 1_000_000), nowMS: 4500) == 1)
        #expect(try store.auditRecords().map(\.timeMS) == [4000])
    }
}
