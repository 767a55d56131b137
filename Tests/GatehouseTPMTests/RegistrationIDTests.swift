import Foundation
import GatehouseTestSupport
import Testing

@testable import GatehouseTPM

@Suite("The default TPM registration id")
struct RegistrationIDTests {
    /// Python's base64.b32encode is the independent reference (RFC 4648).
    @Test("equals lowercase unpadded base32 of SHA-256(EK), as Python computes it")
    func matchesPython() throws {
        guard let python = which("python3") else {
            Issue.record("python3 is missing: run scripts/setup")
            return
        }
        for length in [0, 1, 58, 314] {
            let ek = Data((0..<length).map { _ in UInt8.random(in: 0...255) })
            let (code, output) = try Subprocess.run(
                python,
                [
                    "-c",
                    "import base64, hashlib, sys; print(base64.b32encode(hashlib.sha256(base64.b64decode(sys.argv[1])).digest()).decode().lower().rstrip('='))",
                    ek.base64EncodedString(),
                ])
            #expect(code == 0)
            #expect(
                TPMRegistrationID.default(endorsementKey: ek) == output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }
}
