// SQLiteDB: the state store's database layer, written by hand over SQLite's C API.
//
// Why not GRDB: GRDB imports Foundation (58 files, with no FoundationEssentials path), and full
// Foundation links FoundationInternationalization and through it ICU, 37.6 MiB of the 85.5 MiB
// the package installs (packaging/README.md, "Size"). The store needs a small part of GRDB, so
// this module is that part, under GRDB's names so the store's code reads the same:
//
// - `DatabasePool` (DatabasePool.swift): one writer connection behind a Mutex and read-only
//   reader connections; in WAL mode readers and the writer do not block each other.
//   `DatabaseQueue`: one connection.
// - `Database`: a connection, handed to one closure at a time, with its prepared statements
//   cached (`cachedStatement`) and finalized when it closes.
// - `Row`, `StatementArguments`, `DatabaseValueConvertible`: values in and out; blobs are [UInt8].
// - `DatabaseMigrator` (DatabaseMigrator.swift): GRDB's `grdb_migrations` table, so that the
//   databases gateways already have are recognised as migrated.
//
// Connections are set up as GRDB set up the store's: busy timeout, foreign keys on, extended
// result codes, double-quoted string literals refused, WAL mode for a pool that may write.
// Errors carry SQLite's code, its message and the SQL, never the bound values (they can hold
// secrets). Only the standard library, Synchronization and libc: no Foundation.

import CSQLite

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

public typealias SQLiteConnection = OpaquePointer
public typealias SQLiteStatement = OpaquePointer

/// SQLite copies what is bound with it before the bind call returns.
let sqliteTransient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

// MARK: - Errors

/// An SQLite result code. Extended codes are on, so `rawValue` may be one (`SQLITE_CONSTRAINT_NOTNULL`);
/// `primaryResultCode` is the primary code it refines (`SQLITE_CONSTRAINT`).
public struct ResultCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public var primaryResultCode: ResultCode { ResultCode(rawValue: rawValue & 0xff) }
    public var description: String { "\(rawValue) (\(String(cString: sqlite3_errstr(rawValue))))" }

    public static let SQLITE_ERROR = ResultCode(rawValue: CSQLite.SQLITE_ERROR)
    public static let SQLITE_BUSY = ResultCode(rawValue: CSQLite.SQLITE_BUSY)
    public static let SQLITE_READONLY = ResultCode(rawValue: CSQLite.SQLITE_READONLY)
    public static let SQLITE_CANTOPEN = ResultCode(rawValue: CSQLite.SQLITE_CANTOPEN)
    public static let SQLITE_CONSTRAINT = ResultCode(rawValue: CSQLite.SQLITE_CONSTRAINT)
    public static let SQLITE_MISMATCH = ResultCode(rawValue: CSQLite.SQLITE_MISMATCH)
    public static let SQLITE_MISUSE = ResultCode(rawValue: CSQLite.SQLITE_MISUSE)
    public static let SQLITE_NOTADB = ResultCode(rawValue: CSQLite.SQLITE_NOTADB)
}

/// A failure of SQLite or of this layer: the code, SQLite's message, the SQL (never the values
/// bound to it).
public struct DatabaseError: Error, Sendable, CustomStringConvertible {
    public var resultCode: ResultCode
    public var message: String
    public var sql: String?

    public init(resultCode: ResultCode, message: String? = nil, sql: String? = nil) {
        self.resultCode = resultCode
        self.message = message ?? String(cString: sqlite3_errstr(resultCode.rawValue))
        self.sql = sql
    }

    /// The error SQLite reports on `connection` for `code`.
    init(_ code: Int32, on connection: SQLiteConnection?, sql: String? = nil) {
        self.init(
            resultCode: ResultCode(rawValue: code), message: connection.map { String(cString: sqlite3_errmsg($0)) },
            sql: sql)
    }

    /// As GRDB described its errors (its format is in logs people read).
    public var description: String {
        var text = Substring(sql ?? "")
        let separators: Set<Character> = [" ", "\t", "\n", "\r", "\r\n", ";"]
        while let first = text.first, separators.contains(first) { text.removeFirst() }
        while let last = text.last, separators.contains(last) { text.removeLast() }
        return "SQLite error \(resultCode.rawValue): \(message)" + (sql == nil ? "" : " - while executing `\(text)`")
    }
}

// MARK: - Values

/// A value as SQLite stores it.
public enum DatabaseValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// A Swift type that is read from and bound to SQL values. `fromDatabaseValue` returns nil
/// when the value does not convert (a NULL for a non-optional type, text for a number).
public protocol DatabaseValueConvertible: Sendable {
    var databaseValue: DatabaseValue { get }
    static func fromDatabaseValue(_ value: DatabaseValue) -> Self?
}

extension Int64: DatabaseValueConvertible {}
extension Int: DatabaseValueConvertible {}
extension Int32: DatabaseValueConvertible {}

/// Integers are SQLite's 64-bit integers; a real converts if it is a whole number that fits.
extension DatabaseValueConvertible where Self: FixedWidthInteger & SignedInteger {
    public var databaseValue: DatabaseValue { .integer(Int64(self)) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Self? {
        switch value {
        case .integer(let v): Self(exactly: v)
        case .real(let v): Self(exactly: v)
        default: nil
        }
    }
}

extension Bool: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .integer(self ? 1 : 0) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Bool? {
        Int64.fromDatabaseValue(value).map { $0 != 0 }
    }
}

extension Double: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .real(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Double? {
        switch value {
        case .integer(let v): Double(v)
        case .real(let v): v
        default: nil
        }
    }
}

extension String: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .text(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> String? {
        if case .text(let v) = value { v } else { nil }
    }
}

/// A blob. An empty array is an empty blob, never NULL.
extension Array: DatabaseValueConvertible where Element == UInt8 {
    public var databaseValue: DatabaseValue { .blob(self) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> [UInt8]? {
        switch value {
        case .blob(let v): v
        case .text(let v): Array(v.utf8)
        default: nil
        }
    }
}

/// nil is NULL; reading NULL gives nil.
extension Optional: DatabaseValueConvertible where Wrapped: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { self?.databaseValue ?? .null }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Wrapped?? {
        value == .null ? .some(nil) : Wrapped.fromDatabaseValue(value).map { .some($0) }
    }
}

/// The values bound to a statement's `?` parameters, in order: `[deviceID, seq, payload]`.
public struct StatementArguments: ExpressibleByArrayLiteral, Sendable {
    public var values: [DatabaseValue]

    public init(_ values: [(any DatabaseValueConvertible)?]) { self.values = values.map { $0?.databaseValue ?? .null } }
    public init(arrayLiteral elements: (any DatabaseValueConvertible)?...) { self.init(elements) }

    public static func += (lhs: inout StatementArguments, rhs: StatementArguments) { lhs.values += rhs.values }
}

/// One row of a result, its values copied out of SQLite.
public struct Row: Sendable {
    public let columnNames: [String]
    public let values: [DatabaseValue]

    /// The value of the column at `index`, as `T`: `let seq: Int64 = row[0]`, `let rule: String? = row[3]`.
    /// Traps, as GRDB did, when the value does not convert (NULL for a non-optional `T`).
    public subscript<T: DatabaseValueConvertible>(_ index: Int) -> T {
        guard let value = T.fromDatabaseValue(values[index]) else {
            Self.cannotConvert(values[index], to: T.self, index)
        }
        return value
    }

    /// The value of the column named `column` (case-insensitive); a missing column reads as NULL.
    public subscript<T: DatabaseValueConvertible>(_ column: String) -> T {
        let name = column.lowercased()
        guard let index = columnNames.firstIndex(where: { $0.lowercased() == name }) else {
            guard let value = T.fromDatabaseValue(.null) else { Self.cannotConvert(.null, to: T.self, column) }
            return value
        }
        return self[index]
    }

    private static func cannotConvert(_ value: DatabaseValue, to type: Any.Type, _ column: Any) -> Never {
        // The kind of value only: the value itself may be a secret.
        let kind =
            switch value {
            case .null: "NULL"
            case .integer: "an integer"
            case .real: "a real"
            case .text: "text"
            case .blob: "a blob"
            }
        fatalError("SQLiteDB: column \(column) holds \(kind), which cannot be read as \(type)")
    }
}

// MARK: - Statements

/// A prepared statement. Finalized when released; cached ones live as long as their connection.
public final class Statement {
    public let sqliteStatement: SQLiteStatement
    public let sql: String
    /// The result's column names.
    public private(set) lazy var columnNames: [String] = (0..<sqlite3_column_count(sqliteStatement)).map {
        String(cString: sqlite3_column_name(sqliteStatement, $0))
    }

    init(_ statement: SQLiteStatement, sql: String) {
        sqliteStatement = statement
        self.sql = sql
    }

    deinit { sqlite3_finalize(sqliteStatement) }

    private func error(_ code: Int32) -> DatabaseError {
        DatabaseError(code, on: sqlite3_db_handle(sqliteStatement), sql: sql)
    }

    /// Resets the statement and binds `values` to its parameters, which must be as many.
    func bind<C: Collection<DatabaseValue>>(_ values: C) throws {
        sqlite3_reset(sqliteStatement)  // every parameter is bound anew: no sqlite3_clear_bindings
        let count = Int(sqlite3_bind_parameter_count(sqliteStatement))
        guard values.count == count else {
            throw DatabaseError(
                resultCode: .SQLITE_MISUSE,
                message: "wrong number of statement arguments: \(values.count) for \(count) parameter(s)", sql: sql)
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32 =
                switch value {
                case .null: sqlite3_bind_null(sqliteStatement, index)
                case .integer(let v): sqlite3_bind_int64(sqliteStatement, index, v)
                case .real(let v): sqlite3_bind_double(sqliteStatement, index, v)
                case .text(let v):
                    // The UTF-8 length, not the C string's: text may hold NUL characters.
                    v.withCString {
                        sqlite3_bind_text64(
                            sqliteStatement, index, $0, UInt64(v.utf8.count), sqliteTransient, UInt8(SQLITE_UTF8))
                    }
                case .blob(let v) where v.isEmpty:
                    // A nil pointer would bind NULL.
                    sqlite3_bind_zeroblob(sqliteStatement, index, 0)
                case .blob(let v):
                    v.withUnsafeBytes {
                        sqlite3_bind_blob64(sqliteStatement, index, $0.baseAddress, UInt64($0.count), sqliteTransient)
                    }
                }
            guard code == SQLITE_OK else { throw error(code) }
        }
    }

    /// Steps once: true with a row to read, false when done. On an error the statement is reset.
    func step() throws -> Bool {
        switch sqlite3_step(sqliteStatement) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let code:
            let failure = error(code)
            sqlite3_reset(sqliteStatement)
            throw failure
        }
    }

    /// The current row, copied.
    func row() -> Row {
        let values = (0..<Int32(columnNames.count)).map { column -> DatabaseValue in
            switch sqlite3_column_type(sqliteStatement, column) {
            case SQLITE_NULL: return .null
            case SQLITE_INTEGER: return .integer(sqlite3_column_int64(sqliteStatement, column))
            case SQLITE_FLOAT: return .real(sqlite3_column_double(sqliteStatement, column))
            case SQLITE_TEXT:
                // sqlite3_column_text before sqlite3_column_bytes, as SQLite documents.
                guard let text = sqlite3_column_text(sqliteStatement, column) else { return .text("") }
                let count = Int(sqlite3_column_bytes(sqliteStatement, column))
                return .text(String(decoding: UnsafeBufferPointer(start: text, count: count), as: UTF8.self))
            default:
                // An empty blob has a nil pointer, yet it is a blob, not NULL.
                let bytes = sqlite3_column_blob(sqliteStatement, column)
                let count = Int(sqlite3_column_bytes(sqliteStatement, column))
                return .blob(count == 0 ? [] : Array(UnsafeRawBufferPointer(start: bytes, count: count)))
            }
        }
        return Row(columnNames: columnNames, values: values)
    }

    /// Runs the statement to its end with `arguments`.
    public func execute(arguments: StatementArguments = []) throws {
        try bind(arguments.values)
        while try step() {}
    }
}

/// The rows of a statement, stepped one at a time: `while let row = try rows.next() { … }`.
public final class RowCursor {
    private let statement: Statement
    private var done = false

    init(_ statement: Statement) { self.statement = statement }

    deinit { sqlite3_reset(statement.sqliteStatement) }

    public func next() throws -> Row? {
        guard !done else { return nil }
        if try statement.step() { return statement.row() }
        done = true
        return nil
    }
}

extension Row {
    public static func fetchCursor(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> RowCursor
    {
        let statement = try db.makeStatement(sql: sql)
        try statement.bind(arguments.values)
        return RowCursor(statement)
    }

    public static func fetchAll(_ statement: Statement, arguments: StatementArguments = []) throws -> [Row] {
        try statement.bind(arguments.values)
        defer { sqlite3_reset(statement.sqliteStatement) }
        var rows: [Row] = []
        while try statement.step() { rows.append(statement.row()) }
        return rows
    }

    /// The first row, if any. The statement is reset after it (a pending read would keep its
    /// connection's snapshot, and so the WAL, alive).
    public static func fetchOne(_ statement: Statement, arguments: StatementArguments = []) throws -> Row? {
        try statement.bind(arguments.values)
        defer { sqlite3_reset(statement.sqliteStatement) }
        return try statement.step() ? statement.row() : nil
    }

    public static func fetchAll(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Row] {
        try fetchAll(db.makeStatement(sql: sql), arguments: arguments)
    }

    public static func fetchOne(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Row? {
        try fetchOne(db.makeStatement(sql: sql), arguments: arguments)
    }
}

extension DatabaseValueConvertible {
    /// The first column of the first row; nil without a row or for NULL.
    public static func fetchOne(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> Self? {
        guard let row = try Row.fetchOne(db, sql: sql, arguments: arguments), let first = row.values.first,
            first != .null
        else { return nil }
        return try convert(first, sql: sql)
    }

    /// The first column of every row.
    public static func fetchAll(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [Self] {
        try Row.fetchAll(db, sql: sql, arguments: arguments).map { try convert($0.values.first ?? .null, sql: sql) }
    }

    private static func convert(_ value: DatabaseValue, sql: String) throws -> Self {
        guard let converted = fromDatabaseValue(value) else {
            throw DatabaseError(resultCode: .SQLITE_MISMATCH, message: "cannot read a value as \(Self.self)", sql: sql)
        }
        return converted
    }
}

// MARK: - Connections

/// How a connection is opened and set up.
public struct Configuration: Sendable {
    public enum BusyMode: Sendable {
        /// SQLITE_BUSY at once when another connection holds the lock.
        case immediateError
        /// Retries for up to this many seconds.
        case timeout(Double)
    }

    /// Opens with SQLITE_OPEN_READONLY: never creates the file, never writes, never migrates.
    public var readonly = false
    public var busyMode = BusyMode.immediateError
    var setups: [@Sendable (Database) throws -> Void] = []

    public init() {}

    /// Runs `setup` on each connection when it opens (a pool's writer and each of its readers).
    public mutating func prepareDatabase(_ setup: @escaping @Sendable (Database) throws -> Void) {
        setups.append(setup)
    }
}

public enum TransactionKind: String, Sendable {
    case deferred = "DEFERRED"
    case immediate = "IMMEDIATE"
}

public enum TransactionCompletion: Sendable {
    case commit
    case rollback
}

/// A connection to a database. Not thread-safe: a pool or a queue hands it to one closure at a
/// time, and it must not be kept past that closure.
public final class Database {
    public let sqliteConnection: SQLiteConnection
    public let path: String
    private var statements: [String: Statement] = [:]
    private var isClosed = false

    init(path: String, configuration: Configuration) throws {
        var connection: SQLiteConnection?
        let flags = configuration.readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
        let code = sqlite3_open_v2(path, &connection, flags, nil)
        guard code == SQLITE_OK, let connection else {
            let error = DatabaseError(code == SQLITE_OK ? SQLITE_INTERNAL : code, on: connection)
            sqlite3_close_v2(connection)  // a failed open still has a handle to release (or nil)
            throw error
        }
        sqliteConnection = connection
        self.path = path
        sqlite3_extended_result_codes(connection, 1)
        if case .timeout(let seconds) = configuration.busyMode {
            sqlite3_busy_timeout(connection, Int32(seconds * 1000))
        }
        gh_sqlite3_disable_dqs(connection)
        try execute(sql: "PRAGMA foreign_keys = ON")  // as GRDB did by default
        for setup in configuration.setups { try setup(self) }
        // Reads the schema: a file that is not a database fails here, not at its first use.
        try execute(sql: "SELECT * FROM sqlite_master LIMIT 1")
    }

    deinit {
        // close_v2: should a statement outlive its connection (a kept cursor), the connection
        // closes when that statement is finalized.
        if !isClosed { close() }
    }

    /// Finalizes the cached statements and closes the connection (a pool's last connection to
    /// close checkpoints the WAL into the database and deletes it).
    func close() {
        statements.removeAll()
        sqlite3_close_v2(sqliteConnection)
        isClosed = true
    }

    /// Runs the SQL, which may hold several statements separated by `;`, to its end. Arguments
    /// bind to the statements' parameters in order.
    public func execute(sql: String, arguments: StatementArguments = []) throws {
        var remaining = arguments.values[...]
        try sql.withCString { start in
            var next: UnsafePointer<CChar>? = start
            while let current = next, current.pointee != 0 {
                var handle: SQLiteStatement?
                let code = sqlite3_prepare_v3(sqliteConnection, current, -1, 0, &handle, &next)
                guard code == SQLITE_OK else { throw DatabaseError(code, on: sqliteConnection, sql: sql) }
                guard let handle else { continue }  // only whitespace or a comment was left
                let statement = Statement(handle, sql: String(cString: sqlite3_sql(handle)))
                let count = min(Int(sqlite3_bind_parameter_count(handle)), remaining.count)
                try statement.bind(remaining.prefix(count))
                remaining = remaining.dropFirst(count)
                while try statement.step() {}
            }
        }
        guard remaining.isEmpty else {
            throw DatabaseError(
                resultCode: .SQLITE_MISUSE, message: "wrong number of statement arguments: \(remaining.count) too many",
                sql: sql)
        }
    }

    /// A new prepared statement for one SQL statement.
    public func makeStatement(sql: String) throws -> Statement { try prepare(sql, flags: 0) }

    /// The prepared statement for `sql`, prepared once per connection (SQLITE_PREPARE_PERSISTENT)
    /// and reused: for the statements of the hot paths.
    public func cachedStatement(sql: String) throws -> Statement {
        if let statement = statements[sql] { return statement }
        let statement = try prepare(sql, flags: UInt32(SQLITE_PREPARE_PERSISTENT))
        statements[sql] = statement
        return statement
    }

    private func prepare(_ sql: String, flags: UInt32) throws -> Statement {
        try sql.withCString { start in
            var handle: SQLiteStatement?
            var tail: UnsafePointer<CChar>?
            let code = sqlite3_prepare_v3(sqliteConnection, start, -1, flags, &handle, &tail)
            guard code == SQLITE_OK else { throw DatabaseError(code, on: sqliteConnection, sql: sql) }
            guard let handle else { throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "no statement", sql: sql) }
            let statement = Statement(handle, sql: sql)
            // Anything but whitespace after the first statement would be silently ignored.
            while let character = tail?.pointee, character != 0 {
                guard [32, 9, 10, 13, 59].contains(character) else {  // space, tab, newlines, ';'
                    throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "multiple statements found", sql: sql)
                }
                tail = tail.map { $0 + 1 }
            }
            return statement
        }
    }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    public var changesCount: Int { Int(sqlite3_changes(sqliteConnection)) }
    public var lastInsertedRowID: Int64 { sqlite3_last_insert_rowid(sqliteConnection) }
    public var isInsideTransaction: Bool { sqlite3_get_autocommit(sqliteConnection) == 0 }
    public var isReadOnly: Bool { sqlite3_db_readonly(sqliteConnection, "main") == 1 }

    public func tableExists(_ name: String) throws -> Bool {
        try Bool.fetchOne(
            self, sql: "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ? COLLATE NOCASE)",
            arguments: [name]) ?? false
    }

    /// Runs `body` in a transaction: committed if it returns `.commit`, rolled back if it returns
    /// `.rollback` or throws. IMMEDIATE by default (DEFERRED on a read-only connection), so that a
    /// write transaction waits for the lock up front instead of failing when it upgrades.
    public func inTransaction(_ kind: TransactionKind? = nil, _ body: () throws -> TransactionCompletion) throws {
        let kind = kind ?? (isReadOnly ? .deferred : .immediate)
        // Cached: every ingest batch and every delivery flush opens a transaction.
        try cachedStatement(sql: "BEGIN \(kind.rawValue) TRANSACTION").execute()
        do {
            switch try body() {
            case .commit: try cachedStatement(sql: "COMMIT TRANSACTION").execute()
            case .rollback: rollback()
            }
        } catch {
            rollback()
            throw error
        }
    }

    /// SQLite may have rolled back already (after SQLITE_FULL, SQLITE_IOERR, …).
    private func rollback() {
        if isInsideTransaction { try? execute(sql: "ROLLBACK TRANSACTION") }
    }

    /// WAL mode, as GRDB's DatabasePool sets it up. It does not set `synchronous` (GRDB set
    /// NORMAL here, after `prepareDatabase`): the store's `prepareDatabase` chooses it.
    func setUpWALMode() throws {
        guard try String.fetchOne(self, sql: "PRAGMA journal_mode = WAL") == "wal" else {
            throw DatabaseError(resultCode: .SQLITE_ERROR, message: "could not activate WAL mode at path: \(path)")
        }
        // A non-empty -wal file, as GRDB makes sure of: read-only connections then open the
        // database without SQLITE_CANTOPEN (GRDB issue #102).
        var info = stat()
        if stat(path + "-wal", &info) != 0 || info.st_size == 0 {
            try inTransaction {
                try execute(
                    sql: "CREATE TABLE sqlitedb_wal_init (id INTEGER PRIMARY KEY); DROP TABLE sqlitedb_wal_init")
                return .commit
            }
        }
    }
}
