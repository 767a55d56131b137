import FoundationEssentials
import GatehouseBasics
import GatehouseTestSupport
import SQLiteDB
import Testing

@testable import GatehouseStore

/// How the store sets up its connections (SQLiteDB since GRDB was dropped).
@Suite("State store: connections")
struct StoreConnectionTests {
    func synchronous(_ store: StateStore) throws -> Int? {
        try store.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
    }

    @Test("commits are synced as the durability says from the first one on, and again after an unsynced write")
    func durability() throws {
        let dir = TempDir()
        let full = try StateStore(path: dir.file("full.db"))
        // 2: FULL. (With GRDB it was NORMAL until the first unsynced write: its pool set WAL's
        // NORMAL after the store's prepareDatabase.)
        #expect(try synchronous(full) == 2)
        let during = try full.writeUnsynced("probe") { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
        #expect(during == 0)
        #expect(try synchronous(full) == 2)
        try full.setLinkStates([LinkStateChange(deviceID: "d", state: "up", reason: "", atMS: 1)])
        #expect(try synchronous(full) == 2)
        #expect(try synchronous(StateStore(path: dir.file("normal.db"), durability: .normal)) == 1)
    }

    @Test("WAL, a 5 s busy timeout and foreign keys, as under GRDB")
    func pragmas() throws {
        let dir = TempDir()
        let store = try StateStore(path: dir.file("state.db"))
        let row = try store.pool.writeWithoutTransaction { db in
            try Row.fetchOne(db, sql: "SELECT * FROM pragma_journal_mode, pragma_busy_timeout, pragma_foreign_keys")
        }
        #expect(row?.values == [.text("wal"), .integer(5000), .integer(1)])
    }

    @Test("the CLI's reader refuses to write, and leaves the database as it was")
    func readerRefusesWrites() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        _ = try StateStore(path: path)
        let reader = try StateStore(readingFrom: path)
        let error = #expect(throws: StoreError.self) {
            try reader.writeStatus(DaemonStatus(pid: 1, version: "x", startedMS: 1, heartbeatMS: 1))
        }
        #expect(error?.code == .writeFailed)
        #expect((error?.underlying as? DatabaseError)?.resultCode.primaryResultCode == .SQLITE_READONLY)
        #expect(try reader.readStatus() == nil)
    }

    @Test("the database's folder is made if missing; its name is found as NSString found it")
    func directory() throws {
        let dir = TempDir()
        let path = dir.file("var/lib/gatehouse/state.db")
        _ = try StateStore(path: path)
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(PathText.directory(of: "/var/lib/gatehouse/state.db") == "/var/lib/gatehouse")
        #expect(PathText.directory(of: "/var/lib//gatehouse/") == "/var/lib")
        #expect(PathText.directory(of: "/state.db") == "/")
        #expect(PathText.directory(of: "state.db") == "")
        #expect(PathText.directory(of: "data/state.db") == "data")
        #expect(PathText.directory(of: "/") == "/")
        #expect(PathText.directory(of: "") == "")
        #expect(PathText.directory(of: "a//b") == "a")
        #expect(PathText.directory(of: "//x") == "/")
    }
}
