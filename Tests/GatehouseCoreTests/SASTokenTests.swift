import Foundation
import GatehouseCore
import Testing

@Suite("SAS tokens")
struct SASTokenTests {
    // Computed independently with Python's hmac/hashlib/urllib, as Azure's documentation does it:
    // quote_plus(resource.lower()), sign "{sr}\n{se}", quote the base64 signature.
    static let groupKey = Array(Data(base64Encoded: "dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBnYXRlaG91c2U=")!)

    @Test("a group-derived device key signs the documented token, byte for byte")
    func knownVector() throws {
        let signer = GroupKeySigner(groupKey: Self.groupKey)
        let token = try signer.sign(
            deviceID: "pump-7", resource: "myhub.azure-devices.net/devices/pump-7", expiry: 1_800_000_000)
        #expect(
            token
                == "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fpump-7&sig=yuqYeOrcdIywOqdCFFgLJflUHPxIIQoa7bqQl78NGdQ%3D&se=1800000000"
        )
    }

    @Test("a device's key signs only that device's resources")
    func refusesOtherResources() {
        let signer = GroupKeySigner(groupKey: Self.groupKey)
        #expect(throws: SignerError.self) {
            _ = try signer.sign(deviceID: "pump-7", resource: "myhub.azure-devices.net/devices/pump-8", expiry: 1)
        }
        #expect(throws: SignerError.self) {
            _ = try signer.sign(deviceID: "pump-7", resource: "myhub.azure-devices.net", expiry: 1)
        }
    }

    @Test("a key file's errors never show the key")
    func keyFileErrors() throws {
        let path = "/tmp/gatehouse-badkey-\(getpid())"
        try "not base64 at all: s3cr3t".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect {
            _ = try GroupKeySigner(keyFile: path)
        } throws: { error in
            "\(error)".contains(path) && !"\(error)".contains("s3cr3t")
        }
    }
}
