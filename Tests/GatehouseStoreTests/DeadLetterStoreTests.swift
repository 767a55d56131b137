import GatehouseTestSupport
import SQLiteDB
import Testing

@testable import GatehouseStore

/// Dead letters on disk: what is kept of each, the outbox move and the requeue in one
/// transaction each, retention by size and age, the counts `gatehouse status` shows.
@Suite("State store: dead letters")
struct DeadLetterStoreTests {
    func record(_ device: String, _ payload: String, properties: [OutboxProperty] = [OutboxProperty("k", "v")])
        -> OutboxRecord
    {
        OutboxRecord(
            deviceID: device, properties: properties, payload: Array(payload.utf8), createdMS: 10, enqueuedMS: 10)
    }

    func siteLetter(_ device: String, size: Int, at ms: Int64, head: [UInt8]? = nil) -> DeadLetterRecord {
        DeadLetterRecord(
            timeMS: ms, deviceID: device, source: .site, topic: "devices/\(device)/messages/events/a=1", size: size,
            reason: DeadLetterReason.tooLarge, detail: "\(size) bytes, over the site limit",
            payload: head ?? Array(repeating: 0x41, count: min(size, DeadLetterRecord.headLimit)), createdMS: ms)
    }

    @Test("a site dead letter keeps its head (at most 4 KiB), never a large payload whole, across reopening")
    func siteHeadOnly() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        do {
            let store = try StateStore(path: path)
            // A caller handing too much is cut to the head.
            let stored = try store.addDeadLetters([
                siteLetter("d1", size: 2 << 20, at: 100, head: [UInt8](repeating: 7, count: 10_000))
            ])
            #expect(stored.first?.id == 1)
        }
        let reader = try StateStore(readingFrom: path)
        let letter = try #require(try reader.deadLetter(id: 1))
        #expect(letter.payload == [UInt8](repeating: 7, count: DeadLetterRecord.headLimit))
        #expect(letter.size == 2 << 20)
        #expect(!letter.isComplete)
        #expect(!letter.isRequeueable)
        #expect(letter.source == .site)
        #expect(letter.reason == "too-large")
        #expect(letter.topic == "devices/d1/messages/events/a=1")
        let bytes = try DatabaseQueue(path: path).read { db in
            try Int.fetchOne(db, sql: "SELECT length(payload) FROM dead_letter WHERE id = 1")
        }
        #expect(bytes == DeadLetterRecord.headLimit)
    }

    @Test("moving outbox rows to the dead letters is one transaction and keeps them whole")
    func moveFromOutbox() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let stored = try store.appendToOutbox([
            record("d", "ok-1"),
            record("d", String(repeating: "x", count: 300_000), properties: [OutboxProperty("$.ct", "text/plain")]),
            record("d", "ok-2"),
        ])
        let moved = try store.moveToDeadLetters(
            seqs: [stored[1].seq, 999], reason: DeadLetterReason.hubLimit, detail: "300010 bytes > 262144", nowMS: 50)
        #expect(moved.count == 1)  // 999 was never in the outbox
        let letter = try #require(moved.first)
        #expect(letter.source == .hub)
        #expect(letter.isComplete && letter.isRequeueable)
        #expect(letter.payload.count == 300_000)
        #expect(letter.properties == [OutboxProperty("$.ct", "text/plain")])
        #expect(letter.outboxSeq == stored[1].seq)
        #expect(letter.createdMS == 10)
        #expect(letter.outboxSize == stored[1].size)
        #expect(try store.outboxRecords(fromSeq: 0, limit: 10).map(\.seq) == [stored[0].seq, stored[2].seq])
        #expect(try store.deadLetters().map(\.id) == [letter.id])
    }

    @Test("a failed move changes nothing: the outbox row stays")
    func moveIsAtomic() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        let store = try StateStore(path: path)
        let stored = try store.appendToOutbox([record("d", "poison")])
        // Make the insert fail inside the transaction.
        try DatabaseQueue(path: path).write { db in
            try db.execute(
                sql: """
                    CREATE TRIGGER refuse BEFORE INSERT ON dead_letter BEGIN SELECT RAISE(ABORT, 'disk full'); END
                    """)
        }
        #expect(throws: StoreError.self) {
            _ = try store.moveToDeadLetters(seqs: [stored[0].seq], reason: "hub-refused", nowMS: 1)
        }
        #expect(try store.outboxRecords(fromSeq: 0, limit: 10).map(\.seq) == [stored[0].seq])
        #expect(try store.deadLetters().isEmpty)
    }

    @Test("requeue puts a hub dead letter back into the outbox after what waits, and names it for the daemon")
    func requeue() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let stored = try store.appendToOutbox([record("d", "poison"), record("d", "next")])
        let letter = try #require(
            try store.moveToDeadLetters(seqs: [stored[0].seq], reason: "hub-refused", nowMS: 5).first)
        let back = try store.requeueDeadLetter(id: letter.id, nowMS: 77)
        #expect(back.seq > stored[1].seq)
        #expect(back.payload == Array("poison".utf8))
        #expect(back.properties == [OutboxProperty("k", "v")])
        #expect(back.createdMS == 10)
        #expect(back.enqueuedMS == 77)
        #expect(try store.deadLetter(id: letter.id) == nil)
        #expect(try store.outboxRecords(fromSeq: 0, limit: 10).map(\.seq) == [stored[1].seq, back.seq])
        // The running daemon takes it once.
        #expect(try store.takeRequeuedOutbox() == [back])
        #expect(try store.takeRequeuedOutbox().isEmpty)
        // Twice: no such dead letter any more.
        #expect {
            _ = try store.requeueDeadLetter(id: letter.id, nowMS: 78)
        } throws: { ($0 as? StoreError)?.code == .notFound }
    }

    @Test("a site dead letter cannot be requeued: only its head was kept")
    func siteNotRequeueable() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let letter = try #require(try store.addDeadLetters([siteLetter("d", size: 1 << 20, at: 1)]).first)
        #expect {
            _ = try store.requeueDeadLetter(id: letter.id, nowMS: 2)
        } throws: { error in
            guard let error = error as? StoreError else { return false }
            return error.code == .notRequeueable && error.description.contains("first 4096 of its 1048576 bytes")
        }
        #expect(try store.deadLetter(id: letter.id) != nil)
        #expect(try store.outboxTotals().messages == 0)
    }

    @Test("a requeued row the daemon never took is forgotten once the outbox row is gone")
    func requeuedRowGone() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let stored = try store.appendToOutbox([record("d", "x")])
        let letter = try #require(
            try store.moveToDeadLetters(seqs: [stored[0].seq], reason: "hub-refused", nowMS: 5).first)
        let back = try store.requeueDeadLetter(id: letter.id, nowMS: 6)
        try store.removeFromOutbox([back.seq])
        #expect(try store.takeRequeuedOutbox().isEmpty)
    }

    @Test("purge: by id, by age, everything")
    func purge() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        try store.addDeadLetters((1...5).map { siteLetter("d\($0)", size: 10, at: Int64($0) * 100) })
        #expect(try store.purgeDeadLetters(.ids([2, 2, 42])) == 1)
        #expect(try store.purgeDeadLetters(.olderThan(300)) == 1)  // only id 1 (id 2 is gone)
        #expect(try store.deadLetters().map(\.id) == [5, 4, 3])
        #expect(try store.purgeDeadLetters(.all) == 3)
        #expect(try store.deadLetters().isEmpty)
    }

    @Test("retention drops what is past max_age, then the oldest until the rest fits max_bytes")
    func retention() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let letters = (1...6).map {
            siteLetter("d", size: 1000, at: Int64($0) * 1000, head: [UInt8](repeating: 1, count: 1000))
        }
        let stored = try store.addDeadLetters(letters)
        let each = stored[0].storedBytes
        // Age: at 10,000 with a max age of 8,500 the one at 1,000 goes.
        var removed = try store.pruneDeadLetters(DeadLetterRetention(maxBytes: 1 << 30, maxAgeMS: 8500), nowMS: 10_000)
        #expect(removed == 1)
        // Size: room for three; the oldest two of the five left go.
        removed = try store.pruneDeadLetters(
            DeadLetterRetention(maxBytes: each * 3 + each / 2, maxAgeMS: 1 << 40), nowMS: 10_000)
        #expect(removed == 2)
        #expect(try store.deadLetters().map(\.id) == [6, 5, 4])
        // Nothing to do.
        #expect(
            try store.pruneDeadLetters(DeadLetterRetention(maxBytes: each * 3, maxAgeMS: 1 << 40), nowMS: 10_000) == 0)
    }

    @Test("totals count what is kept, since a time, and by reason; a read-only reader sees them")
    func totals() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        let store = try StateStore(path: path)
        try store.addDeadLetters([siteLetter("a", size: 5000, at: 100), siteLetter("b", size: 9, at: 300)])
        let stored = try store.appendToOutbox([record("c", "big")])
        _ = try store.moveToDeadLetters(seqs: [stored[0].seq], reason: DeadLetterReason.hubLimit, nowMS: 400)
        let totals = try StateStore(readingFrom: path).deadLetterTotals(sinceMS: 200)
        #expect(totals.count == 3)
        #expect(totals.sinceCount == 2)
        #expect(totals.byReason == ["too-large": 2, "hub-limit": 1])
        #expect(totals.newestMS == 400)
        let kept = try store.deadLetters().reduce(0) { $0 + $1.storedBytes }
        #expect(totals.bytes == kept)
        #expect(try StateStore(readingFrom: path).deadLetterTotals().count == 3)
    }

    @Test("v9 adds the tables to a database version 8 left, with its outbox untouched")
    func migration() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        let old = try DatabaseQueue(path: path)
        try StateStore.migrator.migrate(old, upTo: "v8-outbox-neutral-properties")
        try old.write { db in
            try db.execute(
                sql: """
                    INSERT INTO outbox (device_id, props, payload, created_ms, enqueued_ms, size)
                    VALUES ('d', x'', x'61', 1, 1, 2)
                    """)
        }
        old.close()
        // The CLI, upgraded before gatehoused restarted, reads it without migrating: no dead letters.
        let reader = try StateStore(readingFrom: path)
        #expect(try reader.deadLetterTotals() == DeadLetterTotals())
        #expect(try reader.deadLetters().isEmpty)
        #expect(try reader.deadLetter(id: 1) == nil)
        let store = try StateStore(path: path)
        #expect(try store.outboxRecords(fromSeq: 0, limit: 10).map(\.payload) == [[0x61]])
        #expect(try store.deadLetterTotals() == DeadLetterTotals())
        #expect(try store.takeRequeuedOutbox().isEmpty)
    }

    @Test("dead letters of one device, newest first; export pages oldest first")
    func listing() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        try store.addDeadLetters((1...7).map { siteLetter($0 % 2 == 0 ? "even" : "odd", size: 1, at: Int64($0)) })
        #expect(try store.deadLetters(deviceID: "even").map(\.id) == [6, 4, 2])
        #expect(try store.deadLetters(limit: 2).map(\.id) == [7, 6])
        #expect(try store.deadLetters(afterID: 0, limit: 3).map(\.id) == [1, 2, 3])
        #expect(try store.deadLetters(afterID: 3, limit: 10).map(\.id) == [4, 5, 6, 7])
    }
}
