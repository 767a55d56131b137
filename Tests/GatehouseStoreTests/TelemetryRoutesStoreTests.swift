import GatehouseTestSupport
import SQLiteDB
import Testing

@testable import GatehouseStore

/// What the telemetry rules need of the state database: priority lanes and times to live in the
/// outbox, the archive and its budget, the rules' counters, the devices' tags read at once.
@Suite("State store: priority lanes, time to live, archive, rule counters")
struct TelemetryRoutesStoreTests {
    func record(
        _ device: String, _ payload: String, _ priority: OutboxPriority = .normal, expiresMS: Int64 = 0,
        rule: String? = nil, at ms: Int64 = 1000
    ) -> OutboxRecord {
        OutboxRecord(
            deviceID: device, payload: Array(payload.utf8), createdMS: ms, enqueuedMS: ms, priority: priority,
            expiresMS: expiresMS, ttlRule: rule)
    }

    func payloads(_ records: [OutboxRecord]) -> [String] { records.map { String(decoding: $0.payload, as: UTF8.self) } }

    @Test("priority, time to live and its rule survive reopening; each lane reads back in outbox order")
    func lanes() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        do {
            let store = try StateStore(path: path)
            _ = try store.appendToOutbox([
                record("a", "n1"), record("a", "h1", .high, expiresMS: 5000, rule: "alarms"), record("b", "l1", .low),
                record("a", "n2"), record("b", "h2", .high),
            ])
        }
        let store = try StateStore(path: path)
        let all = try store.outboxRecords(fromSeq: 0, limit: 10)
        #expect(payloads(all) == ["n1", "h1", "l1", "n2", "h2"])
        #expect(all[1].priority == .high && all[1].expiresMS == 5000 && all[1].ttlRule == "alarms")
        #expect(all[0].priority == .normal && all[0].expiresMS == 0 && all[0].ttlRule == nil)
        #expect(payloads(try store.outboxRecords(priority: .high, fromSeq: 0, limit: 10)) == ["h1", "h2"])
        #expect(payloads(try store.outboxRecords(priority: .high, fromSeq: all[1].seq + 1, limit: 10)) == ["h2"])
        #expect(payloads(try store.outboxRecords(priority: .normal, fromSeq: 0, limit: 1)) == ["n1"])
        #expect(payloads(try store.outboxRecords(priority: .low, fromSeq: 0, limit: 10)) == ["l1"])
    }

    @Test("a full outbox gives up its low lane first, then normal, oldest first; never what is in flight")
    func dropOldestByLane() throws {
        let store = try StateStore(path: TempDir().file("state.db"))
        let stored = try store.appendToOutbox([
            record("d", "n1"), record("d", "l1", .low), record("d", "h1", .high), record("d", "l2", .low),
            record("d", "n2"),
        ])
        let dropped = try store.dropOldest(freeing: stored[0].size * 3, keep: [stored[3].seq])
        #expect(dropped.map(\.seq) == [stored[1].seq, stored[0].seq, stored[4].seq])
        #expect(payloads(try store.outboxRecords(fromSeq: 0, limit: 10)) == ["h1", "l2"])
    }

    @Test("expiry by time to live drops only what ran out, with its rule; in flight stays")
    func dropExpired() throws {
        let store = try StateStore(path: TempDir().file("state.db"))
        let stored = try store.appendToOutbox([
            record("d", "forever"), record("d", "soon", expiresMS: 2000, rule: "status"),
            record("d", "later", expiresMS: 9000, rule: "status"),
            record("d", "sent", expiresMS: 1500, rule: "status"),
            record("d", "other", .high, expiresMS: 1800, rule: "x"),
        ])
        #expect(try store.dropExpired(nowMS: 1000, keep: []).isEmpty)
        let dropped = try store.dropExpired(nowMS: 2500, keep: [stored[3].seq])
        #expect(Set(dropped.map(\.seq)) == [stored[1].seq, stored[4].seq])
        #expect(Set(dropped.map(\.ttlRule)) == ["status", "x"])
        #expect(payloads(try store.outboxRecords(fromSeq: 0, limit: 10)) == ["forever", "later", "sent"])
    }

    @Test("archived messages are written in the ingest's transaction, exported in pages, pruned by age and size")
    func archive() throws {
        let store = try StateStore(path: TempDir().file("state.db"))
        func archived(_ device: String, _ payload: String, at ms: Int64) -> ArchiveRecord {
            ArchiveRecord(
                timeMS: ms, createdMS: ms - 1, deviceID: device, topic: "devices/\(device)/diagnostics",
                properties: [OutboxProperty("k", "v")], payload: Array(payload.utf8), rule: "archive diagnostics")
        }
        // Archive-only messages still count in the registry (`received`).
        _ = try store.appendToOutbox(
            [], archiving: [archived("a", "1", at: 1000), archived("b", "2", at: 2000)],
            received: ["a": (1, 1000), "b": (1, 2000)])
        _ = try store.appendToOutbox(
            [record("a", "up")], archiving: [archived("a", "3", at: 3000), archived("a", "4", at: 4000)],
            received: ["a": (2, 4000)])
        #expect(try store.devices().first { $0.id == "a" }?.messagesIn == 3)
        let totals = try store.archiveTotals()
        #expect(totals.messages == 4)
        #expect(totals.bytes == 4 * archived("a", "1", at: 0).size)
        let first = try store.archiveRecords(limit: 2)
        #expect(first.map { String(decoding: $0.payload, as: UTF8.self) } == ["1", "2"])
        #expect(first[0].topic == "devices/a/diagnostics" && first[0].properties == [OutboxProperty("k", "v")])
        #expect(first[0].createdMS == 999 && first[0].rule == "archive diagnostics")
        let next = try store.archiveRecords(afterID: first[1].id, limit: 2)
        #expect(next.map { String(decoding: $0.payload, as: UTF8.self) } == ["3", "4"])
        #expect(try store.archiveRecords(sinceMS: 2500, limit: 10).count == 2)
        #expect(try store.archiveRecords(device: "b", limit: 10).map(\.deviceID) == ["b"])
        // Nothing due: nothing pruned.
        #expect(try store.pruneArchive(olderThan: 500, freeing: 0) == (0, 0))
        // By age: the first one; then by size: the next oldest until enough is freed.
        let size = archived("a", "1", at: 0).size
        let byAge = try store.pruneArchive(olderThan: 1500, freeing: 0)
        #expect(byAge.messages == 1 && byAge.bytes == size)
        let bySize = try store.pruneArchive(olderThan: 0, freeing: size + 1)
        #expect(bySize.messages == 2 && bySize.bytes == 2 * size)
        #expect(try store.archiveRecords(limit: 10).map { String(decoding: $0.payload, as: UTF8.self) } == ["4"])
    }

    @Test("the rules' counters are replaced as a whole and read back in file order, the default last")
    func ruleStats() throws {
        let store = try StateStore(path: TempDir().file("state.db"))
        try store.writeTelemetryRuleStats([
            TelemetryRuleStats(kind: "default", rule: "(no rule routes the message)", dropped: 2),
            TelemetryRuleStats(kind: "route", rule: "b", file: "30.rules", line: 7, routed: 5, expired: 1),
            TelemetryRuleStats(kind: "drop", rule: "a", file: "30.rules", line: 3, dropped: 4, failed: 1),
        ])
        #expect(try store.telemetryRuleStats().map(\.rule) == ["a", "b", "(no rule routes the message)"])
        #expect(try store.telemetryRuleStats()[1].expired == 1)
        try store.writeTelemetryRuleStats([TelemetryRuleStats(kind: "route", rule: "c", archived: 9)])
        #expect(try store.telemetryRuleStats() == [TelemetryRuleStats(kind: "route", rule: "c", archived: 9)])
    }

    @Test("the devices' tags and model are read at once, only for devices that have some")
    func devicesWithMetadata() throws {
        let store = try StateStore(path: TempDir().file("state.db"))
        _ = try store.appendToOutbox([record("plain", "x")])
        try store.setDeviceMetadata("pump-1", DeviceMetadata(model: "pump-3000", tags: ["site": .string("A")]), atMS: 1)
        try store.setDeviceMetadata("valve-1", DeviceMetadata(tags: ["floor": .number(2)]), atMS: 1)
        let all = try store.devicesWithMetadata()
        #expect(Set(all.keys) == ["pump-1", "valve-1"])
        #expect(all["pump-1"] == DeviceMetadata(model: "pump-3000", tags: ["site": .string("A")]))
    }

    @Test("rows from before priorities (migration v10) are normal, without a time to live")
    func migration() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        do {
            let pool = try DatabasePool(path: path)
            try StateStore.migrator.migrate(pool, upTo: "v8-outbox-neutral-properties")
            try pool.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO outbox (device_id, props, payload, created_ms, enqueued_ms, size)
                        VALUES ('old', x'', x'6f6c64', 1, 1, 6)
                        """)
            }
        }
        let store = try StateStore(path: path)
        let records = try store.outboxRecords(fromSeq: 0, limit: 10)
        #expect(records.map(\.deviceID) == ["old"])
        #expect(records.first?.priority == .normal)
        #expect(records.first?.expiresMS == 0)
        #expect(try store.outboxRecords(priority: .normal, fromSeq: 0, limit: 10).count == 1)
        #expect(try store.archiveTotals() == (0, 0))
    }
}
