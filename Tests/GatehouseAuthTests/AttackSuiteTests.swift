import Foundation
import GatehouseAuth
import Testing

/// Every token of Tests/python/jwt_fixtures.py (PyJWT-minted) against the default configuration.
@Suite("JWT attack suite (PyJWT-minted tokens)")
struct AttackSuiteTests {
    @Test("each token is accepted or refused with its code, and no message holds the token")
    func everyCase() async throws {
        let fixtures = try JWTFixtures.load()
        let logs = CapturedLogs()
        let (verifier, _, _, _) = try await fixtures.verifier(logs: logs)
        #expect(fixtures.cases.cases.count >= 40)
        for fixture in fixtures.cases.cases {
            let result = await verifier.verify(fixture.token)
            switch (fixture.expect, result) {
            case ("any", _):
                break
            case ("ok", .success):
                break
            case ("ok", .failure(let error)):
                Issue.record("\(fixture.name): expected to pass, refused: \(error)")
            case (let code, .success):
                Issue.record("\(fixture.name): expected \(code), accepted")
            case (let code, .failure(let error)):
                #expect(error.code.rawValue == code, "\(fixture.name)")
                expectNoTokenText(error.description + error.message, token: fixture.token, name: fixture.name)
            }
        }
        let logged = logs.all.joined(separator: "\n")
        #expect(logged.contains("auth.bad-signature"))  // refusals are logged, by code
        for fixture in fixtures.cases.cases {
            expectNoTokenText(logged, token: fixture.token, name: "log lines, \(fixture.name)")
        }
    }

    @Test("the bearer token of an authorization value")
    func bearer() {
        #expect(TokenVerifier.bearerToken(fromAuthorization: "Bearer abc.def.ghi") == "abc.def.ghi")
        #expect(TokenVerifier.bearerToken(fromAuthorization: " bearer  abc.def.ghi ") == "abc.def.ghi")
        #expect(TokenVerifier.bearerToken(fromAuthorization: "Basic dXNlcjpwYXNz") == nil)
        #expect(TokenVerifier.bearerToken(fromAuthorization: "Bearer ") == nil)
        #expect(TokenVerifier.bearerToken(fromAuthorization: "abc.def.ghi") == nil)
    }

    @Test("accepted v1 and v2 tokens expose the Entra claims")
    func entraForms() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, _, _, _) = try await fixtures.verifier()

        let v1 = try await verifier.verify(fixtures["v1-valid"]).get()
        #expect(v1.issuer == "https://sts.windows.net/\(fixtures.cases.tenant)/")
        #expect(v1.tenant == fixtures.cases.tenant)
        #expect(v1.audience == "api://gatehouse")
        #expect(v1.version == "1.0")
        #expect(v1.claims["roles"] == ["Command.Operator"])
        #expect(v1.tokenID != nil && v1.tokenID == v1.claims["uti"]?.stringValue)
        #expect(v1.objectID != nil && !v1.subject.isEmpty)
        #expect(v1.expiresAt == Date(timeIntervalSince1970: fixtures.cases.now + 3600))
        #expect(v1.keyID == "rsa-1" && v1.algorithm == "RS256")

        let v2 = try await verifier.verify(fixtures["v2-valid"]).get()
        #expect(v2.issuer == "https://login.microsoftonline.com/\(fixtures.cases.tenant)/v2.0")
        #expect(v2.audience == fixtures.cases.audiences[1])
        #expect(v2.version == "2.0")
        #expect(v2.claims["scp"] == "Commands.Send")
        #expect(v2.notBefore == Date(timeIntervalSince1970: fixtures.cases.now - 60))

        let es = try await verifier.verify(fixtures["v2-es256-valid"]).get()
        #expect(es.keyID == "ec-1" && es.algorithm == "ES256")
    }

    @Test("a v2-only configuration (v2 issuer, client id audience) refuses v1 tokens")
    func versionSpecificConfiguration() async throws {
        let fixtures = try JWTFixtures.load()
        var configuration = TokenVerifier.Configuration(
            audiences: [fixtures.cases.audiences[1]], tenants: [fixtures.cases.tenant],
            issuers: ["https://login.microsoftonline.com/{tenantid}/v2.0"])
        configuration.clockSkew = .zero
        let (verifier, _, _, _) = try await fixtures.verifier(configuration: configuration)
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == nil)
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == .wrongAudience)
        #expect(await verifier.verify(fixtures["v1-audience-is-client-id"]).failureCode == .wrongIssuer)
        #expect(await verifier.verify(fixtures["expired-within-skew"]).failureCode == .expired)
        #expect(await verifier.verify(fixtures["nbf-within-skew"]).failureCode == .notYetValid)
    }

    @Test("without tenants, the issuers are matched exactly and tid is not required")
    func exactIssuers() async throws {
        let fixtures = try JWTFixtures.load()
        let v2Issuer = "https://login.microsoftonline.com/\(fixtures.cases.tenant)/v2.0"
        let configuration = TokenVerifier.Configuration(audiences: Set(fixtures.cases.audiences), issuers: [v2Issuer])
        let (verifier, _, _, _) = try await fixtures.verifier(configuration: configuration)
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == nil)
        #expect(await verifier.verify(fixtures["no-tenant"]).failureCode == nil)
        #expect(await verifier.verify(fixtures["v1-valid"]).failureCode == .wrongIssuer)
        #expect(await verifier.verify(fixtures["wrong-tenant"]).failureCode == .wrongIssuer)
    }

    @Test("JWKS rotation: the new key verifies after a refresh; the removed key's tokens are refused")
    func rotation() async throws {
        let fixtures = try JWTFixtures.load()
        let (verifier, keys, source, clock) = try await fixtures.verifier()
        #expect(await verifier.verify(fixtures.cases.oldKeyToken).failureCode == nil)
        source.set(fixtures.rotatedJWKS)
        // Within 5 minutes of the last fetch, an unknown kid does not refetch.
        #expect(await verifier.verify(fixtures.cases.rotatedToken).failureCode == .unknownKey)
        clock.advance(.seconds(301))
        #expect(await verifier.verify(fixtures.cases.rotatedToken).failureCode == nil)
        #expect(await keys.keyIDs == ["rsa-2", "ec-1"])
        #expect(await verifier.verify(fixtures.cases.oldKeyToken).failureCode == .unknownKey)
    }

    @Test("HS256 only with a configured secret, and never with a JWKS key's kid")
    func symmetricKey() async throws {
        let fixtures = try JWTFixtures.load()
        var configuration = fixtures.configuration
        configuration.algorithms = [.rs256, .es256, .hs256]
        configuration.symmetricKeys = [SymmetricVerificationKey(keyID: "shared-1", secret: fixtures.sharedKey)]
        let (verifier, _, _, _) = try await fixtures.verifier(configuration: configuration)
        #expect(await verifier.verify(fixtures.cases.hs256).failureCode == nil)
        let confusion = await verifier.verify(fixtures.cases.hs256RSAConfusion)
        #expect(confusion.failureCode == .unknownKey)
        #expect(await verifier.verify(fixtures["v2-valid"]).failureCode == nil)

        let (plain, _, _, _) = try await fixtures.verifier()
        #expect(await plain.verify(fixtures.cases.hs256).failureCode == .algorithmNotAllowed)
    }

    private func expectNoTokenText(_ text: String, token: String, name: String) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        if !token.isEmpty { #expect(!text.contains(token), "\(name): message holds the token") }
        for part in parts where part.count >= 8 {
            #expect(!text.contains(part), "\(name): message holds a part of the token")
            #expect(!text.contains(part.prefix(8)), "\(name): message holds the start of a token part")
        }
    }
}
