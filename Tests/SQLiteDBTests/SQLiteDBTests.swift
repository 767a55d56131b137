import CSQLite
import Dispatch
import GatehouseTestSupport
import SQLiteDB
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// Runs SQL through SQLite's own sqlite3_exec, not through SQLiteDB (databases as others left them).
func rawExec(_ path: String, _ sql: String) throws {
    var connection: OpaquePointer?
    defer { sqlite3_close(connection) }
    try #require(sqlite3_open(path, &connection) == SQLITE_OK)
    var message: UnsafeMutablePointer<CChar>?
    let code = sqlite3_exec(connection, sql, nil, nil, &message)
    defer { sqlite3_free(message) }
    try #require(code == SQLITE_OK, "\(message.map { String(cString: $0) } ?? "")")
}

func busyConfiguration(_ seconds: Double = 5) -> Configuration {
    var configuration = Configuration()
    configuration.busyMode = .timeout(seconds)
    return configuration
}

@Suite("SQLiteDB: values, statements, errors")
struct ValueTests {
    @Test("each type is bound and read back with its storage class; NULL, empty text and empty blobs stay apart")
    func roundTrip() throws {
        let dir = TempDir()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        let cases: [(value: (any DatabaseValueConvertible)?, type: String, read: (Row) -> Bool)] = [
            (Int64.max, "integer", { ($0[1] as Int64) == .max }),
            (Int64.min, "integer", { ($0[1] as Int64) == .min }),
            (42 as Int, "integer", { ($0[1] as Int) == 42 }),
            (-7 as Int32, "integer", { ($0[1] as Int32) == -7 }),
            (true, "integer", { ($0[1] as Bool) && ($0[1] as Int) == 1 }),
            (false, "integer", { !($0[1] as Bool) }),
            (1.5, "real", { ($0[1] as Double) == 1.5 }),
            ("", "text", { ($0[1] as String) == "" && ($0[2] as Int) == 0 }),
            ("héllo 🚀", "text", { ($0[1] as String) == "héllo 🚀" }),
            ("a\u{0}b", "text", { ($0[1] as String) == "a\u{0}b" && ($0[2] as Int) == 3 }),
            ([UInt8](), "blob", { ($0[1] as [UInt8]) == [] && ($0[2] as Int) == 0 }),
            ([0] as [UInt8], "blob", { ($0[1] as [UInt8]) == [0] }),
            ([0, 0, 0] as [UInt8], "blob", { ($0[1] as [UInt8]) == [0, 0, 0] && ($0[2] as Int) == 3 }),
            ([1, 0, 255] as [UInt8], "blob", { ($0[1] as [UInt8]) == [1, 0, 255] }),
            (nil, "null", { ($0[1] as Int64?) == nil && ($0[1] as [UInt8]?) == nil && ($0[1] as String?) == nil }),
            (Int64?.none, "null", { ($0[1] as Int64?) == nil }),
            (Int64?.some(5), "integer", { ($0[1] as Int64?) == 5 }),
        ]
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE v (x)")  // no affinity: stored as bound
            for (index, test) in cases.enumerated() {
                try db.execute(sql: "INSERT INTO v (rowid, x) VALUES (?, ?)", arguments: [index, test.value])
                let row = try #require(
                    try Row.fetchOne(
                        db, sql: "SELECT typeof(x), x, length(CAST(x AS BLOB)) AS bytes FROM v WHERE rowid = ?",
                        arguments: [index]))
                #expect(row[0] as String == test.type, "case \(index)")
                #expect(test.read(row), "case \(index)")
            }
        }
    }

    @Test("columns by name, case-insensitively; a missing column reads as NULL")
    func namedColumns() throws {
        let dir = TempDir()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        try queue.read { db in
            let row = try #require(try Row.fetchOne(db, sql: "SELECT 1 AS seq, 'd' AS Device, NULL AS gone"))
            #expect(row["seq"] as Int64 == 1)
            #expect(row["device"] as String == "d")
            #expect(row["gone"] as Int64? == nil)
            #expect(row["nope"] as String? == nil)
            #expect(row.columnNames == ["seq", "Device", "gone"])
        }
    }

    @Test("value fetches: nil without a row or for NULL; NULL where a value must be is an error")
    func valueFetches() throws {
        let dir = TempDir()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('a'), (NULL)")
            #expect(try Int64.fetchOne(db, sql: "SELECT 1 FROM t WHERE 0") == nil)
            #expect(try Int64.fetchOne(db, sql: "SELECT NULL") == nil)
            #expect(try String.fetchAll(db, sql: "SELECT x FROM t WHERE x IS NOT NULL") == ["a"])
            let error = #expect(throws: DatabaseError.self) { _ = try String.fetchAll(db, sql: "SELECT x FROM t") }
            #expect(error?.resultCode == .SQLITE_MISMATCH)
            #expect(try String?.fetchAll(db, sql: "SELECT x FROM t ORDER BY x") == [nil, "a"])
            #expect(try db.tableExists("T") && !db.tableExists("u"))
        }
    }

    @Test("a failing statement's error has SQLite's code and message and the SQL, never the bound values")
    func errors() throws {
        let dir = TempDir()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        try queue.write { db in
            try db.execute(sql: "CREATE TABLE t (a TEXT UNIQUE, b TEXT NOT NULL)")
            let insert = "INSERT INTO t (a, b) VALUES (?, ?)"
            let notNull = #expect(throws: DatabaseError.self) {
                try db.execute(sql: insert, arguments: ["secret-token-1", nil])
            }
            #expect(notNull?.resultCode.primaryResultCode == .SQLITE_CONSTRAINT)
            #expect(notNull?.resultCode.rawValue == 1299)  // SQLITE_CONSTRAINT_NOTNULL: extended codes are on
            #expect(notNull?.message == "NOT NULL constraint failed: t.b")
            #expect(notNull?.sql == insert)
            #expect(notNull.map { "\($0)".contains(insert) } == true)
            #expect(notNull.map { "\($0)".contains("secret-token-1") } == false)

            // A cached statement, the same way.
            let cached = try db.cachedStatement(sql: insert)
            #expect(try db.cachedStatement(sql: insert) === cached)
            try cached.execute(arguments: ["secret-token-2", "x"])
            let unique = #expect(throws: DatabaseError.self) { try cached.execute(arguments: ["secret-token-2", "y"]) }
            #expect(unique?.resultCode.rawValue == 2067)  // SQLITE_CONSTRAINT_UNIQUE
            #expect(unique?.message == "UNIQUE constraint failed: t.a")
            #expect(unique.map { "\($0)".contains("secret-token-2") } == false)
            try cached.execute(arguments: ["other", "z"])  // usable after the failure

            let syntax = #expect(throws: DatabaseError.self) { try db.execute(sql: "SELEC 1") }
            #expect(syntax?.resultCode == .SQLITE_ERROR)
            #expect(syntax?.message.contains("syntax error") == true)
            #expect(syntax?.sql == "SELEC 1")

            // In SQL of several statements, the one that failed; described as GRDB did.
            let second = #expect(throws: DatabaseError.self) {
                try db.execute(sql: "INSERT INTO t (a, b) VALUES ('k', 'v');\n  INSERT INTO t (a) VALUES ('j');\n")
            }
            #expect(second?.sql?.contains("'k'") == false)
            #expect(
                second?.description
                    == "SQLite error 1299: NOT NULL constraint failed: t.b - while executing `INSERT INTO t (a) VALUES ('j')`"
            )

            let count = #expect(throws: DatabaseError.self) {
                try db.execute(sql: "SELECT ?", arguments: ["secret-token-3", 2])
            }
            #expect(count?.resultCode == .SQLITE_MISUSE)
            #expect(count.map { "\($0)".contains("secret-token-3") } == false)
            #expect(throws: DatabaseError.self) { try db.execute(sql: "SELECT ?, ?", arguments: [1]) }
            #expect(throws: DatabaseError.self) { _ = try db.makeStatement(sql: "SELECT 1; SELECT 2") }
            #expect(try String.fetchAll(db, sql: "SELECT a FROM t ORDER BY a") == ["k", "other", "secret-token-2"])
        }
    }

    @Test("several statements in one execute, the arguments bound in order")
    func multipleStatements() throws {
        let dir = TempDir()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        try queue.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE t (x INTEGER);
                    INSERT INTO t VALUES (?); -- a comment
                    INSERT INTO t VALUES (?), (?);
                    """, arguments: [1, 2, 3])
            #expect(try Int.fetchAll(db, sql: "SELECT x FROM t ORDER BY x") == [1, 2, 3])
            #expect(db.changesCount == 2)
        }
    }

    @Test("double-quoted text is an identifier, never a string (as GRDB set connections up)")
    func doubleQuotes() throws {
        let dir = TempDir()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        try queue.read { db in
            let error = #expect(throws: DatabaseError.self) { _ = try String.fetchOne(db, sql: #"SELECT "nope""#) }
            #expect(error?.message.contains("no such column") == true)
        }
    }
}

@Suite("SQLiteDB: transactions, cursors, connections")
struct ConnectionTests {
    @Test("a write that throws is rolled back, and the writer works on")
    func rollback() throws {
        let dir = TempDir()
        struct Refused: Error {}
        let pool = try DatabasePool(path: dir.file("t.db"))
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (x INTEGER NOT NULL)") }
        #expect(throws: Refused.self) {
            try pool.write { db in
                try db.execute(sql: "INSERT INTO t VALUES (1)")
                throw Refused()
            }
        }
        // A failing statement after a good one: both gone.
        #expect(throws: DatabaseError.self) {
            try pool.write { db in
                try db.execute(sql: "INSERT INTO t VALUES (2)")
                try db.execute(sql: "INSERT INTO t VALUES (NULL)")
            }
        }
        try pool.writeWithoutTransaction { db in
            try db.inTransaction {
                try db.execute(sql: "INSERT INTO t VALUES (3)")
                return .rollback
            }
            #expect(!db.isInsideTransaction)
        }
        #expect(try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM t") } == 0)
        try pool.write { db in try db.execute(sql: "INSERT INTO t VALUES (4)") }
        #expect(try pool.read { db in try Int.fetchAll(db, sql: "SELECT x FROM t") } == [4])
    }

    @Test("a cursor steps lazily; a write runs beside its unread rows in the same transaction")
    func cursor() throws {
        let dir = TempDir()
        let pool = try DatabasePool(path: dir.file("t.db"))
        try pool.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE t (x INTEGER);
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                    INSERT INTO t SELECT i FROM n;
                    """)
        }
        try pool.write { db in
            let rows = try Row.fetchCursor(db, sql: "SELECT x FROM t WHERE x > ? ORDER BY x", arguments: [10])
            var seen: [Int] = []
            while seen.count < 3, let row = try rows.next() { seen.append(row[0]) }
            #expect(seen == [11, 12, 13])
            try db.execute(sql: "DELETE FROM t WHERE x <= ?", arguments: [seen.last])
        }
        #expect(try pool.read { db in try Int.fetchOne(db, sql: "SELECT min(x) FROM t") } == 14)
    }

    @Test("WAL: a read runs while a write transaction is open, sees the last commit, and keeps its snapshot")
    func concurrentReads() throws {
        let dir = TempDir()
        let pool = try DatabasePool(path: dir.file("t.db"), configuration: busyConfiguration())
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)") }
        let inWrite = DispatchSemaphore(value: 0)
        let commit = DispatchSemaphore(value: 0)
        let written = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? pool.write { db in
                try db.execute(sql: "INSERT INTO t VALUES (2)")
                inWrite.signal()
                commit.wait()
            }
            written.signal()
        }
        // A write that failed would never signal: fail, not hang.
        try #require(inWrite.wait(timeout: .now() + 10) == .success)
        // Another thread reads while the write transaction holds its uncommitted row; then,
        // once the writer commits, reads again in the same read transaction.
        let counts = Mutex<[Int]>([])
        let readOnce = DispatchSemaphore(value: 0)
        let readTwice = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? pool.read { db in
                counts.withLock { $0.append((try? Int.fetchOne(db, sql: "SELECT count(*) FROM t")) ?? -1) }
                readOnce.signal()
                written.wait()
                counts.withLock { $0.append((try? Int.fetchOne(db, sql: "SELECT count(*) FROM t")) ?? -1) }
            }
            readTwice.signal()
        }
        let readDuringWrite = readOnce.wait(timeout: .now() + 3) == .success
        commit.signal()
        #expect(readDuringWrite, "the read waited for the writer")
        #expect(readTwice.wait(timeout: .now() + 5) == .success)
        #expect(counts.withLock { $0 } == [1, 1])  // the uncommitted row unseen; then the same snapshot
        #expect(try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM t") } == 2)
    }

    @Test("a read that stops after one row releases its snapshot: the next read sees new commits")
    func fetchOneResets() throws {
        let dir = TempDir()
        let pool = try DatabasePool(path: dir.file("t.db"))
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2)") }
        let first = try pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT x FROM t ORDER BY x")).map { $0[0] as Int }
        }
        #expect(first == 1)
        try pool.write { db in try db.execute(sql: "INSERT INTO t VALUES (3)") }
        #expect(try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM t") } == 3)
    }

    @Test("a pool is set up as GRDB's: WAL, foreign keys, busy timeouts, prepareDatabase on every connection")
    func setUp() throws {
        let dir = TempDir()
        var configuration = busyConfiguration()
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA cache_size = -1234") }
        let pool = try DatabasePool(path: dir.file("t.db"), configuration: configuration)
        let pragmas = "SELECT * FROM pragma_journal_mode, pragma_foreign_keys, pragma_busy_timeout, pragma_cache_size"
        let writer = try pool.write { db in try Row.fetchOne(db, sql: pragmas)!.values }
        #expect(writer == [.text("wal"), .integer(1), .integer(5000), .integer(-1234)])
        let reader = try pool.read { db in try Row.fetchOne(db, sql: pragmas)!.values }
        #expect(reader == [.text("wal"), .integer(1), .integer(10_000), .integer(-1234)])
        #expect(try pool.read { db in db.isReadOnly })
    }

    @Test("the busy timeout waits for another connection's lock; without one the write fails with SQLITE_BUSY")
    func busy() throws {
        let dir = TempDir()
        let path = dir.file("t.db")
        let pool = try DatabasePool(path: path, configuration: busyConfiguration())
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (x INTEGER)") }
        let impatient = try DatabasePool(path: path)
        // Another connection holds the write lock, as RelayTests' locker does.
        let locker = try DatabaseQueue(path: path, configuration: busyConfiguration())
        let locked = DispatchSemaphore(value: 0)
        let unlocked = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? locker.writeWithoutTransaction { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.signal()
                usleep(400_000)
                try db.execute(sql: "COMMIT")
            }
            unlocked.signal()
        }
        locked.wait()
        let error = #expect(throws: DatabaseError.self) {
            try impatient.write { db in try db.execute(sql: "INSERT INTO t VALUES (0)") }
        }
        #expect(error?.resultCode.primaryResultCode == .SQLITE_BUSY)
        let clock = ContinuousClock()
        let waited = try clock.measure { try pool.write { db in try db.execute(sql: "INSERT INTO t VALUES (1)") } }
        unlocked.wait()
        #expect(waited > .milliseconds(200), "the write did not wait for the lock")
        #expect(try pool.read { db in try Int.fetchAll(db, sql: "SELECT x FROM t") } == [1])
    }

    @Test("closing finalizes the cached statements: the last connection checkpoints and removes the WAL")
    func close() throws {
        let dir = TempDir()
        let path = dir.file("t.db")
        do {
            let pool = try DatabasePool(path: path)
            try pool.write { db in
                try db.execute(sql: "CREATE TABLE t (x INTEGER)")
                try db.cachedStatement(sql: "INSERT INTO t VALUES (?)").execute(arguments: [1])
            }
            _ = try pool.read { db in try Row.fetchAll(db.cachedStatement(sql: "SELECT x FROM t")) }
            #expect(exists(path + "-wal"))
        }
        #expect(!exists(path + "-wal"), "a connection was left open")
        let queue = try DatabaseQueue(path: path)
        let values = try queue.read { db in try Row.fetchAll(db.cachedStatement(sql: "SELECT x FROM t")) }
        #expect(values.map { $0[0] as Int } == [1])
        try queue.writeWithoutTransaction { db in _ = try String.fetchOne(db, sql: "PRAGMA journal_mode") }
        #expect(exists(path + "-wal"))
        queue.close()
        #expect(!exists(path + "-wal"), "the queue's connection was left open")
        #expect(throws: DatabaseError.self) { try queue.read { _ in } }
    }

    @Test("read-only: never creates the file, reads, refuses every write, leaves the journal mode")
    func readOnly() throws {
        let dir = TempDir()
        var configuration = Configuration()
        configuration.readonly = true
        let missing = dir.file("missing.db")
        let error = #expect(throws: DatabaseError.self) {
            _ = try DatabasePool(path: missing, configuration: configuration)
        }
        #expect(error?.resultCode == .SQLITE_CANTOPEN)
        #expect(!exists(missing))

        let notADatabase = dir.file("text.db")
        let file = try #require(fopen(notADatabase, "w"))
        fputs(String(repeating: "not a database\n", count: 20), file)
        fclose(file)
        let garbage = #expect(throws: DatabaseError.self) {
            _ = try DatabasePool(path: notADatabase, configuration: configuration)
        }
        #expect(garbage?.resultCode == .SQLITE_NOTADB)

        let path = dir.file("t.db")
        try rawExec(path, "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)")  // rollback journal
        let pool = try DatabasePool(path: path, configuration: configuration)
        #expect(try pool.read { db in try Int.fetchAll(db, sql: "SELECT x FROM t") } == [1])
        let write = #expect(throws: DatabaseError.self) {
            try pool.write { db in try db.execute(sql: "INSERT INTO t VALUES (2)") }
        }
        #expect(write?.resultCode.primaryResultCode == .SQLITE_READONLY)
        #expect(throws: DatabaseError.self) {
            try pool.writeWithoutTransaction { db in try db.execute(sql: "CREATE TABLE u (y)") }
        }
        #expect(try pool.read { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") } == "delete")
        #expect(try pool.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") } == 1)
        #expect(try pool.read { db in try Int.fetchAll(db, sql: "SELECT x FROM t") } == [1])
    }
}

@Suite("SQLiteDB: the migrator and GRDB's grdb_migrations")
struct MigratorTests {
    final class Runs: Sendable {
        let names = Mutex<[String]>([])
        func record(_ name: String) { names.withLock { $0.append(name) } }
        var all: [String] { names.withLock { $0 } }
    }

    func migrator(_ runs: Runs, failing: String? = nil) -> DatabaseMigrator {
        struct Failed: Error {}
        var migrator = DatabaseMigrator()
        for (name, table) in [("m1", "a"), ("m2", "b"), ("m3", "c")] {
            migrator.registerMigration(name) { db in
                runs.record(name)
                try db.execute(sql: "CREATE TABLE \(table) (x INTEGER)")
                if name == failing { throw Failed() }
            }
        }
        return migrator
    }

    func applied(_ writer: DatabaseQueue) throws -> [String] {
        try writer.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid") }
    }

    @Test("a new database: GRDB's table, every migration once, in order; up to a target, then on")
    func fresh() throws {
        let dir = TempDir()
        let runs = Runs()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        try migrator(runs).migrate(queue, upTo: "m2")
        #expect(runs.all == ["m1", "m2"])
        try migrator(runs).migrate(queue)
        try migrator(runs).migrate(queue)
        #expect(runs.all == ["m1", "m2", "m3"])
        #expect(try applied(queue) == ["m1", "m2", "m3"])
        let table = try queue.read { db in
            try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'grdb_migrations'")
        }
        #expect(table == "CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
        #expect(try queue.read { db in try migrator(runs).appliedIdentifiers(db) } == ["m1", "m2", "m3"])
        #expect(throws: DatabaseError.self) { try migrator(runs).migrate(queue, upTo: "m1") }  // already beyond
        #expect(throws: DatabaseError.self) { try migrator(runs).migrate(queue, upTo: "m9") }
    }

    @Test("a database GRDB migrated: what it applied is not run again, identifiers it does not know are kept")
    func grdbLeftIt() throws {
        let dir = TempDir()
        let path = dir.file("t.db")
        // As GRDB's migrator leaves a database (its DDL, WAL from its pool), written by plain SQLite.
        try rawExec(
            path,
            """
            PRAGMA journal_mode = WAL;
            CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
            CREATE TABLE a (x INTEGER);
            INSERT INTO grdb_migrations (identifier) VALUES ('m1');
            CREATE TABLE b (x INTEGER);
            INSERT INTO grdb_migrations (identifier) VALUES ('m2');
            """)
        let runs = Runs()
        let queue = try DatabaseQueue(path: path)
        #expect(try queue.read { db in try migrator(runs).appliedIdentifiers(db) } == ["m1", "m2"])
        try migrator(runs).migrate(queue)  // m1 and m2 again would fail: their tables exist
        #expect(runs.all == ["m3"])
        #expect(try applied(queue) == ["m1", "m2", "m3"])

        try queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations VALUES ('v99-from-the-future')") }
        try migrator(runs).migrate(queue)
        #expect(runs.all == ["m3"])
        #expect(try queue.read { db in try migrator(runs).appliedIdentifiers(db) }.contains("v99-from-the-future"))
    }

    @Test("before any migration no identifier is applied, even on a read-only connection")
    func noTable() throws {
        let dir = TempDir()
        let path = dir.file("t.db")
        try rawExec(path, "CREATE TABLE unrelated (x)")
        var configuration = Configuration()
        configuration.readonly = true
        let queue = try DatabaseQueue(path: path, configuration: configuration)
        #expect(try queue.read { db in try migrator(Runs()).appliedIdentifiers(db) } == [])
    }

    @Test("a failing migration is rolled back and not recorded; those before it stay")
    func failure() throws {
        let dir = TempDir()
        let runs = Runs()
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        #expect(throws: (any Error).self) { try migrator(runs, failing: "m2").migrate(queue) }
        #expect(try applied(queue) == ["m1"])
        #expect(try queue.read { db in try (db.tableExists("a"), db.tableExists("b")) } == (true, false))
        try migrator(runs).migrate(queue)
        #expect(try applied(queue) == ["m1", "m2", "m3"])
    }

    @Test("foreign keys are checked before a migration commits, and on again after it")
    func foreignKeys() throws {
        let dir = TempDir()
        var migrator = DatabaseMigrator()
        migrator.registerMigration("parent") { db in
            try db.execute(
                sql: """
                    CREATE TABLE parent (id INTEGER PRIMARY KEY);
                    CREATE TABLE child (parent_id INTEGER REFERENCES parent(id));
                    """)
        }
        migrator.registerMigration("orphan") { db in try db.execute(sql: "INSERT INTO child VALUES (42)") }
        let queue = try DatabaseQueue(path: dir.file("t.db"))
        let error = #expect(throws: DatabaseError.self) { try migrator.migrate(queue) }
        #expect(error?.resultCode.primaryResultCode == .SQLITE_CONSTRAINT)
        #expect(try applied(queue) == ["parent"])
        #expect(try queue.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM child") } == 0)
        #expect(try queue.read { db in try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") } == true)
    }
}
