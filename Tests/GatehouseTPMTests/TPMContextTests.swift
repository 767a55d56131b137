import Foundation
import GatehouseTestSupport
import Testing

@testable import GatehouseTPM

/// Against a real software TPM (swtpm), cross-checked with tpm2-tools and openssl.
@Suite(.enabled(if: SoftwareTPM.isAvailable, "needs swtpm, tpm2-tools and openssl (scripts/setup)"))
struct TPMContextTests {
    @Test func endorsementAndStorageKeysMatchTPM2Tools() throws {
        let tpm = try SoftwareTPM(transport: .tcp)
        let context = try TPMContext(tcti: tpm.tcti)
        let ek = try context.endorsementKeyPublic()
        let srk = try context.storageRootKeyPublic()
        let srkName = try context.storageRootKeyName()
        #expect(try context.persistentHandles() == [TPMContext.storageRootKeyHandle, TPMContext.endorsementKeyHandle])
        context.close()  // swtpm serves one client: release it for tpm2-tools

        // The persisted keys, as tpm2-tools reads them.
        try tpm.tool("tpm2_readpublic", ["-c", "0x81010001", "-o", tpm.dir.file("ek.pub")])
        try tpm.tool(
            "tpm2_readpublic", ["-c", "0x81000001", "-o", tpm.dir.file("srk.pub"), "-n", tpm.dir.file("srk.name")])
        #expect(try Data(contentsOf: URL(fileURLWithPath: tpm.dir.file("ek.pub"))) == ek)
        #expect(try Data(contentsOf: URL(fileURLWithPath: tpm.dir.file("srk.pub"))) == srk)
        #expect(try Data(contentsOf: URL(fileURLWithPath: tpm.dir.file("srk.name"))) == srkName)

        // tpm2_createek builds the TCG template L-1 itself: the same seed and template give the
        // same key, so this checks our template independently.
        try tpm.tool("tpm2_createek", ["-c", tpm.dir.file("ek.ctx"), "-G", "rsa", "-u", tpm.dir.file("ek2.pub")])
        #expect(try Data(contentsOf: URL(fileURLWithPath: tpm.dir.file("ek2.pub"))) == ek)

        // Shape: TPM2B size 0x013A, RSA, SHA-256, the EK attributes and policy, 2048-bit.
        let bytes = [UInt8](ek)
        #expect(Int(bytes[0]) << 8 | Int(bytes[1]) == bytes.count - 2)
        #expect(Array(bytes[2..<8]) == [0x00, 0x01, 0x00, 0x0B, 0x00, 0x03])
        #expect(Array(bytes[12..<44]) == Templates.endorsementPolicy)
    }

    @Test func persistentKeysAreReusedAfterReopen() throws {
        let tpm = try SoftwareTPM()
        let first = try TPMContext(tcti: tpm.tcti)
        let ek = try first.endorsementKeyPublic()
        let srk = try first.storageRootKeyPublic()
        first.close()
        #expect(throws: TPMError.self) { try first.endorsementKeyPublic() }
        let second = try TPMContext(tcti: tpm.tcti)
        #expect(try second.endorsementKeyPublic() == ek)
        #expect(try second.storageRootKeyPublic() == srk)
        #expect(try second.persistentHandles().count == 2)
    }

    @Test func startsUpATPMThatWasNotStarted() throws {
        let tpm = try SoftwareTPM(startedUp: false)
        let context = try TPMContext(tcti: tpm.tcti)
        #expect(try context.storageRootKeyPublic().count > 256)
    }

    @Test(arguments: ["tcp", "unix"])
    func noTPMReachableIsAClearError(transport: String) throws {
        let tcti =
            transport == "tcp"
            ? "swtpm:host=127.0.0.1,port=\(try SoftwareTPM.freePortPair())"
            : "swtpm:path=\(TempDir().file("no-such.sock"))"
        let error = try #require(throws: TPMError.self) { try TPMContext(tcti: tcti) }
        #expect(error.code ~= .tctiLayer)
        #expect(error.description.contains("no TPM reachable through TCTI '\(tcti)'"))
    }

    @Test(arguments: [16, 32, 64, 100])
    func importedKeyHMACMatchesOpenSSL(keyLength: Int) throws {
        let tpm = try SoftwareTPM()
        let context = try TPMContext(tcti: tpm.tcti)
        let groupKey = randomBytes(keyLength)
        let wrapped = try context.importHMACKey(groupKey)
        // The per-device key of a DPS enrollment group: HMAC(group key, registration id).
        for registrationID in ["device-001", "Leaf.Sensor_42:a", ""] {
            let derived = try context.hmac(wrapped, Data(registrationID.utf8))
            #expect([UInt8](derived) == (try OpenSSL.hmac(key: groupKey, message: Array(registrationID.utf8))))
        }
        // Nothing of the key in the wrapped blob.
        #expect(wrapped.serialized.range(of: Data(groupKey)) == nil)
        #expect(try context.loadedHandleCount() == 0)
    }

    @Test(arguments: [1024, 1025, 3000])
    func longMessagesMatchOpenSSL(length: Int) throws {
        let tpm = try SoftwareTPM()
        let context = try TPMContext(tcti: tpm.tcti)
        let key = randomBytes(32)
        let message = randomBytes(length)
        let wrapped = try context.importHMACKey(key)
        #expect([UInt8](try context.hmac(wrapped, message)) == (try OpenSSL.hmac(key: key, message: message)))
        #expect(try context.loadedHandleCount() == 0)
    }

    @Test func wrappedKeyWorksAfterReopenFromItsFileForm() throws {
        let tpm = try SoftwareTPM()
        let key = randomBytes(64)
        let file = tpm.dir.file("group.key")
        do {
            let context = try TPMContext(tcti: tpm.tcti)
            try context.importHMACKey(key).serialized.write(to: URL(fileURLWithPath: file))
        }
        let stored = try Data(contentsOf: URL(fileURLWithPath: file))
        #expect(stored.range(of: Data(key)) == nil)
        let context = try TPMContext(tcti: tpm.tcti)
        let wrapped = try WrappedKey(serialized: stored)
        #expect(wrapped.serialized == stored)
        #expect([UInt8](try context.hmac(wrapped, Data("x".utf8))) == (try OpenSSL.hmac(key: key, message: [0x78])))

        // Altered blobs are refused with a clear error, before or by the TPM.
        var altered = [UInt8](stored)
        altered[altered.count - 5] ^= 0x01
        let error = try #require(throws: TPMError.self) {
            try context.hmac(WrappedKey(serialized: Data(altered)), Data("x".utf8))
        }
        #expect(error.operation == "Esys_Load")
        #expect(error.code ~= .integrity)
        #expect(throws: TPMError.self) { try WrappedKey(serialized: Data("GHWK".utf8)) }
        #expect(try context.loadedHandleCount() == 0)
    }

    /// swtpm holds about three transient objects: a leak shows up as 0x902 within a few calls.
    @Test func fiftyOperationsInARowLeakNothing() throws {
        let tpm = try SoftwareTPM()
        let context = try TPMContext(tcti: tpm.tcti)
        let key = randomBytes(32)
        let wrapped = try context.importHMACKey(key)
        for index in 0..<50 {
            _ = try context.importHMACKey(randomBytes(32))
            _ = try context.hmac(wrapped, Data("message \(index)".utf8))
            let loaded = try context.load(wrapped)
            _ = try context.hmac(loaded, randomBytes(2000))  // an HMAC sequence
            context.flush(loaded)
            // Failing operations must flush too.
            #expect(throws: TPMError.self) { try context.hmac(loaded, Data()) }
            #expect(throws: TPMError.self) {
                try context.hmac(WrappedKey(publicArea: wrapped.publicArea, privateArea: Data([0, 2, 1, 2])), Data())
            }
        }
        #expect(try context.loadedHandleCount() == 0)
        #expect(
            [UInt8](try context.hmac(wrapped, Data("end".utf8)))
                == (try OpenSSL.hmac(key: key, message: Array("end".utf8))))
    }

    /// One context shared by many tasks: the mutex serialises them on the one TPM connection.
    @Test func concurrentCallersShareOneContext() async throws {
        let tpm = try SoftwareTPM()
        let context = try TPMContext(tcti: tpm.tcti)
        let key = randomBytes(32)
        let wrapped = try context.importHMACKey(key)
        let results = try await withThrowingTaskGroup(of: (String, Data).self) { group in
            for task in 0..<8 {
                group.addTask {
                    var last = ("", Data())
                    for index in 0..<25 {
                        let message = "task \(task) message \(index)"
                        last = (message, try context.hmac(wrapped, Data(message.utf8)))
                    }
                    return last
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 8)
        for (message, mac) in results {
            #expect([UInt8](mac) == (try OpenSSL.hmac(key: key, message: Array(message.utf8))))
        }
        #expect(try context.loadedHandleCount() == 0)
    }

    @Test func persistentKeyByHandle() throws {
        let tpm = try SoftwareTPM()
        let context = try TPMContext(tcti: tpm.tcti)
        let key = randomBytes(32)
        try context.persist(try context.importHMACKey(key), at: TPMContext.authenticationKeyHandle)
        let token = try SharedAccessSignature.make(
            resource: "hub.example.net/devices/gateway-1", expiry: 1_700_000_000, context: context)
        let expected = try OpenSSL.hmac(
            key: key, message: Array("hub.example.net%2Fdevices%2Fgateway-1\n1700000000".utf8))
        let signature = SharedAccessSignature.percentEncode(Data(expected).base64EncodedString())
        #expect(
            token == "SharedAccessSignature sr=hub.example.net%2Fdevices%2Fgateway-1&sig=\(signature)&se=1700000000")
        // Replacing the persistent key works, and the EK/SRK cannot be evicted.
        try context.persist(try context.importHMACKey(randomBytes(32)), at: TPMContext.authenticationKeyHandle)
        #expect(
            try context.persistentHandles() == [TPMContext.storageRootKeyHandle, TPMContext.authenticationKeyHandle])
        #expect(throws: TPMError.self) { try context.evictPersistent(TPMContext.storageRootKeyHandle) }
        try context.evictPersistent(TPMContext.authenticationKeyHandle)
        let error = try #require(throws: TPMError.self) { try context.hmac(persistentKey: 0x8100_0100, Data()) }
        #expect(error.code ~= .notFound)
        #expect(try context.loadedHandleCount() == 0)
    }
}
