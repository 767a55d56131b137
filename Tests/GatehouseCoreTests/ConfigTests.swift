import Foundation
import GatehouseCore
import GatehouseTestSupport
import Testing

@Suite("Configuration")
struct ConfigTests {
    static let minimal = """
        [site]
        plugin = "mqtt"

        [hub]
        plugin = "mqtt"
        hostname = "h.example"
        """

    @Test("a minimal file gets the safe defaults")
    func defaults() throws {
        let config = try GatewayConfig.parse(Self.minimal, path: "g.toml")
        #expect(config.gateway.stateDB == "/var/lib/gatehouse/state.db")
        #expect(config.outbox.drop == .oldest)
        #expect(config.outbox.durability == .full)
        #expect(config.outbox.maxBytes == 256 << 20)
        #expect(config.identity.groupKeyFile == nil)
        #expect(config.site.plugin == "mqtt")
        // The plugin's own keys travel as JSON, without `plugin`.
        let hub = try JSONSerialization.jsonObject(with: Data(config.hub.pluginConfigJSON)) as? [String: Any]
        #expect(hub?["hostname"] as? String == "h.example")
        #expect(hub?["plugin"] == nil)
    }

    @Test("[auth]: the token rules and where the token travels")
    func auth() throws {
        let config = try GatewayConfig.parse(
            """
            [gateway]
            tenant = "t"
            audit_max_age = "30d"
            [auth]
            audiences = ["api://gatehouse"]
            tenants = "72f988bf-86f1-41af-91ab-2d7cd011db47"
            jwks_url = "https://login.example/keys"
            clock_skew = "30s"
            method_token_field = "token"
            require_command_id = false
            \(Self.minimal)
            """, path: "g.toml")
        let auth = try #require(config.auth)
        #expect(auth.audiences == ["api://gatehouse"])
        #expect(auth.tenants == ["72f988bf-86f1-41af-91ab-2d7cd011db47"])
        #expect(auth.clockSkew == .seconds(30))
        #expect(auth.methodTokenField == "token" && auth.c2dTokenProperty == "authorization")
        #expect(!auth.requireCommandID)
        #expect(config.gateway.tenant == "t")
        #expect(config.gateway.auditRetention.maxAgeMS == 30 * 86_400_000)
        #expect(try GatewayConfig.parse(Self.minimal, path: "g.toml").auth == nil)
    }

    @Test(
        "[auth] mistakes name the key",
        arguments: [
            ("[auth]\ntenants = [\"x\"]\njwks_file = \"/j\"", "[auth] audiences: missing"),
            ("[auth]\naudiences = [\"a\"]\njwks_file = \"/j\"", "[auth] tenants: set `tenants`"),
            ("[auth]\naudiences = [\"a\"]\ntenants = [\"x\"]", "[auth] jwks_file: missing"),
            (
                "[auth]\naudiences = [\"a\"]\ntenants = [\"x\"]\njwks_url = \"http://k\"",
                "[auth] jwks_url: must be an https:// URL"
            ),
            (
                "[auth]\naudiences = [\"a\"]\ntenants = [\"x\"]\njwks_file = \"/j\"\nalgorithms = [\"none\"]",
                "none is not allowed"
            ),
            (
                "[auth]\naudiences = [\"a\"]\ntenants = [\"x\"]\njwks_file = \"/j\"\naudience = \"a\"",
                "did you mean `audiences`?"
            ),
        ])
    func authErrors(text: String, message: String) {
        #expect {
            try GatewayConfig.parse(text + "\n" + Self.minimal, path: "g.toml")
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("every value is read with its unit")
    func values() throws {
        let config = try GatewayConfig.parse(
            """
            [gateway]
            state_db = "/tmp/x.db"
            log_level = "debug"
            drain_timeout = "2s"
            [outbox]
            max_bytes = "64 MiB"
            max_age = "12h"
            drop = "newest"
            durability = "normal"
            inflight_per_device = 8
            [identity]
            sas_ttl = "30m"
            \(Self.minimal)
            """, path: "g.toml")
        #expect(config.outbox.maxBytes == 64 << 20)
        #expect(config.outbox.maxAge == .seconds(12 * 3600))
        #expect(config.outbox.drop == .newest)
        #expect(config.outbox.durability == .normal)
        #expect(config.outbox.inflightPerDevice == 8)
        #expect(config.identity.sasTTL == .seconds(1800))
        #expect(config.gateway.drainTimeout == .seconds(2))
    }

    @Test(
        "a bad file is refused with its line and key",
        arguments: [
            ("[outbox]\nmax_bytse = 100000\n", 2, "[outbox] max_bytse", "did you mean `max_bytes`?"),
            ("[outbox]\ndrop = \"random\"\n", 2, "[outbox] drop", "must be \"oldest\" or \"newest\""),
            ("[outbox]\nmax_age = \"forever\"\n", 2, "[outbox] max_age", "duration"),
            ("[outbox]\n\nmax_bytes = \"12 parsecs\"\n", 3, "[outbox] max_bytes", "size"),
            ("[gateway]\nlog_level = \"loud\"\n", 2, "[gateway] log_level", "must be one of"),
            ("[identity]\nsas_ttl = \"5s\"\n", 2, "[identity] sas_ttl", "between 1m and 365d"),
            ("[gatway]\nx = 1\n", 1, "gatway", "did you mean `gateway`?"),
            (
                "[provisioning]\nid_scope = \"0ne1\"\ngateway_registration_id = \"gw-1\"\n", 3,
                "[provisioning] gateway_registration_id", "needs [identity] tpm"
            ),
            (
                "[identity]\ntpm = \"swtpm:path=/s\"\n[provisioning]\nid_scope = \"0ne1\"\ngateway_registration_id = \"gw/1\"\n",
                5, "[provisioning] gateway_registration_id", "1–128 letters"
            ),
            (
                "[identity]\ntpm = \"x\"\n[provisioning]\nid_scope = \"0ne1\"\ngateway_registration_id = \"g\"\ngateway_attestation = \"x509\"\n",
                6, "[provisioning] gateway_attestation", "only \"tpm\""
            ),
        ])
    func refused(prefix: String, line: Int, key: String, fragment: String) {
        let text = prefix + Self.minimal
        #expect {
            _ = try GatewayConfig.parse(text, path: "/etc/gatehouse/gatehouse.toml")
        } throws: { error in
            guard let error = error as? ConfigError else { return false }
            let rendered = "\(error)"
            return error.line == line && error.key == key && rendered.contains(fragment)
                && rendered.hasPrefix("/etc/gatehouse/gatehouse.toml:\(line): \(key): ")
        }
    }

    @Test("the gateway's own identity: registration id, HTTPS port, leaf registration off without allow")
    func gatewayIdentity() throws {
        let config = try GatewayConfig.parse(
            """
            [identity]
            tpm = "device:/dev/tpmrm0"
            [provisioning]
            id_scope = "0ne00ABC"
            endpoint = "dps.example"
            https_port = 8443
            gateway_registration_id = "gw-site-a"
            gateway_attestation = "tpm"
            \(Self.minimal)
            """, path: "g.toml")
        let provisioning = try #require(config.provisioning)
        #expect(provisioning.gatewayRegistrationID == "gw-site-a")
        #expect(provisioning.httpsPort == 8443)
        #expect(provisioning.registersLeaves == false)
        #expect(provisioning.port == 8883)
        let leaves = try GatewayConfig.parse(
            "[provisioning]\nid_scope = \"0ne1\"\nallow = [\"*\"]\n" + Self.minimal, path: "g.toml")
        #expect(leaves.provisioning?.registersLeaves == true)
        #expect(leaves.provisioning?.gatewayRegistrationID == nil)
        #expect(leaves.provisioning?.httpsPort == 443)
    }

    @Test("a TOML syntax error names its line")
    func syntax() {
        #expect {
            _ = try GatewayConfig.parse("[site]\nplugin = \"mqtt\n", path: "g.toml")
        } throws: { error in
            (error as? ConfigError)?.line == 2 && "\(error)".contains("TOML syntax")
        }
    }

    @Test("the transports are required")
    func missingSections() {
        #expect {
            _ = try GatewayConfig.parse("[site]\nplugin = \"mqtt\"\n", path: "g.toml")
        } throws: { error in
            "\(error)".contains("[hub]: missing section")
        }
    }

    @Test("the configuration we ship checks")
    func shippedDefault() throws {
        let path = Paths.packageRoot.appendingPathComponent("packaging/gatehouse.toml").path
        let config = try GatewayConfig.load(path: path)
        #expect(config.site.plugin == "mqtt")
        #expect(config.hub.plugin == "mqtt")
        #expect(config.site.keyPlaces["topics"]?.line != nil)
    }

    @Test(
        "units",
        arguments: [
            ("500ms", Duration.milliseconds(500)), ("30s", .seconds(30)), ("5m", .seconds(300)),
            ("7d", .seconds(604_800)),
        ])
    func durations(text: String, expected: Duration) {
        #expect(Units.duration(text) == expected)
    }

    @Test func sizes() {
        #expect(Units.bytes("1 GiB") == 1 << 30)
        #expect(Units.bytes("100kB") == 100_000)
        #expect(Units.bytes("4096") == 4096)
        #expect(Units.bytes("99999999999999 GiB") == nil)  // overflow is an error, not a wrap
        #expect(Units.bytes("MiB") == nil)
    }
}
