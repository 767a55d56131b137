import CSQLite

/// A schema's history: migrations registered in order, each applied once, in its own
/// transaction, and recorded by identifier in the table GRDB's migrator used,
/// `grdb_migrations(identifier TEXT NOT NULL PRIMARY KEY)`. Databases that GRDB migrated are so
/// recognised as migrated, and a database this layer migrates is one GRDB would recognise.
public struct DatabaseMigrator: Sendable {
    private var registered: [(identifier: String, migrate: @Sendable (Database) throws -> Void)] = []

    public init() {}

    /// The registered identifiers, in order.
    public var migrations: [String] { registered.map(\.identifier) }

    public mutating func registerMigration(
        _ identifier: String, migrate: @escaping @Sendable (Database) throws -> Void
    ) {
        precondition(!migrations.contains(identifier), "already registered migration: \(identifier)")
        registered.append((identifier, migrate))
    }

    /// Applies, in order, the registered migrations not applied yet, up to `target` (default:
    /// all). Identifiers in the table that are not registered (a newer version's) are left alone.
    public func migrate(_ writer: some DatabaseWriter, upTo target: String? = nil) throws {
        guard let last = registered.last?.identifier else { return }
        let target = target ?? last
        guard let targetIndex = migrations.firstIndex(of: target) else {
            throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "undefined migration: \(target)")
        }
        try writer.writeWithoutTransaction { db in
            try db.execute(sql: "CREATE TABLE IF NOT EXISTS grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY)")
            let applied = try appliedIdentifiers(db)
            if let lastApplied = migrations.lastIndex(where: applied.contains), lastApplied > targetIndex {
                throw DatabaseError(
                    resultCode: .SQLITE_MISUSE, message: "database is already migrated beyond migration \(target)")
            }
            for migration in registered[...targetIndex] where !applied.contains(migration.identifier) {
                try run(migration.identifier, migration.migrate, in: db)
            }
        }
    }

    /// As GRDB's default (deferred foreign key checks): foreign keys off during the migration,
    /// so that a table can be rebuilt, and checked before it commits.
    private func run(_ identifier: String, _ migrate: (Database) throws -> Void, in db: Database) throws {
        let foreignKeys = try Bool.fetchOne(db, sql: "PRAGMA foreign_keys") ?? false
        if foreignKeys { try db.execute(sql: "PRAGMA foreign_keys = OFF") }
        defer { if foreignKeys { try? db.execute(sql: "PRAGMA foreign_keys = ON") } }
        try db.inTransaction(.immediate) {
            try migrate(db)
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES (?)", arguments: [identifier])
            if foreignKeys, try Row.fetchOne(db, sql: "PRAGMA foreign_key_check") != nil {
                throw DatabaseError(
                    resultCode: ResultCode(rawValue: SQLITE_CONSTRAINT | 3 << 8),  // SQLITE_CONSTRAINT_FOREIGNKEY
                    message: "migration \(identifier) broke a foreign key constraint")
            }
            return .commit
        }
    }

    /// The identifiers recorded as applied, registered or not; none before the first migration.
    public func appliedIdentifiers(_ db: Database) throws -> Set<String> {
        do {
            return Set(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations"))
        } catch {
            if (try? db.tableExists("grdb_migrations")) == false { return [] }
            throw error
        }
    }
}
