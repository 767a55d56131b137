import Foundation
import GatehouseCore
import GatehouseTestSupport
import Testing

/// `[auth]` keys for the claims and the key set's freshness: `required_claims`,
/// `accept_v1_issuer`, `jwks_max_stale`.
@Suite("Configuration: [auth] claims and key freshness")
struct AuthKeyPolicyConfigTests {
    static let base = """
        [auth]
        audiences = ["api://gatehouse"]
        tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
        jwks_file = "/etc/gatehouse/jwks.json"
        """

    static func parse(_ extra: String) throws -> GatewayConfig.Auth? {
        try GatewayConfig.parse(base + "\n" + extra + "\n" + ConfigTests.minimal, path: "g.toml").auth
    }

    @Test("the defaults: exp, nbf and iat required, the v1 issuer refused, keys usable 24 h after their fetch")
    func defaults() throws {
        let auth = try #require(try Self.parse(""))
        #expect(auth.requiredClaims == ["exp", "nbf", "iat"])
        #expect(!auth.acceptV1Issuer)
        #expect(auth.jwksMaxStale == .seconds(24 * 3600))
    }

    @Test("the keys are read")
    func values() throws {
        let auth = try #require(
            try Self.parse(
                """
                required_claims = ["exp", "uti"]
                accept_v1_issuer = true
                jwks_refresh = "30m"
                jwks_max_stale = "3d"
                """))
        #expect(auth.requiredClaims == ["exp", "uti"])
        #expect(auth.acceptV1Issuer)
        #expect(auth.jwksMaxStale == .seconds(3 * 24 * 3600))
    }

    @Test(
        "mistakes name the key",
        arguments: [
            ("required_claims = [\"nbf\", \"iat\"]", "[auth] required_claims: must include \"exp\""),
            ("required_claims = [\"exp\", \"\"]", "[auth] required_claims: must be a list of non-empty strings"),
            ("accept_v1_issuer = \"yes\"", "[auth] accept_v1_issuer: must be true or false"),
            ("jwks_max_stale = \"30m\"", "[auth] jwks_max_stale: must be at least jwks_refresh (3600s)"),
            ("jwks_refresh = \"2d\"", "[auth] jwks_max_stale: must be at least jwks_refresh"),
            ("jwks_max_stale = \"soon\"", "jwks_max_stale"),
        ])
    func mistakes(extra: String, message: String) {
        #expect {
            try Self.parse(extra)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("the shipped configuration's [auth] example, uncommented, checks and states the defaults")
    func shippedExample() throws {
        let path = Paths.packageRoot.appendingPathComponent("packaging/gatehouse.toml").path
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false)
        let start = try #require(lines.firstIndex(of: "# [auth]"))
        let section = lines[start...].prefix { !$0.isEmpty }.map { $0.hasPrefix("# ") ? $0.dropFirst(2) : $0 }
        let text = section.joined(separator: "\n") + "\n" + ConfigTests.minimal
        let auth = try #require(try GatewayConfig.parse(text, path: "g.toml").auth)
        let defaults = try #require(try Self.parse(""))
        #expect(auth.requiredClaims == defaults.requiredClaims)
        #expect(auth.acceptV1Issuer == defaults.acceptV1Issuer)
        #expect(auth.jwksMaxStale == defaults.jwksMaxStale && auth.jwksRefresh == defaults.jwksRefresh)
    }

    @Test("accept_v1_issuer needs tenants")
    func v1NeedsTenants() {
        let text = """
            [auth]
            audiences = ["api://gatehouse"]
            issuers = ["https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"]
            accept_v1_issuer = true
            jwks_file = "/j"
            \(ConfigTests.minimal)
            """
        #expect {
            try GatewayConfig.parse(text, path: "g.toml")
        } throws: { error in
            "\(error)".contains("[auth] accept_v1_issuer: needs `tenants`")
        }
    }
}
