import Synchronization

/// A connection as a pool or a queue keeps it: it moves between threads (in and out of a
/// Mutex), but only one closure at a time uses it, so `Database` itself need not be Sendable.
struct Owned: @unchecked Sendable {
    let db: Database
}

/// What `DatabaseMigrator` migrates: a pool or a queue.
public protocol DatabaseWriter: Sendable {
    /// Runs `body` on the writer connection, outside any transaction.
    func writeWithoutTransaction<T>(_ body: (Database) throws -> T) throws -> T
    /// Runs `body` in a read transaction: one snapshot of the database.
    func read<T>(_ body: (Database) throws -> T) throws -> T
}

extension DatabaseWriter {
    /// Runs `body` in a write transaction (IMMEDIATE): committed when it returns, rolled back when it throws.
    public func write<T>(_ body: (Database) throws -> T) throws -> T {
        try writeWithoutTransaction { db in try db.transaction(nil, body) }
    }
}

extension Database {
    /// `body` in a transaction (`inTransaction`'s kind), committed when it returns, rolled back
    /// when it throws.
    public func transaction<T>(_ kind: TransactionKind? = nil, _ body: (Database) throws -> T) throws -> T {
        var result: T?
        try inTransaction(kind) {
            result = try body(self)
            return .commit
        }
        return result!
    }
}

/// The database through one writer connection (guarded by a Mutex) and read-only reader
/// connections, in WAL mode: reads run beside the write. Readers are opened when needed and
/// up to `maximumIdleReaders` are kept for the next reads.
public final class DatabasePool: DatabaseWriter, Sendable {
    public let path: String
    public let configuration: Configuration
    private let writer: Mutex<Owned>
    private let idleReaders = Mutex<[Owned]>([])
    static let maximumIdleReaders = 4

    /// Opens (unless `configuration.readonly`, creating) the database and puts it in WAL mode
    /// (unless read-only).
    public init(path: String, configuration: Configuration = Configuration()) throws {
        self.path = path
        self.configuration = configuration
        let db = try Database(path: path, configuration: configuration)
        if !configuration.readonly { try db.setUpWALMode() }
        writer = Mutex(Owned(db: db))
    }

    deinit {
        // Readers first: the writer, closing last, checkpoints and removes the WAL.
        idleReaders.withLock { $0.removeAll() }
    }

    public func writeWithoutTransaction<T>(_ body: (Database) throws -> T) throws -> T {
        var result: T?
        try writer.withLock { owned in
            // A transaction left open (a ROLLBACK that failed) would make every later BEGIN fail.
            defer { if owned.db.isInsideTransaction { try? owned.db.execute(sql: "ROLLBACK TRANSACTION") } }
            result = try body(owned.db)
        }
        return result!
    }

    /// Runs `body` on a reader connection, in a transaction: it sees one snapshot of the
    /// database, as of its first read, whatever the writer commits meanwhile.
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        let reader = try idleReaders.withLock { $0.popLast() } ?? openReader()
        defer {
            // A reader whose transaction did not end (a failed ROLLBACK) is not used again.
            if !reader.db.isInsideTransaction {
                idleReaders.withLock { readers in
                    if readers.count < Self.maximumIdleReaders { readers.append(reader) }
                }
            }
        }
        return try reader.db.transaction(nil, body)
    }

    private func openReader() throws -> Owned {
        var configuration = configuration
        configuration.readonly = true
        // As GRDB's pool readers: a reader waits longer (WAL recovery, the last connection's
        // checkpoint), since the point of WAL readers is not to fail with SQLITE_BUSY.
        configuration.busyMode = .timeout(10)
        return Owned(db: try Database(path: path, configuration: configuration))
    }
}

/// The database through one connection, guarded by a Mutex: for tests and one-off reads.
public final class DatabaseQueue: DatabaseWriter, Sendable {
    private let connection: Mutex<Owned?>

    public init(path: String, configuration: Configuration = Configuration()) throws {
        connection = Mutex(Owned(db: try Database(path: path, configuration: configuration)))
    }

    public func writeWithoutTransaction<T>(_ body: (Database) throws -> T) throws -> T {
        var result: T?
        try connection.withLock { owned in
            guard let owned else { throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "connection is closed") }
            result = try body(owned.db)
        }
        return result!
    }

    /// Runs `body` in a transaction (DEFERRED: it does not take the write lock).
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        try writeWithoutTransaction { db in try db.transaction(.deferred, body) }
    }

    /// Closes the connection now; later accesses throw.
    public func close() {
        connection.withLock { owned in
            owned?.db.close()
            owned = nil
        }
    }
}
