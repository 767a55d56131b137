import Foundation
import GatehouseCore
import GatehouseSiteBroker
import GatehouseStore
import GatehouseTestSupport
import Testing

@Suite("Site-broker access in the core: [site_broker], secret files, the registry")
struct SiteAccessTests {
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
