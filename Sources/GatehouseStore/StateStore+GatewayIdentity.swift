import SQLiteDB

/// The gateway's own hub identity, as DPS assigned it. Only names: the key stays in the TPM.
public struct GatewayIdentityRecord: Sendable, Equatable, Codable {
    public var registrationID: String
    public var idScope: String
    public var deviceID: String
    public var assignedHub: String
    /// `tpm`.
    public var attestation: String
    public var registeredMS: Int64

    public init(
        registrationID: String, idScope: String, deviceID: String, assignedHub: String, attestation: String,
        registeredMS: Int64
    ) {
        self.registrationID = registrationID
        self.idScope = idScope
        self.deviceID = deviceID
        self.assignedHub = assignedHub
        self.attestation = attestation
        self.registeredMS = registeredMS
    }
}

extension StateStore {
    public func gatewayIdentity() throws(StoreError) -> GatewayIdentityRecord? {
        try read("read the gateway identity") { db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT registration_id, id_scope, device_id, assigned_hub, attestation, registered_ms
                    FROM gateway_identity WHERE id = 1
                    """
            ).map { row in
                GatewayIdentityRecord(
                    registrationID: row[0], idScope: row[1], deviceID: row[2], assignedHub: row[3], attestation: row[4],
                    registeredMS: row[5])
            }
        }
    }

    public func setGatewayIdentity(_ record: GatewayIdentityRecord?) throws(StoreError) {
        try write("record the gateway identity") { db in
            guard let record else {
                try db.execute(sql: "DELETE FROM gateway_identity")
                return
            }
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO gateway_identity
                      (id, registration_id, id_scope, device_id, assigned_hub, attestation, registered_ms)
                    VALUES (1, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    record.registrationID, record.idScope, record.deviceID, record.assignedHub, record.attestation,
                    record.registeredMS,
                ])
        }
    }
}
