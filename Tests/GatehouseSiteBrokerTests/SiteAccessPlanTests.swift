import GatehouseSiteBroker
import Testing

@Suite("Site-broker access: device ids, the ACL plan, passwords")
struct SiteAccessPlanTests {
    @Test(
        "device ids follow DPS registration ids",
        arguments: [
            ("dev-a", true), ("Pump_7.line:2", true), (String(repeating: "x", count: 128), true),
            ("", false), (String(repeating: "x", count: 129), false), ("dev a", false), ("dev/a", false),
            ("dev+", false), ("#", false), ("dév", false), ("dev%c", false), ("$SYS", false),
        ])
    func deviceIDs(id: String, valid: Bool) {
        #expect((DeviceIdentifier.problem(id) == nil) == valid, "\(id)")
    }

    @Test("a device's role allows its own telemetry up and its own commands down, nothing else")
    func deviceACLs() throws {
        let plan = try SiteAccessPlan()
        let acls = plan.deviceACLs("dev-a").map { "\($0.type) \($0.topic)" }
        #expect(
            acls == [
                "publishClientSend devices/dev-a/messages/events/#",
                "publishClientSend devices/dev-a/methods/res/#",
                "subscribePattern devices/dev-a/messages/devicebound/#",
                "publishClientReceive devices/dev-a/messages/devicebound/#",
                "unsubscribePattern devices/dev-a/messages/devicebound/#",
                "subscribePattern devices/dev-a/methods/POST/#", "publishClientReceive devices/dev-a/methods/POST/#",
                "unsubscribePattern devices/dev-a/methods/POST/#",
            ])
        let gateway = plan.gatewayACLs.map { "\($0.type) \($0.topic)" }
        #expect(gateway.contains("subscribePattern devices/+/messages/events/#"))
        #expect(gateway.contains("publishClientReceive devices/+/messages/events/#"))
        #expect(gateway.contains("publishClientSend devices/+/messages/devicebound/#"))
        #expect(gateway.contains("publishClientSend devices/+/methods/POST/#"))
        #expect(gateway.contains("subscribePattern devices/+/methods/res/#"))
        #expect(!gateway.contains { $0.hasPrefix("publishClientSend devices/+/messages/events") })
        #expect(!gateway.contains { $0.hasPrefix("publishClientSend devices/+/methods/res") })
        #expect(SiteAccessPlan.deviceRole("dev-a") == "gatehouse-device-dev-a")
    }

    @Test(
        "filters need exactly one + level for the device id",
        arguments: ["devices/#", "a/+/+/#", "a/#/b", "$CONTROL/+"])
    func badFilters(filter: String) {
        #expect(throws: SiteBrokerError.self) { try SiteAccessPlan(telemetryFilters: [filter]) }
    }

    @Test("passwords: 32 characters of base64url, 192 random bits, never repeated")
    func passwords() {
        let passwords = (0..<2000).map { _ in SitePassword.generate() }
        #expect(Set(passwords).count == passwords.count)
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for password in passwords {
            #expect(password.count == 32)
            #expect(password.allSatisfy { alphabet.contains($0) })
        }
        // Every one of the 64 symbols turns up at every position over 2,000 draws (not a fixed pattern).
        for position in [0, 15, 31] {
            let seen = Set(passwords.map { Array($0)[position] })
            #expect(seen.count == 64, "position \(position)")
        }
    }
}
