import GatehouseTestSupport
import SQLiteDB
import Testing

@testable import GatehouseStore

/// The outbox stores properties as key and value, no transport's encoding; a database of an
/// older version, which stored IoT Hub property bags, is converted once.
@Suite("Outbox properties: stored transport-neutrally")
struct OutboxPropertiesTests {
    @Test("properties round-trip through the outbox in order, whatever their bytes")
    func roundTrip() throws {
        let dir = TempDir()
        let properties = [
            OutboxProperty("$.ct", "application/json"), OutboxProperty("k&=%", "v&w=x%41"),
            OutboxProperty("empty", ""), OutboxProperty("", "no key"), OutboxProperty("ünï", "値 🚀"),
            OutboxProperty("long", String(repeating: "x", count: 300)),  // a two-byte length
        ]
        let path = dir.file("state.db")
        do {
            let store = try StateStore(path: path)
            _ = try store.appendToOutbox([
                OutboxRecord(deviceID: "d", properties: properties, payload: [1], createdMS: 1, enqueuedMS: 1),
                OutboxRecord(deviceID: "d", payload: [2], createdMS: 1, enqueuedMS: 1),
            ])
        }
        let records = try StateStore(path: path).outboxRecords(fromSeq: 0, limit: 10)
        #expect(records.map(\.properties) == [properties, []])
    }

    @Test("the encoding reads back exactly, and damaged bytes are refused rather than misread")
    func encoding() {
        let properties = [OutboxProperty("a", "b"), OutboxProperty("c", String(repeating: "é", count: 100))]
        let encoded = OutboxProperty.encode(properties)
        #expect(OutboxProperty.decode(encoded) == properties)
        #expect(OutboxProperty.decode([]) == [])
        #expect(OutboxProperty.decode(encoded.dropLast()) == nil)  // truncated value
        #expect(OutboxProperty.decode([5, 0x61]) == nil)  // length past the end
        #expect(OutboxProperty.decode([1, 0x61]) == nil)  // a key without its value
        #expect(OutboxProperty.decode([1, 0xff, 0]) == nil)  // not UTF-8
        #expect(OutboxProperty.decode([UInt8](repeating: 0xff, count: 12)) == nil)  // an endless varint
    }

    @Test("v8 converts the property bags an older version left in the outbox, losing nothing")
    func migration() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        // A database as version 7 left it, with two messages waiting.
        let old = try DatabaseQueue(path: path)
        try StateStore.migrator.migrate(old, upTo: "v7-command-ids")
        try old.write { db in
            try db.execute(
                sql: """
                    INSERT INTO outbox (device_id, properties, payload, created_ms, enqueued_ms, size)
                    VALUES ('d', '$.ct=application%2Fjson&k=v%26w&bare&empty=', x'61', 1, 1, 40),
                           ('d', '', x'62', 2, 2, 2)
                    """)
        }
        old.close()
        let store = try StateStore(path: path)
        let records = try store.outboxRecords(fromSeq: 0, limit: 10)
        #expect(records.map(\.payload) == [[0x61], [0x62]])
        #expect(
            records.first?.properties == [
                OutboxProperty("$.ct", "application/json"), OutboxProperty("k", "v&w"), OutboxProperty("bare", ""),
                OutboxProperty("empty", ""),
            ])
        #expect(records.last?.properties == [])
        let columns = try DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info('outbox')")
        }
        #expect(!columns.contains("properties"))
    }
}
