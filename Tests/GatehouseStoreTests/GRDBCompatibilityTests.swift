import CSQLite
import FoundationEssentials
import GatehouseTestSupport
import SQLiteDB
import Testing

@testable import GatehouseStore

/// Gateways in the field have state databases that the GRDB-based store wrote: the SQLiteDB-based
/// store must take them as they are. The fixtures are `sqlite3 .dump`s of databases GRDB 7.10's
/// store wrote (Fixtures/*.sql); with `GATEHOUSE_GRDB_DATABASES=DIR` the tests open DIR's
/// grdb-v11.db and grdb-v7.db, the files themselves, instead (and leave the databases this
/// store made there, for the GRDB store to read back).
@Suite("Databases the GRDB-based store wrote")
struct GRDBCompatibilityTests {
    static let fixtures = String(#filePath.dropLast("GRDBCompatibilityTests.swift".count)) + "Fixtures/"
    static let databases = ProcessInfo.processInfo.environment["GATEHOUSE_GRDB_DATABASES"]

    /// The database `name` as GRDB left it, at a new path in `dir`.
    func grdbDatabase(_ name: String, in dir: TempDir) throws -> String {
        let path = dir.file("\(name).db")
        if let databases = Self.databases {
            try FileManager.default.copyItem(atPath: "\(databases)/\(name).db", toPath: path)
            return path
        }
        // Loaded with SQLite's own sqlite3_exec, not through SQLiteDB.
        let dump = try String(contentsOfFile: Self.fixtures + "\(name).sql", encoding: .utf8)
        var connection: OpaquePointer?
        defer { sqlite3_close(connection) }
        try #require(sqlite3_open(path, &connection) == SQLITE_OK)
        try #require(sqlite3_exec(connection, dump, nil, nil, nil) == SQLITE_OK, "cannot load \(name).sql")
        // As GRDB's pool left the file: in WAL mode (a .dump does not keep it).
        try #require(sqlite3_exec(connection, "PRAGMA journal_mode = WAL", nil, nil, nil) == SQLITE_OK)
        return path
    }

    /// Every schema object and its SQL, as SQLite keeps them.
    func schema(_ path: String) throws -> [String] {
        let queue = try DatabaseQueue(path: path)
        defer { queue.close() }
        return try queue.read { db in
            try String.fetchAll(
                db,
                sql: "SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master ORDER BY type, name")
        }
    }

    func migrations(_ path: String) throws -> [String] {
        let queue = try DatabaseQueue(path: path)
        defer { queue.close() }
        return try queue.read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier")
        }
    }

    /// What the GRDB store wrote into grdb-v11.db (make-grdb-db), as the store reads it.
    func expectContents(of store: StateStore) throws {
        let outbox = try store.outboxRecords(fromSeq: 0, limit: 10)
        #expect(
            outbox == [
                OutboxRecord(
                    seq: 1, deviceID: "pump-1",
                    properties: [OutboxProperty("$.ct", "application/json"), OutboxProperty("k", "v&w")],
                    payload: [0, 1, 2, 255], createdMS: 1000, enqueuedMS: 1001, priority: .high, expiresMS: 5000,
                    ttlRule: "alarms"),
                OutboxRecord(seq: 2, deviceID: "pump-2", payload: [], createdMS: 1100, enqueuedMS: 1101),
                OutboxRecord(
                    seq: 3, deviceID: "pump-1", payload: Array("low".utf8), createdMS: 1200, enqueuedMS: 1201,
                    priority: .low),
            ])
        #expect(try store.outboxTotals() == (3, outbox.reduce(0) { $0 + $1.size }))
        #expect(try store.outboxLanes()[.high]?.oldestEnqueuedMS == 1001)

        let devices = try store.devices()
        #expect(devices.map(\.id) == ["pump-1", "pump-2", "sensor-9", "valve-1"])
        #expect(devices[0].linkState == "up" && devices[0].provisioning == "assigned")
        #expect(devices[0].assignedHub == "hub-a.example" && devices[0].messagesIn == 2)
        #expect(devices[1].removedMS == 3500 && devices[1].linkState == "removed")
        #expect(devices[2].siteCredentialMS == 3400 && devices[2].removedMS == nil)
        #expect(devices[3].messagesOut == 1)
        #expect(try store.removedDeviceIDs() == ["pump-2"])
        #expect(
            try store.deviceMetadata("pump-1")
                == DeviceMetadata(
                    model: "pump-3000", tags: ["site": .string("A"), "floor": .number(2), "locked": .bool(true)]))

        let letters = try store.deadLetters()
        #expect(letters.map(\.id) == [2, 1])
        #expect(letters[0].source == .site && letters[0].size == 10_000 && letters[0].payload.count == 4096)
        #expect(!letters[0].isComplete && letters[0].topic == "devices/pump-2/messages/events/")
        #expect(letters[1].source == .hub && letters[1].payload == Array("poison".utf8) && letters[1].isRequeueable)
        #expect(letters[1].outboxSeq == 4 && letters[1].createdMS == 1300 && letters[1].detail == "3 tries")
        #expect(try store.deadLetterTotals().byReason == ["too-large": 1, "hub-refused": 1])

        let audit = try store.auditRecords()
        #expect(audit.map(\.decisionID) == ["dec-1"] && audit.first?.rules == "ops (10.rules:4)")
        #expect(
            try store.liveCommandIDs(nowMS: 0)
                == [CommandIDRecord(caller: "h1", deviceID: "pump-1", commandID: "c-1", expiresMS: 99_000)])
        let archived = try store.archiveRecords(limit: 10)
        #expect(archived.map(\.payload) == [[9, 0, 9]] && archived.first?.properties == [OutboxProperty("a", "b")])
        #expect(
            try store.readStatus()
                == DaemonStatus(
                    pid: 4242, version: "0.9.0", startedMS: 100, heartbeatMS: 3700, outboxMessages: 3, outboxBytes: 40,
                    ingestedTotal: 5, deliveredTotal: 1, droppedTotal: 0, commandsRefusedTotal: 2))
        #expect(try store.gatewayIdentity()?.registeredMS == 3600)
        #expect(try store.telemetryRuleStats().map(\.rule) == ["alarms"])
    }

    @Test("a database GRDB migrated to v11 is current: read as written, used without a migration")
    func current() throws {
        let dir = TempDir()
        let path = try grdbDatabase("grdb-v11", in: dir)
        let before = try schema(path)
        let report = try StateStore.inspect(path: path)
        #expect(report.exists && report.pending.isEmpty && report.applied == 11)
        try expectContents(of: StateStore(readingFrom: path))

        do {
            let store = try StateStore(path: path)
            try expectContents(of: store)
            #expect(try schema(path) == before)
            #expect(try migrations(path).count == 11)
            // The sequences go on from where GRDB left them (the outbox's last seq was 5).
            let back = try store.requeueDeadLetter(id: 1, nowMS: 5000)
            #expect(back.seq == 6 && back.payload == Array("poison".utf8))
            #expect(try store.takeRequeuedOutbox() == [back])
            let appended = try store.appendToOutbox([
                OutboxRecord(deviceID: "d", payload: [1], createdMS: 1, enqueuedMS: 1)
            ])
            #expect(appended.map(\.seq) == [7])
        }
        if let databases = Self.databases {
            try? FileManager.default.removeItem(atPath: "\(databases)/port-from-v11.db")
            try FileManager.default.copyItem(atPath: path, toPath: "\(databases)/port-from-v11.db")
        }
    }

    @Test("a database GRDB migrated to v7 is migrated on: its rows converted, the schema GRDB would have made")
    func olderVersion() throws {
        let dir = TempDir()
        let path = try grdbDatabase("grdb-v7", in: dir)
        let report = try StateStore.inspect(path: path)
        #expect(report.applied == 7)
        #expect(
            report.pending == [
                "v8-outbox-neutral-properties", "v9-dead-letters", "v10-telemetry-routes", "v11-audit-decision-id",
            ])
        do {
            let store = try StateStore(path: path)
            let outbox = try store.outboxRecords(fromSeq: 0, limit: 10)
            #expect(outbox.map(\.payload) == [[0, 0xff], []])
            #expect(
                outbox.map(\.properties) == [
                    [
                        OutboxProperty("$.ct", "application/json"), OutboxProperty("k", "v&w"),
                        OutboxProperty("bare", ""), OutboxProperty("empty", ""),
                    ],
                    [],
                ])
            #expect(outbox.allSatisfy { $0.priority == .normal && $0.expiresMS == 0 })
            #expect(try store.devices().map(\.messagesIn) == [2])
        }
        #expect(try migrations(path) == StateStore.migrator.migrations.sorted())
        // The same schema, object for object, as GRDB's migrator made for v1–v11.
        let grdb = try schema(try grdbDatabase("grdb-v11", in: dir))
        #expect(try schema(path) == grdb)
        if let databases = Self.databases {
            try? FileManager.default.removeItem(atPath: "\(databases)/port-from-v7.db")
            try FileManager.default.copyItem(atPath: path, toPath: "\(databases)/port-from-v7.db")
        }
    }

    @Test("a new database has the schema GRDB's migrator made")
    func freshSchema() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        _ = try StateStore(path: path)
        #expect(try schema(path) == schema(try grdbDatabase("grdb-v11", in: dir)))
        #expect(try migrations(path) == StateStore.migrator.migrations.sorted())
    }
}
