import Foundation
import GatehouseAuth
import Testing

/// `iat`, the required claims and the v1 issuer: what Entra ID always sends is required, and
/// what a configuration did not ask for is refused.
@Suite("JWT claims policy (iat, required claims, v1 issuer)")
struct ClaimsPolicyTests {
    /// The verifier's own defaults: audiences and the tenant only.
    func defaults(_ fixtures: JWTFixtures) -> TokenVerifier.Configuration {
        TokenVerifier.Configuration(audiences: Set(fixtures.cases.audiences), tenants: [fixtures.cases.tenant])
    }

    @Test("a token issued in the future (iat past now + skew) is refused; within the skew it passes")
    func issuedInFuture() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, _, _, clock) = try await fixtures.verifier(configuration: defaults(fixtures))
        let refused = await verifier.verify(fixtures["iat-in-future"])
        #expect(refused.failureCode == .issuedInFuture)
        #expect(await verifier.verify(fixtures["iat-within-skew"]).failureCode == nil)
        #expect(await verifier.verify(fixtures["iat-is-string"]).failureCode == .malformed)

        // Without skew, 60 s ahead is refused too; once the clock reaches iat it passes.
        var strict = defaults(fixtures)
        strict.clockSkew = .zero
        let (exact, _, _, _) = try await fixtures.verifier(configuration: strict, clock: clock)
        #expect(await exact.verify(fixtures["iat-within-skew"]).failureCode == .issuedInFuture)
        clock.advance(.seconds(60))
        #expect(await exact.verify(fixtures["iat-within-skew"]).failureCode == nil)

        // Checked whenever present, even when iat is not required.
        var optional = defaults(fixtures)
        optional.requiredClaims = ["exp"]
        let (lenient, _, _, _) = try await fixtures.verifier(configuration: optional)
        #expect(await lenient.verify(fixtures["iat-in-future"]).failureCode == .issuedInFuture)
    }

    @Test("exp, nbf and iat are required by default; nbf and iat may be made optional, exp never")
    func requiredClaims() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, _, _, _) = try await fixtures.verifier(configuration: defaults(fixtures))
        for name in ["no-exp", "no-nbf", "no-iat"] {
            let result = await verifier.verify(fixtures[name])
            #expect(result.failureCode == .missingClaim, "\(name)")
            if case .failure(let error) = result {
                #expect(error.message.contains(String(name.dropFirst(3))), "\(name): \(error.message)")
            }
        }
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == nil)

        var lenient = defaults(fixtures)
        lenient.requiredClaims = ["exp"]
        let (optional, _, _, _) = try await fixtures.verifier(configuration: lenient)
        #expect(await optional.verify(fixtures["no-nbf"]).failureCode == nil)
        #expect(await optional.verify(fixtures["no-iat"]).failureCode == nil)
        #expect(await optional.verify(fixtures["no-exp"]).failureCode == .missingClaim)

        // Other claims can be required too: uti is in the fixtures' tokens, "acct" is not.
        var more = defaults(fixtures)
        more.requiredClaims = ["exp", "nbf", "iat", "uti", "acct"]
        let (demanding, _, _, _) = try await fixtures.verifier(configuration: more)
        let missing = await demanding.verify(fixtures["v2-valid"])
        #expect(missing.failureCode == .missingClaim)
        more.requiredClaims = ["exp", "uti"]
        let (satisfied, _, _, _) = try await fixtures.verifier(configuration: more)
        #expect(await satisfied.verify(fixtures["v2-valid"]).failureCode == nil)

        // exp cannot be dropped: the replay protection remembers a command id while its token lives.
        for claims: Set<String> in [["nbf", "iat"], [], ["exp", ""]] {
            var bad = defaults(fixtures)
            bad.requiredClaims = claims
            await #expect(throws: AuthError.self, "\(claims)") {
                _ = try await fixtures.verifier(configuration: bad)
            }
        }
    }

    @Test("the v1 issuer (sts.windows.net) is refused unless configured: accept_v1_issuer or an explicit issuer")
    func v1IssuerOnlyWhenConfigured() async throws {
        let fixtures = try JWTFixtures.load()
        let (v2Only, _, _, _) = try await fixtures.verifier(configuration: defaults(fixtures))
        #expect(await v2Only.verify(fixtures["v1-valid"]).failureCode == .wrongIssuer)
        #expect(await v2Only.verify(fixtures["v1-audience-is-client-id"]).failureCode == .wrongIssuer)
        #expect(await v2Only.verify(fixtures["v2-valid"]).failureCode == nil)
        #expect(await v2Only.verify(fixtures["v2-es256-valid"]).failureCode == nil)

        var accepting = defaults(fixtures)
        accepting.acceptV1Issuer = true
        let (both, _, _, _) = try await fixtures.verifier(configuration: accepting)
        #expect(await both.verify(fixtures["v1-valid"]).failureCode == nil)
        #expect(await both.verify(fixtures["v2-valid"]).failureCode == nil)
        #expect(await both.verify(fixtures["v1-wrong-tenant"]).failureCode == .wrongTenant)

        var explicit = defaults(fixtures)
        explicit.issuers = ["https://sts.windows.net/{tenantid}/"]
        let (v1Only, _, _, _) = try await fixtures.verifier(configuration: explicit)
        #expect(await v1Only.verify(fixtures["v1-valid"]).failureCode == nil)
        #expect(await v1Only.verify(fixtures["v2-valid"]).failureCode == .wrongIssuer)

        // The v1 template needs tenants to bind {tenantid} to.
        var noTenants = TokenVerifier.Configuration(
            audiences: ["api://gatehouse"], issuers: ["https://login.microsoftonline.com/\(fixtures.cases.tenant)/v2.0"]
        )
        noTenants.acceptV1Issuer = true
        await #expect(throws: AuthError.self) { _ = try await fixtures.verifier(configuration: noTenants) }
    }
}
