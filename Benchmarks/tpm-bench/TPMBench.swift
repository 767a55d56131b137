// tpm-bench: TPM HMAC throughput through GatehouseTPM, and the time to derive device keys.
//
//   tpm-bench TCTI [OPERATIONS] [DEVICES]
//
// TCTI is a tss2 TCTI string (`swtpm:host=127.0.0.1,port=N`, `device:/dev/tpmrm0`). Run.sh
// starts a fresh swtpm and calls this. Every figure is wall-clock time in this process,
// including the TCTI round trips.
import Foundation
import GatehouseTPM

@main
struct TPMBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2 else {
            print("usage: tpm-bench TCTI [OPERATIONS] [DEVICES]")
            exit(64)
        }
        let tcti = arguments[1]
        let operations = arguments.count > 2 ? Int(arguments[2]) ?? 2000 : 2000
        let devices = arguments.count > 3 ? Int(arguments[3]) ?? 1000 : 1000

        var (context, seconds) = try time { try TPMContext(tcti: tcti) }
        report("open the TPM context", seconds)
        (_, seconds) = try time { try context.storageRootKeyPublic() }
        report("read or create the SRK", seconds)
        (_, seconds) = try time { try context.endorsementKeyPublic() }
        report("read or create the EK", seconds)

        var generator = SystemRandomNumberGenerator()
        let groupKey = (0..<64).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let imports = max(1, operations / 10)
        var wrapped: WrappedKey?
        (_, seconds) = try time {
            for _ in 0..<imports { wrapped = try context.importHMACKey(groupKey) }
        }
        rate("import an HMAC key (TPM2_Create, salted session)", imports, seconds)
        guard let wrapped else { return }

        let message = Data("0ne00000001%2Fregistrations%2Fleaf-device-000001\n1700000000".utf8)
        let loaded = try context.load(wrapped)
        (_, seconds) = try time {
            for _ in 0..<operations { _ = try context.hmac(loaded, message) }
        }
        context.flush(loaded)
        rate("TPM2_HMAC, key loaded (\(message.count)-byte message)", operations, seconds)

        let long = Data(repeating: 0x61, count: 4096)
        (_, seconds) = try time {
            for _ in 0..<max(1, operations / 4) { _ = try context.hmac(wrapped, long) }
        }
        rate("load + HMAC sequence (4 KiB) + flush", max(1, operations / 4), seconds)

        (_, seconds) = try time {
            for _ in 0..<max(1, operations / 4) { _ = try context.hmac(wrapped, message) }
        }
        rate("load + TPM2_HMAC + flush (wrapped key per call)", max(1, operations / 4), seconds)

        try context.persist(wrapped, at: TPMContext.authenticationKeyHandle)
        (_, seconds) = try time {
            for _ in 0..<operations { _ = try context.hmac(persistentKey: TPMContext.authenticationKeyHandle, message) }
        }
        rate("TPM2_HMAC, persistent key 0x81000100", operations, seconds)
        try context.evictPersistent(TPMContext.authenticationKeyHandle)

        let ids = (0..<devices).map { String(format: "leaf-device-%06d", $0) }
        let batch = TPMSigner(context: context, groupKey: wrapped)
        (_, seconds) = try time { try batch.derive(ids) }
        report("derive \(devices) device keys in the TPM (one batch, key loaded once)", seconds)

        let oneByOne = TPMSigner(context: context, groupKey: wrapped)
        (_, seconds) = try time {
            for id in ids { try oneByOne.derive([id]) }
        }
        report("derive \(devices) device keys one by one (load + HMAC + flush each)", seconds)

        (_, seconds) = try time {
            for (index, id) in ids.enumerated() {
                _ = try batch.sasToken(
                    registrationID: id, resource: "hub.example.net/devices/\(id)", expiry: 1_700_000_000 + Int64(index))
            }
        }
        rate("SAS tokens signed with derived keys (in memory)", devices, seconds)
        context.close()
    }

    static func time<T>(_ body: () throws -> T) rethrows -> (T, Double) {
        let start = ContinuousClock.now
        let value = try body()
        let elapsed = ContinuousClock.now - start
        return (value, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    static func report(_ what: String, _ seconds: Double) {
        print(pad(what) + String(format: "%10.1f ms", seconds * 1000))
    }

    static func rate(_ what: String, _ count: Int, _ seconds: Double) {
        print(
            pad(what)
                + String(
                    format: "%10.0f ops/s  (%d in %.2f s, %.3f ms each)", Double(count) / seconds, count, seconds,
                    seconds * 1000 / Double(count)))
    }

    static func pad(_ text: String) -> String {
        text.count >= 72 ? text + " " : text.padding(toLength: 72, withPad: " ", startingAt: 0)
    }
}
