import Crypto
import Foundation
import Logging
import NIOPosix
import Testing

@testable import DevHubKit

/// DevHub's side of DPS TPM attestation without a TPM: parsing EK publics, the enrollment
/// record, and the answers that need no TPM. (The crypto is checked against swtpm and
/// tpm2-tools in GatehouseIntegrationTests/TPMAttestationTests.swift.)
@Suite struct TPMAttestationUnitTests {
    /// A TPM2B_PUBLIC shaped like TCG's EK template L-1 (RSA-2048, SHA-256, AES-128-CFB).
    static func endorsementKeyPublic(modulusByte: UInt8 = 0xC3) -> [UInt8] {
        var area: [UInt8] = [0x00, 0x01, 0x00, 0x0B, 0x00, 0x03, 0x00, 0xB2]  // rsa, sha256, attributes
        area += [0x00, 0x20] + [UInt8](repeating: 0x83, count: 32)  // authPolicy
        area += [0x00, 0x06, 0x00, 0x80, 0x00, 0x43]  // AES-128-CFB
        area += [0x00, 0x10, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00]  // scheme null, 2048 bits, exponent 0
        area += [0x01, 0x00] + [UInt8](repeating: modulusByte, count: 256)
        return [UInt8(area.count >> 8), UInt8(area.count & 0xFF)] + area
    }

    @Test func parsesAnEndorsementKeyAndNamesIt() throws {
        let bytes = Self.endorsementKeyPublic()
        let key = try TPMPublicKey(tpm2bPublic: bytes, role: "endorsement key")
        #expect(key.modulus.count == 256)
        #expect(key.exponent == 65537)
        #expect(key.symmetricKeyBits == 128)
        #expect(key.name == [0x00, 0x0B] + Array(SHA256.hash(data: bytes.dropFirst(2))))
        // RSA-OAEP to it works (2048-bit output).
        #expect(try key.oaepEncrypt(Array(repeating: 1, count: 32), label: "IDENTITY\0").count == 256)
    }

    @Test(arguments: [
        ("truncated", Array(endorsementKeyPublic().prefix(40)), "size prefix disagrees"),
        (
            "ECC",
            {
                var b = endorsementKeyPublic(); b[3] = 0x23; return b
            }(), "not an RSA key"
        ),
        (
            "SHA-1 name",
            {
                var b = endorsementKeyPublic(); b[5] = 0x04; return b
            }(), "nameAlg is not SHA-256"
        ),
    ])
    func refusesKeysItCannotWrapTo(name: String, bytes: [UInt8], message: String) {
        let error = #expect(throws: DevHubError.self) { try TPMPublicKey(tpm2bPublic: bytes, role: "endorsement key") }
        #expect(error?.message.contains(message) == true, "\(name): \(String(describing: error))")
        #expect(error?.code == .badRequest)
    }

    @Test func kdfaFollowsTheSpecificationsCounterModeLayout() {
        let key = [UInt8](repeating: 9, count: 32)
        let one = TPMWrap.kdfa(key, label: "STORAGE", contextU: [1, 2], bits: 128)
        let expected = HMAC<SHA256>.authenticationCode(
            for: [0, 0, 0, 1] + Array("STORAGE".utf8) + [0, 1, 2] + [0, 0, 0, 128], using: SymmetricKey(data: key))
        #expect(one == Array(Array(expected).prefix(16)))
        #expect(TPMWrap.kdfa(key, label: "X", contextU: [], bits: 512).count == 64)
    }

    @Test func disabledEnrollmentsAreStored() throws {
        let store = try DevHubStore(inMemory: ())
        let ek = Data(Self.endorsementKeyPublic()).base64EncodedString()
        try store.saveEnrollment(
            IndividualEnrollment(registrationID: "gw-1", attestation: .tpm(endorsementKey: ek, storageRootKey: nil)))
        try store.saveEnrollment(
            IndividualEnrollment(
                registrationID: "gw-2", attestation: .tpm(endorsementKey: ek, storageRootKey: nil), enabled: false))
        #expect(try store.enrollment(registrationID: "gw-1")?.enabled == true)
        #expect(try store.enrollment(registrationID: "GW-2")?.enabled == false)
    }

    @Test func httpsAnswersWithoutATPM() throws {
        let store = try DevHubStore(inMemory: ())
        let pool = NIOThreadPool(numberOfThreads: 1)
        let dps = DPS(
            idScope: "0ne00TEST", assignedHub: "hub", store: store, threadPool: pool, logger: Logger(label: "t"))
        let https = DPSHTTPS(dps: dps)
        let ek = Data(Self.endorsementKeyPublic()).base64EncodedString()
        func put(_ id: String, _ body: String, authorization: String? = nil) -> DPSHTTPResponse {
            https.handle(
                method: .PUT, path: ["0ne00TEST", "registrations", id, "register"], authorization: authorization,
                body: Array(body.utf8))
        }
        let challenge = #"{"registrationId":"gw-1","tpm":{"endorsementKey":"\#(ek)","storageRootKey":"\#(ek)"}}"#
        // Not enrolled: 404 with DPS's error body, no key.
        let unknown = put("gw-1", challenge)
        #expect(unknown.status == 404)
        #expect(unknown.body["errorCode"] == .int(404202))
        #expect(unknown.body["authenticationKey"] == nil)
        // Enrolled with another EK: 401, no key.
        let other = Data(Self.endorsementKeyPublic(modulusByte: 0xC5)).base64EncodedString()
        try store.saveEnrollment(
            IndividualEnrollment(registrationID: "gw-1", attestation: .tpm(endorsementKey: other, storageRootKey: nil)))
        let mismatch = put("gw-1", challenge)
        #expect(mismatch.status == 401)
        #expect(mismatch.body["authenticationKey"] == nil)
        #expect(mismatch.body["message"]?.stringValue?.contains("does not match the enrollment") == true)
        // The right EK: 401 with a five-part blob and keyName.
        try store.saveEnrollment(
            IndividualEnrollment(registrationID: "gw-1", attestation: .tpm(endorsementKey: ek, storageRootKey: nil)))
        let answer = put("gw-1", challenge)
        #expect(answer.status == 401)
        #expect(answer.body["keyName"]?.stringValue == "registration")
        var reader = TPMReader(
            [UInt8](Data(base64Encoded: answer.body["authenticationKey"]?.stringValue ?? "") ?? Data()))
        let parts = (0..<5).compactMap { _ in reader.sized() }
        // credential: HMAC + encrypted TPM2B(16-byte key); duplicate: outer HMAC + inner integrity + sensitive.
        #expect(parts.map(\.count) == [34 + 18, 256, 34 + 34 + 74, 256, 48])
        #expect(reader.atEnd)
        // A second PUT whose SAS was not signed with the registration key: 401.
        let token = SASVerifier.makeToken(
            resource: "0ne00TEST/registrations/gw-1", key: [UInt8](repeating: 1, count: 32),
            expiry: Int64(Date().timeIntervalSince1970) + 60, keyName: "registration")
        let forged = put("gw-1", #"{"registrationId":"gw-1"}"#, authorization: token)
        #expect(forged.status == 401)
        #expect(forged.body["message"]?.stringValue?.contains("SAS token refused") == true)
        #expect(forged.body.description.contains("sig=") == false)
    }
}
