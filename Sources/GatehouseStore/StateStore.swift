import FoundationEssentials
import GatehouseBasics
import IoTHubWire
import SQLiteDB

/// The gateway's state on disk: one SQLite database in WAL mode holding the device registry, the
/// outbox, and the daemon's status. The daemon writes it; `gatehouse status` reads it.
///
/// Durability: every outbox append is one transaction. With `synchronous = FULL` (the default)
/// SQLite fsyncs the WAL before the commit returns, so a committed message survives a power cut;
/// `NORMAL` survives a crash of the process (kill -9) but not of the machine.
public final class StateStore: Sendable {
    public enum Durability: String, Sendable, CaseIterable {
        case full
        case normal
    }

    public let path: String
    let pool: DatabasePool
    /// The `synchronous` level of ordinary commits ("FULL" or "NORMAL").
    let synchronous: String

    /// Opens (creating if needed) the database at `path` and migrates it forward.
    public init(path: String, durability: Durability = .full) throws(StoreError) {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        let synchronous = durability == .full ? "FULL" : "NORMAL"
        self.synchronous = synchronous
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
        }
        do {
            let directory = PathText.directory(of: path)
            if !directory.isEmpty {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            }
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.read { db in try Self.refuseNewerSchema(db, path: path) }
            try Self.migrator.migrate(pool)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(code: .cannotOpen, message: "cannot open state database \(path)", underlying: error)
        }
    }

    /// Opens an existing database for reading only (the CLI). Never creates or migrates.
    public init(readingFrom path: String) throws(StoreError) {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else {
            throw StoreError(
                code: .cannotOpen, message: "no state database at \(path); is gatehoused running with this config?")
        }
        synchronous = "NORMAL"
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try pool.read { db in try Self.refuseNewerSchema(db, path: path) }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(code: .cannotOpen, message: "cannot open state database \(path)", underlying: error)
        }
    }

    /// What opening the database for real would do to it, found without writing to it
    /// (`gatehoused --check`, which must leave the database as it is: docs/packaging.md).
    public struct SchemaReport: Sendable, Equatable {
        /// Whether the file exists (if not, the first real start creates it).
        public var exists: Bool
        /// The migrations the first real start would apply, in order.
        public var pending: [String]
        /// The migrations already applied.
        public var applied: Int
    }

    /// Reads the schema of the database at `path` read-only: refuses one that a newer gatehouse
    /// migrated (as the real start does, `.newerSchema`) and lists the migrations a start would
    /// apply. Never creates, migrates or writes the database.
    public static func inspect(path: String) throws(StoreError) -> SchemaReport {
        let all = migrator.migrations
        guard FileManager.default.fileExists(atPath: path) else {
            return SchemaReport(exists: false, pending: all, applied: 0)
        }
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(5)
        do {
            let queue = try DatabaseQueue(path: path, configuration: configuration)
            defer { queue.close() }
            return try queue.read { db in
                try refuseNewerSchema(db, path: path)
                let applied = try migrator.appliedIdentifiers(db)
                return SchemaReport(
                    exists: true, pending: all.filter { !applied.contains($0) }, applied: applied.count)
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(code: .cannotOpen, message: "cannot read state database \(path)", underlying: error)
        }
    }

    /// A database that a newer gatehouse has migrated holds migrations this version does not
    /// know. Writing to it could break what the newer version keeps there, and migrations never
    /// run backwards, so it is refused (a downgrade of the package, a copied database) with the
    /// way out in the message.
    static func refuseNewerSchema(_ db: Database, path: String) throws {
        let migrator = Self.migrator
        let unknown = try migrator.appliedIdentifiers(db).subtracting(migrator.migrations)
        guard !unknown.isEmpty else { return }
        throw StoreError(
            code: .newerSchema,
            message: "the state database \(path) was written by a newer gatehouse (migrations this version does "
                + "not know: \(unknown.sorted().joined(separator: ", "))); refusing to use it. Install that "
                + "version again, or move the database aside to start with an empty one")
    }

    /// The schema's history. Append a migration; never edit one that shipped.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-registry-outbox-status") { db in
            try db.execute(
                sql: """
                    CREATE TABLE device (
                        id TEXT PRIMARY KEY NOT NULL,
                        first_seen_ms INTEGER NOT NULL,
                        last_seen_ms INTEGER NOT NULL,
                        messages_in INTEGER NOT NULL DEFAULT 0,
                        messages_out INTEGER NOT NULL DEFAULT 0,
                        link_state TEXT NOT NULL DEFAULT 'down',
                        link_reason TEXT NOT NULL DEFAULT '',
                        link_changed_ms INTEGER NOT NULL DEFAULT 0
                    );
                    CREATE TABLE outbox (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        device_id TEXT NOT NULL,
                        properties TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        created_ms INTEGER NOT NULL,
                        enqueued_ms INTEGER NOT NULL,
                        size INTEGER NOT NULL
                    );
                    CREATE TABLE daemon_status (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        pid INTEGER NOT NULL,
                        version TEXT NOT NULL,
                        started_ms INTEGER NOT NULL,
                        heartbeat_ms INTEGER NOT NULL,
                        stopped_ms INTEGER,
                        outbox_messages INTEGER NOT NULL DEFAULT 0,
                        outbox_bytes INTEGER NOT NULL DEFAULT 0,
                        ingested_total INTEGER NOT NULL DEFAULT 0,
                        delivered_total INTEGER NOT NULL DEFAULT 0,
                        dropped_total INTEGER NOT NULL DEFAULT 0,
                        commands_refused_total INTEGER NOT NULL DEFAULT 0
                    );
                    """)
        }
        migrator.registerMigration("v2-audit") { db in
            // One row a command decision: who asked what of which device, and what decided it.
            try db.execute(
                sql: """
                    CREATE TABLE audit (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        time_ms INTEGER NOT NULL,
                        device_id TEXT NOT NULL,
                        command_kind TEXT NOT NULL,
                        command_name TEXT NOT NULL,
                        caller TEXT NOT NULL,
                        tenant TEXT NOT NULL,
                        effect TEXT NOT NULL,
                        rules TEXT NOT NULL,
                        reason TEXT NOT NULL
                    );
                    CREATE INDEX audit_time ON audit (time_ms);
                    CREATE INDEX audit_device ON audit (device_id, time_ms);
                    """)
        }
        migrator.registerMigration("v3-provisioning") { db in
            // What DPS assigned to a device (or why it did not), for the devices gatehouse
            // provisions on their behalf.
            try db.execute(
                sql: """
                    ALTER TABLE device ADD COLUMN provisioning TEXT NOT NULL DEFAULT '';
                    ALTER TABLE device ADD COLUMN assigned_hub TEXT NOT NULL DEFAULT '';
                    """)
        }
        migrator.registerMigration("v4-device-tags") { db in
            // What the command rules see as `device.model` and `device.tags` (a JSON object).
            try db.execute(
                sql: """
                    ALTER TABLE device ADD COLUMN model TEXT NOT NULL DEFAULT '';
                    ALTER TABLE device ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
                    """)
        }
        migrator.registerMigration("v5-gateway-identity") { db in
            // The gateway's own DPS assignment (TPM attestation); its key stays in the TPM.
            try db.execute(
                sql: """
                    CREATE TABLE gateway_identity (
                      id INTEGER PRIMARY KEY CHECK (id = 1),
                      registration_id TEXT NOT NULL,
                      id_scope TEXT NOT NULL,
                      device_id TEXT NOT NULL,
                      assigned_hub TEXT NOT NULL,
                      attestation TEXT NOT NULL,
                      registered_ms INTEGER NOT NULL
                    );
                    """)
        }
        migrator.registerMigration("v6-site-credentials") { db in
            // Whether `gatehouse devices add` made the device's site-broker credential, and when
            // `gatehouse devices remove` revoked the device (NULL: not removed).
            try db.execute(
                sql: """
                    ALTER TABLE device ADD COLUMN site_credential_ms INTEGER NOT NULL DEFAULT 0;
                    ALTER TABLE device ADD COLUMN removed_ms INTEGER;
                    """)
        }
        migrator.registerMigration("v7-command-ids") { db in
            // The command gate's replay protection: each accepted command id, per device and
            // per caller (a hash of the token's issuer and oid/sub, never the token), until the
            // token that carried it expires. Written in the audit row's transaction.
            try db.execute(
                sql: """
                    CREATE TABLE command_id (
                        caller TEXT NOT NULL,
                        device_id TEXT NOT NULL,
                        command_id TEXT NOT NULL,
                        expires_ms INTEGER NOT NULL,
                        PRIMARY KEY (caller, device_id, command_id)
                    ) WITHOUT ROWID;
                    CREATE INDEX command_id_expiry ON command_id (expires_ms);
                    """)
        }
        migrator.registerMigration("v8-outbox-neutral-properties") { db in
            // The outbox keeps a message's properties as key and value (`OutboxProperty.encode`),
            // not as IoT Hub's MQTT property bag: every upstream transport encodes them once for
            // its own wire. Waiting rows are converted; the text column goes.
            try db.execute(sql: "ALTER TABLE outbox ADD COLUMN props BLOB NOT NULL DEFAULT x''")
            let rows = try Row.fetchAll(db, sql: "SELECT seq, properties FROM outbox WHERE properties != ''")
            let update = try db.makeStatement(sql: "UPDATE outbox SET props = ? WHERE seq = ?")
            for row in rows {
                let bag: String = row[1]
                let properties = PropertyBag.decode(bag).map { OutboxProperty($0.name, $0.value ?? "") }
                try update.execute(arguments: [OutboxProperty.encode(properties), row[0] as Int64])
            }
            try db.execute(sql: "ALTER TABLE outbox DROP COLUMN properties")
        }
        migrator.registerMigration("v9-dead-letters") { db in
            // Messages that can never be delivered, kept instead of wedging their device
            // (`StateStore+DeadLetters.swift`): from the site side (over its size limit: only the
            // payload's head is kept, `complete` 0) or the hub side (over the hub's limits, or
            // refused by it: the whole message, so `gatehouse dead-letters requeue` can put it
            // back). `outbox_requeued` names the outbox rows the CLI put back while gatehoused
            // runs, for it to pick up on SIGHUP.
            try db.execute(
                sql: """
                    CREATE TABLE dead_letter (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        time_ms INTEGER NOT NULL,
                        device_id TEXT NOT NULL,
                        source TEXT NOT NULL,
                        topic TEXT NOT NULL,
                        props BLOB NOT NULL,
                        size INTEGER NOT NULL,
                        reason TEXT NOT NULL,
                        detail TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        complete INTEGER NOT NULL,
                        created_ms INTEGER NOT NULL,
                        outbox_seq INTEGER,
                        stored_bytes INTEGER NOT NULL
                    );
                    CREATE INDEX dead_letter_time ON dead_letter (time_ms);
                    CREATE INDEX dead_letter_device ON dead_letter (device_id, id);
                    CREATE TABLE outbox_requeued (seq INTEGER PRIMARY KEY NOT NULL);
                    """)
        }
        migrator.registerMigration("v10-telemetry-routes") { db in
            // The telemetry rules applied on ingest (docs/rules.md, "In the daemon"): each outbox
            // row has a priority lane (0 low, 1 normal, 2 high; rows from before are normal) and
            // may carry a time to live (`expires_ms`, and the rule that gave it, for counting);
            // `archive` keeps what rules route there, within a size and age budget; the rules'
            // counters since the daemon started are written beside the status.
            try db.execute(
                sql: """
                    ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
                    ALTER TABLE outbox ADD COLUMN expires_ms INTEGER;
                    ALTER TABLE outbox ADD COLUMN ttl_rule TEXT;
                    CREATE INDEX outbox_priority ON outbox (priority, seq);
                    CREATE INDEX outbox_expiry ON outbox (expires_ms) WHERE expires_ms IS NOT NULL;
                    CREATE TABLE archive (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        time_ms INTEGER NOT NULL,
                        created_ms INTEGER NOT NULL,
                        device_id TEXT NOT NULL,
                        topic TEXT NOT NULL,
                        props BLOB NOT NULL,
                        payload BLOB NOT NULL,
                        size INTEGER NOT NULL,
                        rule TEXT NOT NULL
                    );
                    CREATE INDEX archive_time ON archive (time_ms);
                    CREATE TABLE telemetry_rule_stats (
                        kind TEXT NOT NULL,
                        rule TEXT NOT NULL,
                        file TEXT NOT NULL,
                        line INTEGER NOT NULL,
                        routed INTEGER NOT NULL,
                        archived INTEGER NOT NULL,
                        dropped INTEGER NOT NULL,
                        expired INTEGER NOT NULL,
                        failed INTEGER NOT NULL,
                        PRIMARY KEY (kind, rule)
                    ) WITHOUT ROWID;
                    """)
        }
        migrator.registerMigration("v11-audit-decision-id") { db in
            // Each decision's id, also in its log lines, to join a log line to its audit row
            // (docs/operations.md); rows from before have none ('').
            try db.execute(
                sql: """
                    ALTER TABLE audit ADD COLUMN decision_id TEXT NOT NULL DEFAULT '';
                    CREATE INDEX audit_decision ON audit (decision_id) WHERE decision_id != '';
                    """)
        }
        return migrator
    }
}

/// An error of the state store. Never carries message payloads or secrets.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let cannotOpen = Code(rawValue: "store.cannot-open")
        public static let writeFailed = Code(rawValue: "store.write-failed")
        public static let readFailed = Code(rawValue: "store.read-failed")
        /// The database was migrated by a newer gatehouse; this version will not use it.
        public static let newerSchema = Code(rawValue: "store.newer-schema")
        /// No record with that id (a dead letter already purged or requeued).
        public static let notFound = Code(rawValue: "store.not-found")
        /// A dead letter that cannot go back into the outbox (only its head was kept).
        public static let notRequeueable = Code(rawValue: "store.not-requeueable")
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?

    public init(code: Code, message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(message): \(underlying)" }
        return message
    }
}

extension StateStore {
    /// Runs a write transaction, mapping any failure to a StoreError.
    func write<T>(_ what: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try pool.write(body)
        } catch {
            throw StoreError(code: .writeFailed, message: "cannot \(what)", underlying: error)
        }
    }

    /// A write transaction that does not wait for fsync. For changes whose loss in a power cut
    /// is harmless (removing delivered messages: at worst they are sent again). In WAL mode the
    /// next ordinary (synced) commit makes it durable too, since the log is written in order.
    func writeUnsynced<T>(_ what: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = OFF")
                defer { try? db.execute(sql: "PRAGMA synchronous = \(synchronous)") }
                return try db.transaction(nil, body)
            }
        } catch {
            throw StoreError(code: .writeFailed, message: "cannot \(what)", underlying: error)
        }
    }

    func read<T>(_ what: String, _ body: (Database) throws -> T) throws(StoreError) -> T {
        do {
            return try pool.read(body)
        } catch {
            throw StoreError(code: .readFailed, message: "cannot \(what)", underlying: error)
        }
    }
}
