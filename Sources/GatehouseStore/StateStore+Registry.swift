import FoundationEssentials
import SQLiteDB

/// A leaf device as the registry knows it.
public struct DeviceRecord: Sendable, Equatable, Codable {
    public var id: String
    public var firstSeenMS: Int64
    public var lastSeenMS: Int64
    public var messagesIn: Int
    public var messagesOut: Int
    public var linkState: String
    public var linkReason: String
    public var linkChangedMS: Int64
    /// "", "assigning", "assigned" or "failed: reason" (DPS on the device's behalf).
    public var provisioning: String
    public var assignedHub: String
    /// When `gatehouse devices add` created its site-broker credential (0: never).
    public var siteCredentialMS: Int64 = 0
    /// When `gatehouse devices remove` revoked it; nil while it is active. A removed device is
    /// not relayed and has no hub identity or key in the daemon.
    public var removedMS: Int64? = nil

    public var isRemoved: Bool { removedMS != nil }
}

/// One upstream link change of a device, as the registry records it.
public struct LinkStateChange: Sendable, Equatable {
    public var deviceID: String
    /// "down", "connecting" or "up".
    public var state: String
    /// A short human text or empty (never a secret).
    public var reason: String
    public var atMS: Int64

    public init(deviceID: String, state: String, reason: String, atMS: Int64) {
        self.deviceID = deviceID
        self.state = state
        self.reason = reason
        self.atMS = atMS
    }
}

/// What the command rules know of a device beyond its id.
public struct DeviceMetadata: Sendable, Equatable, Codable {
    public var model: String
    public var tags: [String: TagValue]
    /// Revoked by `gatehouse devices remove`: no command may reach it.
    public var removed: Bool

    public init(model: String = "", tags: [String: TagValue] = [:], removed: Bool = false) {
        self.model = model
        self.tags = tags
        self.removed = removed
    }
}

/// A tag's value: rules compare `device.tags.locked == true` and `device.tags.floor > 2`, so
/// booleans and numbers keep their type.
public enum TagValue: Sendable, Equatable, Codable, CustomStringConvertible {
    case string(String)
    case number(Double)
    case bool(Bool)

    /// `true`/`false` and numbers as such, anything else as text (`gatehouse devices tag k=v`).
    public init(parsing text: String) {
        if text == "true" {
            self = .bool(true)
        } else if text == "false" {
            self = .bool(false)
        } else if let number = Double(text), number.isFinite, text.first.map({ $0.isNumber || $0 == "-" }) == true {
            self = .number(number)
        } else {
            self = .string(text)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        }
    }

    public var description: String {
        switch self {
        case .string(let value): value
        case .number(let value): value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        case .bool(let value): String(value)
        }
    }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}

/// What the daemon publishes about itself for `gatehouse status`.
public struct DaemonStatus: Sendable, Equatable, Codable {
    public var pid: Int32
    public var version: String
    public var startedMS: Int64
    public var heartbeatMS: Int64
    public var stoppedMS: Int64?
    public var outboxMessages: Int
    public var outboxBytes: Int
    public var ingestedTotal: Int
    public var deliveredTotal: Int
    public var droppedTotal: Int
    public var commandsRefusedTotal: Int

    public init(
        pid: Int32, version: String, startedMS: Int64, heartbeatMS: Int64, stoppedMS: Int64? = nil,
        outboxMessages: Int = 0, outboxBytes: Int = 0, ingestedTotal: Int = 0, deliveredTotal: Int = 0,
        droppedTotal: Int = 0, commandsRefusedTotal: Int = 0
    ) {
        self.pid = pid
        self.version = version
        self.startedMS = startedMS
        self.heartbeatMS = heartbeatMS
        self.stoppedMS = stoppedMS
        self.outboxMessages = outboxMessages
        self.outboxBytes = outboxBytes
        self.ingestedTotal = ingestedTotal
        self.deliveredTotal = deliveredTotal
        self.droppedTotal = droppedTotal
        self.commandsRefusedTotal = commandsRefusedTotal
    }
}

extension StateStore {
    public func devices() throws(StoreError) -> [DeviceRecord] {
        try read("read the device registry") { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT id, first_seen_ms, last_seen_ms, messages_in, messages_out, link_state, link_reason, link_changed_ms,
                        provisioning, assigned_hub, site_credential_ms, removed_ms
                    FROM device ORDER BY id
                    """
            ).map { row in
                DeviceRecord(
                    id: row[0], firstSeenMS: row[1], lastSeenMS: row[2], messagesIn: row[3], messagesOut: row[4],
                    linkState: row[5], linkReason: row[6], linkChangedMS: row[7], provisioning: row[8],
                    assignedHub: row[9], siteCredentialMS: row[10], removedMS: row[11])
            }
        }
    }

    /// The ids of the devices removed with `gatehouse devices remove`.
    public func removedDeviceIDs() throws(StoreError) -> Set<String> {
        try read("read the removed devices") { db in
            Set(try String.fetchAll(db, sql: "SELECT id FROM device WHERE removed_ms IS NOT NULL"))
        }
    }

    /// Records that the device's site-broker credential was created; a removed device with the
    /// same id becomes active again (and is provisioned anew). Returns true in that case.
    @discardableResult
    public func recordSiteCredential(deviceID: String, atMS: Int64) throws(StoreError) -> Bool {
        try write("record the site credential of \(deviceID)") { db in
            let wasRemoved =
                try Bool.fetchOne(
                    db, sql: "SELECT removed_ms IS NOT NULL FROM device WHERE id = ?", arguments: [deviceID]) ?? false
            try db.execute(
                sql: """
                    INSERT INTO device (id, first_seen_ms, last_seen_ms, site_credential_ms) VALUES (?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET site_credential_ms = excluded.site_credential_ms,
                        removed_ms = NULL,
                        provisioning = CASE WHEN removed_ms IS NULL THEN provisioning ELSE '' END,
                        assigned_hub = CASE WHEN removed_ms IS NULL THEN assigned_hub ELSE '' END
                    """, arguments: [deviceID, atMS, atMS, atMS])
            return wasRemoved
        }
    }

    /// Marks the device removed: its credential is gone and the daemon must drop it. Returns
    /// false when the registry does not know the device.
    @discardableResult
    public func markRemoved(deviceID: String, atMS: Int64) throws(StoreError) -> Bool {
        try write("mark \(deviceID) removed") { db in
            try db.execute(
                sql: """
                    UPDATE device SET removed_ms = ?, site_credential_ms = 0, provisioning = 'removed', assigned_hub = '',
                        link_state = 'removed', link_reason = 'gatehouse devices remove', link_changed_ms = ?
                    WHERE id = ?
                    """, arguments: [atMS, atMS, deviceID])
            return db.changesCount > 0
        }
    }

    /// Deletes a device's waiting telemetry (it was removed); returns what went, for counting.
    public func dropOutbox(ofDevice deviceID: String, keep: Set<Int64>) throws(StoreError) -> [DroppedRecord] {
        try write("drop the outbox messages of \(deviceID)") { db in
            let dropped = try Row.fetchAll(
                db, sql: "SELECT seq, device_id, size FROM outbox WHERE device_id = ? ORDER BY seq",
                arguments: [deviceID]
            ).map { DroppedRecord(seq: $0[0], deviceID: $0[1], size: $0[2]) }.filter { !keep.contains($0.seq) }
            let delete = try db.cachedStatement(sql: "DELETE FROM outbox WHERE seq = ?")
            for record in dropped { try delete.execute(arguments: [record.seq]) }
            return dropped
        }
    }

    /// Records an upstream link change of a device (the device row is created if new).
    public func setLinkState(deviceID: String, state: String, reason: String, atMS: Int64) throws(StoreError) {
        try setLinkStates([LinkStateChange(deviceID: deviceID, state: state, reason: reason, atMS: atMS)])
    }

    /// Records upstream link changes in one transaction (a device row is created if new); a
    /// removed device keeps its `removed` state. Not synced: a link state lost in a power cut is
    /// harmless, since every link is marked down at the next start (`resetLinkStates`).
    public func setLinkStates(_ changes: [LinkStateChange]) throws(StoreError) {
        guard !changes.isEmpty else { return }
        try writeUnsynced("record \(changes.count) link state(s)") { db in
            let upsert = try db.cachedStatement(
                sql: """
                    INSERT INTO device (id, first_seen_ms, last_seen_ms, link_state, link_reason, link_changed_ms)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET link_state = excluded.link_state,
                        link_reason = excluded.link_reason, link_changed_ms = excluded.link_changed_ms
                    WHERE removed_ms IS NULL
                    """)
            for change in changes {
                try upsert.execute(arguments: [
                    change.deviceID, change.atMS, change.atMS, change.state, change.reason, change.atMS,
                ])
            }
        }
    }

    /// Marks every link that is up or connecting down, with `reason` (when the daemon stops).
    public func markLinksDown(reason: String, atMS: Int64) throws(StoreError) {
        try writeUnsynced("mark the links down") { db in
            try db.execute(
                sql: """
                    UPDATE device SET link_state = 'down', link_reason = ?, link_changed_ms = ?
                    WHERE link_state IN ('up', 'connecting') AND removed_ms IS NULL
                    """, arguments: [reason, atMS])
        }
    }

    /// Records a device's provisioning state and, once assigned, its hub.
    public func setProvisioning(deviceID: String, state: String, assignedHub: String = "", atMS: Int64)
        throws(StoreError)
    {
        try write("record the provisioning of \(deviceID)") { db in
            try db.execute(
                sql: """
                    INSERT INTO device (id, first_seen_ms, last_seen_ms, provisioning, assigned_hub) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET provisioning = excluded.provisioning, assigned_hub = excluded.assigned_hub
                    """, arguments: [deviceID, atMS, atMS, state, assignedHub])
        }
    }

    /// The device's model and tags, as command rules see them (`device.model`, `device.tags`);
    /// nil for a device the registry does not know.
    public func deviceMetadata(_ deviceID: String) throws(StoreError) -> DeviceMetadata? {
        try read("read the tags of \(deviceID)") { db in
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT model, tags, removed_ms FROM device WHERE id = ?", arguments: [deviceID])
            else { return nil }
            let tagsJSON: String = row[1]
            let tags = (try? JSONDecoder().decode([String: TagValue].self, from: Data(tagsJSON.utf8))) ?? [:]
            let removedMS: Int64? = row[2]
            return DeviceMetadata(model: row[0], tags: tags, removed: removedMS != nil)
        }
    }

    /// Every device with a model or tags (what telemetry rules read as `device.model` and
    /// `device.tags`), read at once so that routing never reads the registry per message.
    public func devicesWithMetadata() throws(StoreError) -> [String: DeviceMetadata] {
        try read("read the devices' tags") { db in
            var result: [String: DeviceMetadata] = [:]
            let rows = try Row.fetchCursor(
                db, sql: "SELECT id, model, tags, removed_ms FROM device WHERE model != '' OR tags != '{}'")
            while let row = try rows.next() {
                let tagsJSON: String = row[2]
                let tags = (try? JSONDecoder().decode([String: TagValue].self, from: Data(tagsJSON.utf8))) ?? [:]
                let removedMS: Int64? = row[3]
                result[row[0]] = DeviceMetadata(model: row[1], tags: tags, removed: removedMS != nil)
            }
            return result
        }
    }

    /// Sets a device's model and tags (the device row is created if new).
    public func setDeviceMetadata(_ deviceID: String, _ metadata: DeviceMetadata, atMS: Int64) throws(StoreError) {
        let tagsJSON: String
        do {
            tagsJSON = String(decoding: try JSONEncoder.sorted.encode(metadata.tags), as: UTF8.self)
        } catch {
            throw StoreError(code: .writeFailed, message: "cannot encode the tags of \(deviceID)", underlying: error)
        }
        try write("record the tags of \(deviceID)") { db in
            try db.execute(
                sql: """
                    INSERT INTO device (id, first_seen_ms, last_seen_ms, model, tags) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET model = excluded.model, tags = excluded.tags
                    """, arguments: [deviceID, atMS, atMS, metadata.model, tagsJSON])
        }
    }

    /// Marks every device's link down (at start: nothing is connected yet).
    public func resetLinkStates(atMS: Int64) throws(StoreError) {
        try write("reset link states") { db in
            try db.execute(
                sql: "UPDATE device SET link_state = 'down', link_reason = 'gatehoused restarted', link_changed_ms = ?",
                arguments: [atMS])
        }
    }

    public func writeStatus(_ status: DaemonStatus) throws(StoreError) {
        try write("write the daemon status") { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO daemon_status (id, pid, version, started_ms, heartbeat_ms, stopped_ms,
                        outbox_messages, outbox_bytes, ingested_total, delivered_total, dropped_total, commands_refused_total)
                    VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    status.pid, status.version, status.startedMS, status.heartbeatMS, status.stoppedMS,
                    status.outboxMessages, status.outboxBytes, status.ingestedTotal, status.deliveredTotal,
                    status.droppedTotal, status.commandsRefusedTotal,
                ])
        }
    }

    public func readStatus() throws(StoreError) -> DaemonStatus? {
        try read("read the daemon status") { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT pid, version, started_ms, heartbeat_ms, stopped_ms, outbox_messages, outbox_bytes,
                        ingested_total, delivered_total, dropped_total, commands_refused_total
                    FROM daemon_status WHERE id = 1
                    """
            ).map { row in
                DaemonStatus(
                    pid: row[0], version: row[1], startedMS: row[2], heartbeatMS: row[3], stoppedMS: row[4],
                    outboxMessages: row[5], outboxBytes: row[6], ingestedTotal: row[7], deliveredTotal: row[8],
                    droppedTotal: row[9], commandsRefusedTotal: row[10])
            }
        }
    }
}
