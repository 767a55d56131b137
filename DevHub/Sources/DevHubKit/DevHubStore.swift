import FoundationEssentials
import IoTHubWire
import SQLiteDB
import StrictJSON

// DevHub keeps payloads as Foundation's `Data` (it is not shipped with the gateway, and may use
// full Foundation); the store's layer knows bytes.
extension Data: DatabaseValueConvertible {
    public var databaseValue: DatabaseValue { .blob(Array(self)) }
    public static func fromDatabaseValue(_ value: DatabaseValue) -> Data? {
        [UInt8].fromDatabaseValue(value).map { Data($0) }
    }
}

/// DevHub's state in SQLite (`devhub.sqlite` in the data folder): enrollments, registrations,
/// devices, twins, C2D queues and received telemetry. Survives restarts.
///
/// Every method is synchronous and may block on disk: callers on an event loop go through the
/// server's thread pool. `DatabasePool` serialises writers itself, so the store is `Sendable`.
public final class DevHubStore: Sendable {
    private let database: any DatabaseWriter

    /// Opens (creating if needed) the database file at `path`.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        database = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(database)
    }

    /// A store that lives in memory only (fuzzing, unit tests).
    public init(inMemory: Void = ()) throws {
        database = try DatabaseQueue(path: ":memory:")
        try Self.migrator.migrate(database)
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE enrollment_group (
                      name TEXT PRIMARY KEY COLLATE NOCASE,
                      attestation TEXT NOT NULL,
                      primary_key TEXT, secondary_key TEXT,
                      created_at REAL NOT NULL);
                    CREATE TABLE individual_enrollment (
                      registration_id TEXT PRIMARY KEY COLLATE NOCASE,
                      attestation TEXT NOT NULL,
                      primary_key TEXT, secondary_key TEXT,
                      endorsement_key TEXT, storage_root_key TEXT,
                      device_id TEXT,
                      created_at REAL NOT NULL);
                    CREATE TABLE device (
                      device_id TEXT PRIMARY KEY,
                      primary_key TEXT NOT NULL, secondary_key TEXT,
                      source TEXT NOT NULL,
                      created_at REAL NOT NULL);
                    CREATE TABLE registration (
                      registration_id TEXT PRIMARY KEY COLLATE NOCASE,
                      operation_id TEXT NOT NULL,
                      status TEXT NOT NULL, substatus TEXT NOT NULL,
                      device_id TEXT NOT NULL, assigned_hub TEXT NOT NULL,
                      enrollment TEXT NOT NULL,
                      created_at REAL NOT NULL, updated_at REAL NOT NULL, etag TEXT NOT NULL);
                    CREATE TABLE telemetry (
                      seq INTEGER PRIMARY KEY AUTOINCREMENT,
                      device_id TEXT NOT NULL,
                      received_at REAL NOT NULL,
                      topic TEXT NOT NULL,
                      properties TEXT NOT NULL,
                      payload BLOB NOT NULL,
                      qos INTEGER NOT NULL);
                    CREATE INDEX telemetry_by_device ON telemetry(device_id, seq);
                    CREATE TABLE c2d (
                      seq INTEGER PRIMARY KEY AUTOINCREMENT,
                      device_id TEXT NOT NULL,
                      message_id TEXT NOT NULL,
                      properties TEXT NOT NULL,
                      payload BLOB NOT NULL,
                      state TEXT NOT NULL,
                      created_at REAL NOT NULL,
                      delivered_at REAL);
                    CREATE INDEX c2d_by_device ON c2d(device_id, state, seq);
                    CREATE TABLE twin (
                      device_id TEXT PRIMARY KEY,
                      desired TEXT NOT NULL, desired_version INTEGER NOT NULL,
                      reported TEXT NOT NULL, reported_version INTEGER NOT NULL);
                    """)
        }
        migrator.registerMigration("v2: enrollment provisioning status") { db in
            try db.execute(
                sql: """
                    ALTER TABLE individual_enrollment ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
                    ALTER TABLE individual_enrollment ADD COLUMN fault TEXT;
                    """)
        }
        migrator.registerMigration("v3: enrollment group provisioning status") { db in
            try db.execute(sql: "ALTER TABLE enrollment_group ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1")
        }
        migrator.registerMigration("v4: C2D outcomes") { db in
            try db.execute(
                sql: """
                    ALTER TABLE c2d ADD COLUMN outcome TEXT;
                    ALTER TABLE c2d ADD COLUMN delivery_count INTEGER NOT NULL DEFAULT 0;
                    """)
        }
        return migrator
    }

    // MARK: Attestation columns

    private static func attestationColumns(_ attestation: Attestation) -> [(
        any DatabaseValueConvertible
    )?] {
        switch attestation {
        case .symmetricKey(let primary, let secondary):
            ["symmetricKey", primary.base64, secondary?.base64, nil, nil]
        case .tpm(let endorsementKey, let storageRootKey):
            ["tpm", nil, nil, endorsementKey, storageRootKey]
        }
    }

    private static func attestation(from row: Row) -> Attestation? {
        switch row["attestation"] as String? {
        case "symmetricKey":
            guard let primary = (row["primary_key"] as String?).flatMap(SymmetricKeyText.init(base64:))
            else { return nil }
            return .symmetricKey(
                primary: primary,
                secondary: (row["secondary_key"] as String?).flatMap(SymmetricKeyText.init(base64:)))
        case "tpm":
            guard let ek = row["endorsement_key"] as String? else { return nil }
            return .tpm(endorsementKey: ek, storageRootKey: row["storage_root_key"])
        default:
            return nil
        }
    }

    // MARK: Enrollment groups

    /// Creates or replaces a group.
    public func saveGroup(_ group: EnrollmentGroup) throws {
        guard case .symmetricKey(let primary, let secondary) = group.attestation else {
            throw DevHubError(.badRequest, "enrollment groups take a symmetric key")
        }
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO enrollment_group
                      (name, attestation, primary_key, secondary_key, created_at, enabled)
                    VALUES (?, 'symmetricKey', ?, ?, ?, ?)
                    """,
                arguments: [
                    group.name, primary.base64, secondary?.base64, group.createdAt.timeIntervalSince1970,
                    group.enabled,
                ])
        }
    }

    public func groups() throws -> [EnrollmentGroup] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM enrollment_group ORDER BY name").compactMap { row in
                guard let attestation = Self.attestation(from: row) else { return nil }
                return EnrollmentGroup(
                    name: row["name"], attestation: attestation, enabled: row["enabled"],
                    createdAt: Date(timeIntervalSince1970: row["created_at"]))
            }
        }
    }

    @discardableResult
    public func deleteGroup(_ name: String) throws -> Bool {
        try database.write { db in
            try db.execute(sql: "DELETE FROM enrollment_group WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    // MARK: Individual enrollments

    public func saveEnrollment(_ enrollment: IndividualEnrollment) throws {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO individual_enrollment
                      (registration_id, attestation, primary_key, secondary_key, endorsement_key,
                       storage_root_key, device_id, created_at, enabled, fault)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: StatementArguments(
                    [enrollment.registrationID] + Self.attestationColumns(enrollment.attestation)
                        + [
                            enrollment.deviceID, enrollment.createdAt.timeIntervalSince1970, enrollment.enabled,
                            enrollment.fault?.rawValue,
                        ]))
        }
    }

    public func enrollments() throws -> [IndividualEnrollment] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM individual_enrollment ORDER BY registration_id")
                .compactMap(Self.enrollment(from:))
        }
    }

    public func enrollment(registrationID: String) throws -> IndividualEnrollment? {
        try database.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM individual_enrollment WHERE registration_id = ?",
                arguments: [registrationID]
            ).flatMap(Self.enrollment(from:))
        }
    }

    private static func enrollment(from row: Row) -> IndividualEnrollment? {
        guard let attestation = attestation(from: row) else { return nil }
        return IndividualEnrollment(
            registrationID: row["registration_id"], attestation: attestation, deviceID: row["device_id"],
            enabled: row["enabled"], fault: (row["fault"] as String?).flatMap(EnrollmentFault.init(rawValue:)),
            createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }

    @discardableResult
    public func deleteEnrollment(_ registrationID: String) throws -> Bool {
        try database.write { db in
            try db.execute(
                sql: "DELETE FROM individual_enrollment WHERE registration_id = ?",
                arguments: [registrationID])
            return db.changesCount > 0
        }
    }

    // MARK: Devices

    /// Adds a device; with `replace` false an existing id is a conflict.
    public func saveDevice(_ device: DeviceIdentity, replace: Bool) throws {
        try database.write { db in
            let exists =
                try Int.fetchOne(
                    db, sql: "SELECT 1 FROM device WHERE device_id = ?", arguments: [device.deviceID]) != nil
            if exists, !replace {
                throw DevHubError(.conflict, "device \(device.deviceID) already exists")
            }
            try db.execute(
                sql: """
                    INSERT INTO device (device_id, primary_key, secondary_key, source, created_at)
                    VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(device_id) DO UPDATE SET
                      primary_key = excluded.primary_key, secondary_key = excluded.secondary_key,
                      source = excluded.source
                    """,
                arguments: [
                    device.deviceID, device.primaryKey.base64, device.secondaryKey?.base64, device.source,
                    device.createdAt.timeIntervalSince1970,
                ])
        }
    }

    public func device(_ deviceID: String) throws -> DeviceIdentity? {
        try database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM device WHERE device_id = ?", arguments: [deviceID])
                .flatMap(Self.device(from:))
        }
    }

    public func devices() throws -> [DeviceIdentity] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM device ORDER BY device_id").compactMap(
                Self.device(from:))
        }
    }

    private static func device(from row: Row) -> DeviceIdentity? {
        guard let primary = SymmetricKeyText(base64: row["primary_key"]) else { return nil }
        return DeviceIdentity(
            deviceID: row["device_id"], primaryKey: primary,
            secondaryKey: (row["secondary_key"] as String?).flatMap(SymmetricKeyText.init(base64:)),
            source: row["source"], createdAt: Date(timeIntervalSince1970: row["created_at"]))
    }

    /// Removes a device with its twin and C2D queue (telemetry stays, as history).
    @discardableResult
    public func deleteDevice(_ deviceID: String) throws -> Bool {
        try database.write { db in
            try db.execute(sql: "DELETE FROM device WHERE device_id = ?", arguments: [deviceID])
            let deleted = db.changesCount > 0
            try db.execute(sql: "DELETE FROM twin WHERE device_id = ?", arguments: [deviceID])
            try db.execute(sql: "DELETE FROM c2d WHERE device_id = ?", arguments: [deviceID])
            return deleted
        }
    }

    // MARK: Registrations

    public func saveRegistration(_ registration: Registration) throws {
        try database.write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO registration
                      (registration_id, operation_id, status, substatus, device_id, assigned_hub, enrollment,
                       created_at, updated_at, etag)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    registration.registrationID, registration.operationID, registration.status,
                    registration.substatus, registration.deviceID, registration.assignedHub,
                    registration.enrollment, registration.createdAt.timeIntervalSince1970,
                    registration.updatedAt.timeIntervalSince1970, registration.etag,
                ])
        }
    }

    public func registration(_ registrationID: String) throws -> Registration? {
        try database.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM registration WHERE registration_id = ?", arguments: [registrationID]
            ).map(Self.registration(from:))
        }
    }

    public func registrations() throws -> [Registration] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM registration ORDER BY registration_id")
                .map(Self.registration(from:))
        }
    }

    private static func registration(from row: Row) -> Registration {
        Registration(
            registrationID: row["registration_id"], operationID: row["operation_id"],
            status: row["status"], substatus: row["substatus"], deviceID: row["device_id"],
            assignedHub: row["assigned_hub"], enrollment: row["enrollment"],
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            updatedAt: Date(timeIntervalSince1970: row["updated_at"]), etag: row["etag"])
    }

    // MARK: Telemetry

    /// Stores a batch in one transaction; returns the sequence numbers given.
    @discardableResult
    public func insertTelemetry(_ records: [TelemetryRecord]) throws -> [Int64] {
        try database.write { db in
            let statement = try db.cachedStatement(
                sql: """
                    INSERT INTO telemetry (device_id, received_at, topic, properties, payload, qos)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """)
            var sequences: [Int64] = []
            sequences.reserveCapacity(records.count)
            for record in records {
                try statement.execute(arguments: [
                    record.deviceID, record.receivedAt.timeIntervalSince1970, record.topic,
                    Self.propertiesJSON(record.properties).description, Data(record.payload), Int(record.qos),
                ])
                sequences.append(db.lastInsertedRowID)
            }
            return sequences
        }
    }

    /// Messages after `after` (a sequence number), oldest first, at most `limit`.
    public func telemetry(deviceID: String? = nil, after: Int64 = 0, limit: Int = 1000) throws
        -> [TelemetryRecord]
    {
        try database.read { db in
            var sql = "SELECT * FROM telemetry WHERE seq > ?"
            var arguments: StatementArguments = [after]
            if let deviceID {
                sql += " AND device_id = ?"
                arguments += [deviceID]
            }
            sql += " ORDER BY seq LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { row in
                TelemetryRecord(
                    sequence: row["seq"], deviceID: row["device_id"],
                    receivedAt: Date(timeIntervalSince1970: row["received_at"]), topic: row["topic"],
                    properties: Self.properties(fromJSON: row["properties"]),
                    payload: [UInt8](row["payload"] as Data), qos: UInt8(row["qos"] as Int))
            }
        }
    }

    public func telemetryCount() throws -> Int {
        try database.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM telemetry") ?? 0 }
    }

    public func clearTelemetry() throws {
        try database.write { db in try db.execute(sql: "DELETE FROM telemetry") }
    }

    /// Keeps only the newest `keep` messages.
    public func pruneTelemetry(keep: Int) throws {
        try database.write { db in
            try db.execute(
                sql: "DELETE FROM telemetry WHERE seq <= (SELECT MAX(seq) FROM telemetry) - ?",
                arguments: [keep])
        }
    }

    static func propertiesJSON(_ properties: [MessageProperty]) -> JSONValue {
        .array(properties.map { .array([.string($0.name), $0.value.map(JSONValue.string) ?? .null]) })
    }

    static func properties(fromJSON text: String) -> [MessageProperty] {
        guard case .array(let pairs) = try? JSONValue(parsing: text) else { return [] }
        return pairs.compactMap { pair in
            guard case .array(let parts) = pair, parts.count == 2, let name = parts[0].stringValue else {
                return nil
            }
            return MessageProperty(name, parts[1].stringValue)
        }
    }

    // MARK: Cloud-to-device messages

    public func enqueueC2D(
        deviceID: String, messageID: String, properties: [MessageProperty], payload: [UInt8]
    ) throws -> C2DMessage {
        try database.write { db in
            let now = Date()
            try db.execute(
                sql: """
                    INSERT INTO c2d (device_id, message_id, properties, payload, state, created_at)
                    VALUES (?, ?, ?, ?, 'queued', ?)
                    """,
                arguments: [
                    deviceID, messageID, Self.propertiesJSON(properties).description, Data(payload),
                    now.timeIntervalSince1970,
                ])
            return C2DMessage(
                sequence: db.lastInsertedRowID, deviceID: deviceID, messageID: messageID,
                properties: properties, payload: payload, state: "queued", createdAt: now, deliveredAt: nil,
                outcome: nil, deliveryCount: 0)
        }
    }

    /// A device's messages; only those still queued with `queuedOnly`.
    public func c2dMessages(deviceID: String, queuedOnly: Bool, limit: Int = 1000) throws
        -> [C2DMessage]
    {
        try database.read { db in
            try Row.fetchAll(
                db,
                sql:
                    "SELECT * FROM c2d WHERE device_id = ? \(queuedOnly ? "AND state = 'queued'" : "") ORDER BY seq LIMIT ?",
                arguments: [deviceID, limit]
            ).map { row in
                C2DMessage(
                    sequence: row["seq"], deviceID: row["device_id"], messageID: row["message_id"],
                    properties: Self.properties(fromJSON: row["properties"]),
                    payload: [UInt8](row["payload"] as Data), state: row["state"],
                    createdAt: Date(timeIntervalSince1970: row["created_at"]),
                    deliveredAt: (row["delivered_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                    outcome: (row["outcome"] as String?).flatMap(C2DOutcome.init(rawValue:)),
                    deliveryCount: row["delivery_count"])
            }
        }
    }

    /// The device completed the message (an MQTT PUBACK, an AMQP accepted).
    public func markC2DDelivered(sequence: Int64) throws {
        try settleC2D(sequence: sequence, outcome: .completed)
    }

    /// Records how the device settled a message and moves it on (docs/protocols.md §3.2):
    /// completed → `delivered`; rejected → `rejected`; abandoned → `queued` again, or
    /// `deadlettered` after ``C2DOutcome/maxDeliveryCount`` deliveries, as IoT Hub does.
    /// Returns the new state (nil if the message is gone).
    @discardableResult
    public func settleC2D(sequence: Int64, outcome: C2DOutcome) throws -> String? {
        try database.write { db in
            guard
                let count = try Int.fetchOne(
                    db, sql: "SELECT delivery_count FROM c2d WHERE seq = ?", arguments: [sequence])
            else { return nil }
            let deliveries = count + 1
            let state: String
            switch outcome {
            case .completed: state = "delivered"
            case .rejected: state = "rejected"
            case .abandoned: state = deliveries >= C2DOutcome.maxDeliveryCount ? "deadlettered" : "queued"
            }
            try db.execute(
                sql: """
                    UPDATE c2d SET state = ?, outcome = ?, delivery_count = ?,
                      delivered_at = CASE WHEN ? = 'queued' THEN delivered_at ELSE ? END
                    WHERE seq = ?
                    """,
                arguments: [state, outcome.rawValue, deliveries, state, Date().timeIntervalSince1970, sequence])
            return state
        }
    }

    // MARK: Twins

    /// The device's twin; a device without one has empty sections at version 1.
    public func twin(_ deviceID: String) throws -> DeviceTwin {
        try database.read { db in try Self.twin(deviceID, in: db) }
    }

    private static func twin(_ deviceID: String, in db: Database) throws -> DeviceTwin {
        guard
            let row = try Row.fetchOne(
                db, sql: "SELECT * FROM twin WHERE device_id = ?", arguments: [deviceID])
        else {
            return DeviceTwin(
                deviceID: deviceID, desired: .object([:]), desiredVersion: 1, reported: .object([:]),
                reportedVersion: 1)
        }
        return DeviceTwin(
            deviceID: deviceID,
            desired: (try? JSONValue(parsing: row["desired"] as String)) ?? .object([:]),
            desiredVersion: row["desired_version"],
            reported: (try? JSONValue(parsing: row["reported"] as String)) ?? .object([:]),
            reportedVersion: row["reported_version"])
    }

    /// Merges `patch` into the desired or reported section and bumps its version.
    public func patchTwin(_ deviceID: String, desired: Bool, patch: JSONValue) throws -> DeviceTwin {
        try database.write { db in
            var twin = try Self.twin(deviceID, in: db)
            var cleaned = patch
            cleaned.remove("$version")
            if desired {
                twin.desired = twin.desired.merging(patch: cleaned)
                twin.desiredVersion += 1
            } else {
                twin.reported = twin.reported.merging(patch: cleaned)
                twin.reportedVersion += 1
            }
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO twin (device_id, desired, desired_version, reported, reported_version)
                    VALUES (?, ?, ?, ?, ?)
                    """,
                arguments: [
                    deviceID, twin.desired.description, twin.desiredVersion, twin.reported.description,
                    twin.reportedVersion,
                ])
            return twin
        }
    }
}

/// An error of DevHub's registry or control API, with the HTTP status it maps to.
public struct DevHubError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let badRequest = Code(rawValue: "BadRequest")
        public static let notFound = Code(rawValue: "NotFound")
        public static let conflict = Code(rawValue: "Conflict")
        public static let deviceNotOnline = Code(rawValue: "DeviceNotOnline")
        public static let timeout = Code(rawValue: "GatewayTimeout")
        public static let internalError = Code(rawValue: "InternalError")
        public static let unavailable = Code(rawValue: "Unavailable")

        var httpStatus: Int {
            switch self {
            case .badRequest: 400
            case .notFound, .deviceNotOnline: 404
            case .conflict: 409
            case .timeout: 504
            case .unavailable: 503
            default: 500
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
