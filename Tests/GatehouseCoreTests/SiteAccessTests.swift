import Foundation
import GatehouseCore
import GatehouseSiteBroker
import GatehouseStore
import GatehouseTestSupport
import Testing

@Suite("Site-broker access: device ids, ACL plan, passwords, [site_broker]")
struct SiteAccessTests {
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

    @Test("[site_broker] takes host, port, topics and the gateway's client from the mqtt [site]")
    func configDefaults() throws {
        let config = try GatewayConfig.parse(
            """
            [site_broker]
            admin_username = "admin"
            admin_password_file = "/etc/gatehouse/site-admin.password"

            [site]
            plugin = "mqtt"
            host = "10.0.0.5"
            port = 1884
            topics = ["site/+/telemetry/#"]
            username = "gw"
            client_id = "gw-1"
            password_file = "/etc/gatehouse/site.password"

            [hub]
            plugin = "mqtt"
            hostname = "h.example"
            """, path: "g.toml")
        let broker = try #require(config.siteBroker)
        #expect(broker.host == "10.0.0.5")
        #expect(broker.port == 1884)
        #expect(broker.telemetryTopics == ["site/+/telemetry/#"])
        #expect(broker.commandTopics == ["devices/+/messages/devicebound/#", "devices/+/methods/POST/#"])
        #expect(broker.gatewayUsername == "gw")
        #expect(broker.gatewayClientID == "gw-1")
        #expect(broker.gatewayPasswordFile == "/etc/gatehouse/site.password")
        let plan = try SiteCredentials.plan(broker)
        #expect(plan.telemetryTopics(of: "p1") == ["site/p1/telemetry/#"])
        // The plugin still gets only its own keys.
        #expect(try GatewayConfig.parse(ConfigTests.minimal, path: "g.toml").siteBroker == nil)
    }

    @Test(
        "[site_broker] mistakes name the key and line",
        arguments: [
            ("admin_username = \"admin\"", "admin_password_file"),
            ("admin_password_file = \"/x\"", "admin_username"),
            (
                "admin_username = \"a\"\nadmin_password_file = \"/x\"\ncommand_topics = [\"devices/#\"]",
                "command_topics"
            ),
            ("admin_username = \"a\"\nadmin_password_file = \"/x\"\nport = 70000", "port"),
            ("admin_username = \"a\"\nadmin_password_file = \"/x\"\nadmin_pasword = \"x\"", "admin_pasword"),
        ])
    func configErrors(body: String, key: String) {
        let text = "[site_broker]\n\(body)\n\n\(ConfigTests.minimal)"
        #expect {
            _ = try GatewayConfig.parse(text, path: "g.toml")
        } throws: { error in
            let message = "\(error)"
            return message.hasPrefix("g.toml:") && message.contains("[site_broker] \(key)")
        }
    }

    @Test("secret files: private ones are read, others refused without their content")
    func secretFiles() throws {
        let dir = TempDir("gatehouse-secret")
        let path = dir.file("admin.password")
        try SiteCredentials.writeSecretFile(path, "s3cret-value")
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try SiteCredentials.readSecretFile(path, what: "x") == "s3cret-value")
        chmod(path, 0o644)
        #expect {
            _ = try SiteCredentials.readSecretFile(path, what: "[site_broker] admin_password_file")
        } throws: { error in
            let message = "\(error)"
            return message.contains("chmod 600") && !message.contains("s3cret")
        }
        #expect(throws: SiteBrokerError.self) { try SiteCredentials.readSecretFile(dir.file("missing"), what: "x") }
    }

    @Test("the registry: add, remove, add again")
    func registry() throws {
        let dir = TempDir("gatehouse-registry")
        let store = try StateStore(path: dir.file("state.db"))
        try store.setProvisioning(deviceID: "dev-a", state: "assigned", assignedHub: "h1", atMS: 10)
        try store.recordSiteCredential(deviceID: "dev-a", atMS: 20)
        var record = try #require(try store.devices().first)
        #expect(record.siteCredentialMS == 20 && !record.isRemoved && record.assignedHub == "h1")
        #expect(try store.markRemoved(deviceID: "dev-a", atMS: 30))
        #expect(try !store.markRemoved(deviceID: "ghost", atMS: 30))
        record = try #require(try store.devices().first)
        #expect(record.removedMS == 30 && record.siteCredentialMS == 0 && record.linkState == "removed")
        #expect(try store.removedDeviceIDs() == ["dev-a"])
        // Added again: active, and provisioned anew.
        try store.recordSiteCredential(deviceID: "dev-a", atMS: 40)
        record = try #require(try store.devices().first)
        #expect(!record.isRemoved && record.provisioning == "" && record.assignedHub == "")
        #expect(try store.removedDeviceIDs().isEmpty)
    }
}
