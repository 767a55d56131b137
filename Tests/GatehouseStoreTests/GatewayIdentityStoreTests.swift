import GatehouseStore
import GatehouseTestSupport
import Testing

@Suite("The gateway's own identity in the state store")
struct GatewayIdentityStoreTests {
    @Test("recorded once, survives reopening, replaced or cleared; names only")
    func roundTrip() throws {
        let dir = TempDir()
        let path = dir.file("state.db")
        let record = GatewayIdentityRecord(
            registrationID: "gw-1", idScope: "0ne00ABC", deviceID: "gw-device", assignedHub: "hub.example",
            attestation: "tpm", registeredMS: 1_700_000_000_000)
        do {
            let store = try StateStore(path: path)
            #expect(try store.gatewayIdentity() == nil)
            try store.setGatewayIdentity(record)
        }
        let reopened = try StateStore(path: path)
        #expect(try reopened.gatewayIdentity() == record)
        var moved = record
        moved.assignedHub = "other.example"
        try reopened.setGatewayIdentity(moved)
        #expect(try reopened.gatewayIdentity() == moved)
        try reopened.setGatewayIdentity(nil)
        #expect(try reopened.gatewayIdentity() == nil)
    }
}
