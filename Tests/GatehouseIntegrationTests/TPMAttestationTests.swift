import Crypto
import Foundation
import GatehouseTestSupport
import NIOHTTP1
import Testing

@testable import GatehouseProvisioning
@testable import GatehouseTPM

/// A fresh swtpm and a DevHub with its DPS HTTPS listener, in one temporary folder.
final class AttestationRig: @unchecked Sendable {
    // @unchecked: immutable after init; the children are used through their thread-safe API.
    static let unavailableReason: String? = {
        for tool in ["swtpm", "tpm2_readpublic", "tpm2_activatecredential", "tpm2_startauthsession"]
        where which(tool) == nil {
            return "\(tool) is not installed (scripts/setup installs swtpm and tpm2-tools)"
        }
        return nil
    }()
    static var available: Bool {
        if let reason = unavailableReason { print("TPM attestation tests skipped: \(reason)") }
        return unavailableReason == nil
    }

    let dir: TempDir
    let swtpm: Subprocess
    let socket: String
    let devhub: Subprocess
    /// The ports DevHub bound (it picks free ones and writes them to devhub.json: no races).
    let mqttPort: Int
    let controlPort: Int
    let httpsPort: Int
    static let idScope = "0ne00DEVHUB"

    var tcti: String { "swtpm:path=\(socket)" }
    var caFile: String { dir.file("devhub/ca.pem") }
    var settings: DPSSettings {
        DPSSettings(
            host: "localhost", port: httpsPort, idScope: Self.idScope, caFile: caFile,
            apiVersion: DPSTPMClient.apiVersion)
    }

    init(_ name: String = "gatehouse-dps-tpm") throws {
        dir = TempDir(name)
        let state = dir.file("swtpm-state")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        socket = dir.file("swtpm.sock")
        swtpm = try Subprocess(
            which("swtpm")!,
            [
                "socket", "--tpm2", "--tpmstate", "dir=\(state)", "--server", "type=unixio,path=\(socket)", "--ctrl",
                "type=unixio,path=\(socket).ctrl", "--flags", "not-need-init,startup-clear",
            ], in: dir, name: "swtpm")
        devhub = try Subprocess(
            Paths.binDir.appendingPathComponent("gatehouse-devhub").path,
            [
                "serve", "--data", dir.file("devhub"), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0",
                "--dps-https", "127.0.0.1:0", "--hub-name", "localhost", "--id-scope", Self.idScope,
            ], in: dir, name: "devhub")
        let info = dir.file("devhub/devhub.json")
        let socket = socket
        guard
            waitUntil(
                timeout: .seconds(20),
                {
                    FileManager.default.fileExists(atPath: socket) && FileManager.default.fileExists(atPath: info)
                }),
            let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: info)))
                as? [String: Any],
            let mqtt = (json["mqtt"] as? [String: Any])?["port"] as? Int,
            let https = (json["dpsHttps"] as? [String: Any])?["port"] as? Int,
            let control = (json["control"] as? String)?.split(separator: ":").last.flatMap({ Int($0) })
        else {
            devhub.stop()
            swtpm.stop()
            throw FixtureError("swtpm or DevHub did not start: \(devhub.stderr)")
        }
        mqttPort = mqtt
        httpsPort = https
        controlPort = control
    }

    deinit {
        devhub.stop()
        swtpm.stop()
    }

    @discardableResult
    func devhubCLI(_ arguments: [String]) throws -> String {
        let (status, output) = try Subprocess.run(
            Paths.binDir.appendingPathComponent("gatehouse-devhub").path,
            arguments + ["--url", "http://127.0.0.1:\(controlPort)"])
        guard status == 0 else {
            throw FixtureError("gatehouse-devhub \(arguments.joined(separator: " ")): \(output)")
        }
        return output
    }

    /// The EK and SRK publics (TPM2B_PUBLIC), read through our context, which is then closed.
    func tpmKeys() throws -> (endorsementKey: Data, storageRootKey: Data) {
        let context = try TPMContext(tcti: tcti)
        defer { context.close() }
        return (try context.endorsementKeyPublic(), try context.storageRootKeyPublic())
    }

    /// Enrolls this TPM's EK (or `endorsementKey`) under `registrationID` through the CLI.
    func enroll(_ registrationID: String, endorsementKey: Data? = nil, disabled: Bool = false, fault: String? = nil)
        throws
    {
        let file = dir.file("ek-\(registrationID).pub")
        try (endorsementKey ?? tpmKeys().endorsementKey).write(to: URL(fileURLWithPath: file))
        try devhubCLI(
            ["enrollment", "tpm", registrationID, "--endorsement-key-file", file] + (disabled ? ["--disabled"] : [])
                + (fault.map { ["--fault", $0] } ?? []))
    }

    /// The first PUT of TPM attestation, sent by hand: (HTTP status, JSON body).
    func challenge(_ registrationID: String) async throws -> (Int, [String: Any]) {
        let (ek, srk) = try tpmKeys()
        let body: [String: Any] = [
            "registrationId": registrationID,
            "tpm": ["endorsementKey": ek.base64EncodedString(), "storageRootKey": srk.base64EncodedString()],
        ]
        let request = HTTPSRequest(
            method: .PUT, host: "127.0.0.1", port: httpsPort,
            target: "/\(Self.idScope)/registrations/\(registrationID)/register?api-version=2021-06-01",
            headers: [("Content-Type", "application/json")],
            body: [UInt8](try JSONSerialization.data(withJSONObject: body)))
        let response = try await request.send(caFile: caFile, timeout: .seconds(10))
        return (
            response.status, (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
        )
    }

    /// Runs a tpm2-tools command against this swtpm.
    @discardableResult
    func tool(_ name: String, _ arguments: [String]) throws -> String {
        let (status, output) = try Subprocess.run(which(name)!, ["-T", tcti] + arguments)
        guard status == 0 else {
            throw FixtureError("\(name) \(arguments.joined(separator: " ")) → \(status): \(output)")
        }
        return output
    }
}

@Suite(
    "DPS TPM attestation against DevHub", .serialized,
    .enabled(if: AttestationRig.available, "needs swtpm and tpm2-tools: run scripts/setup"))
struct TPMAttestationTests {
    @Test("DevHub's MakeCredential is activated by tpm2_activatecredential (independent cross-check)")
    func devHubCredentialActivatesWithTPM2Tools() async throws {
        let rig = try AttestationRig()
        try rig.enroll("gw-cross")
        let (status, body) = try await rig.challenge("gw-cross")
        #expect(status == 401)
        #expect(body["keyName"] as? String == "registration")
        let blob = try AuthenticationKeyBlob(base64: try #require(body["authenticationKey"] as? String))

        // tpm2-tools' credential file: magic, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
        var file = Data([0xBA, 0xDC, 0xC0, 0xDE, 0x00, 0x00, 0x00, 0x01])
        for part in [blob.credentialBlob, blob.secret] {
            file.append(contentsOf: [UInt8(part.count >> 8), UInt8(part.count & 0xFF)])
            file.append(part)
        }
        try file.write(to: URL(fileURLWithPath: rig.dir.file("cred.bin")))
        let session = rig.dir.file("session.ctx")
        try rig.tool("tpm2_startauthsession", ["--policy-session", "-S", session])
        try rig.tool("tpm2_policysecret", ["-S", session, "-c", "e"])
        try rig.tool(
            "tpm2_activatecredential",
            [
                "-c", "0x81000001", "-C", "0x81010001", "-i", rig.dir.file("cred.bin"), "-o", rig.dir.file("inner.key"),
                "-P", "session:\(session)",
            ])
        _ = try? rig.tool("tpm2_flushcontext", [session])
        // The inner wrapper key for the duplicate: AES-128.
        #expect(try Data(contentsOf: URL(fileURLWithPath: rig.dir.file("inner.key"))).count == 16)

        // The duplicate imports too, through our TPM code, and the TPM then signs with DevHub's key.
        let context = try TPMContext(tcti: rig.tcti)
        defer { context.close() }
        try context.importAuthenticationKey(blob)
        #expect(try context.persistentHandles().contains(TPMContext.authenticationKeyHandle))
    }

    @Test(
        "the client registers through DevHub's HTTPS DPS (after a 429 with Retry-After); the hub device's key is the one in the TPM"
    )
    func clientRegisters() async throws {
        let rig = try AttestationRig()
        try rig.enroll("gw-lib", fault: "throttle")  // the first PUT is answered 429, Retry-After: 1
        let context = try TPMContext(tcti: rig.tcti)
        defer { context.close() }
        let assignment = try await DPSTPMClient.register(registrationID: "gw-lib", settings: rig.settings, tpm: context)
        #expect(assignment == DPSAssignment(assignedHub: "localhost", deviceID: "gw-lib"))

        // DevHub created the device with the hub key; the TPM's HMAC at 0x81000100 matches it.
        let device = try JSONSerialization.jsonObject(with: Data(try rig.devhubCLI(["device", "show", "gw-lib"]).utf8))
        let key = try #require(Data(base64Encoded: (device as? [String: Any])?["primaryKey"] as? String ?? ""))
        let message = Data("localhost%2Fdevices%2Fgw-lib\n1900000000".utf8)
        let expected = Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
        #expect(try context.hmac(persistentKey: TPMContext.authenticationKeyHandle, message) == expected)
        #expect(try context.loadedHandleCount() == 0)
    }

    @Test("refusals: not enrolled, another EK, a disabled enrollment (failed), a tampered blob")
    func refusals() async throws {
        let rig = try AttestationRig()
        let context = try TPMContext(tcti: rig.tcti)

        let notEnrolled = try await #require(throws: ProvisioningError.self) {
            try await DPSTPMClient.register(registrationID: "nobody", settings: rig.settings, tpm: context)
        }
        #expect(notEnrolled.code == .notEnrolled)
        #expect(notEnrolled.message.contains("has no TPM individual enrollment") == true, "\(notEnrolled)")

        // An EK of the same shape but another modulus.
        var otherKey = [UInt8](try context.endorsementKeyPublic())
        otherKey[otherKey.count - 1] ^= 0x01
        context.close()
        try rig.enroll("gw-other", endorsementKey: Data(otherKey))
        try rig.enroll("gw-off", disabled: true)
        try rig.enroll("gw-tamper")
        let reopened = try TPMContext(tcti: rig.tcti)
        defer { reopened.close() }

        let mismatch = try await #require(throws: ProvisioningError.self) {
            try await DPSTPMClient.register(registrationID: "gw-other", settings: rig.settings, tpm: reopened)
        }
        #expect(mismatch.code == .notEnrolled)
        #expect(mismatch.message.contains("does not match the enrollment") == true, "\(mismatch)")

        let disabled = try await #require(throws: ProvisioningError.self) {
            try await DPSTPMClient.register(registrationID: "gw-off", settings: rig.settings, tpm: reopened)
        }
        #expect(disabled.code == .failed)
        #expect(disabled.message.contains("status failed") == true, "\(disabled)")
        #expect(disabled.message.contains("the enrollment is disabled") == true)

        // DevHub's blob with one bit flipped in the duplicate: the TPM refuses it, by name.
        reopened.close()
        let (_, body) = try await rig.challenge("gw-tamper")
        var blob = try AuthenticationKeyBlob(base64: try #require(body["authenticationKey"] as? String))
        var duplicate = [UInt8](blob.duplicate)
        duplicate[40] ^= 0x01
        blob.duplicate = Data(duplicate)
        let third = try TPMContext(tcti: rig.tcti)
        defer { third.close() }
        // (The disabled registration above left its registration key at 0x81000100.)
        let before = try third.hmac(persistentKey: TPMContext.authenticationKeyHandle, Data("probe".utf8))
        let tampered = try #require(throws: ProvisioningError.self) {
            try DPSTPMClient.importBlob(blob.encoded.base64EncodedString(), into: third, what: "the registration key")
        }
        #expect(tampered.code == .blobRefused)
        #expect(tampered.message.contains("Esys_Import") == true, "\(tampered)")
        #expect(tampered.message.contains("altered") == true)
        // Nothing was replaced, nothing left loaded.
        #expect(try third.hmac(persistentKey: TPMContext.authenticationKeyHandle, Data("probe".utf8)) == before)
        #expect(try third.loadedHandleCount() == 0)

        // DPS unreachable: a port nobody listens on.
        var nowhere = rig.settings
        nowhere.port = freePort()
        let unreachable = try await #require(throws: ProvisioningError.self) {
            try await DPSTPMClient.register(registrationID: "gw-tamper", settings: nowhere, tpm: third)
        }
        #expect(unreachable.code == .unreachable)

        // A DPS whose certificate the configured CA did not sign: refused in the TLS handshake.
        var untrusted = rig.settings
        untrusted.caFile = rig.dir.file("other-ca.pem")
        let (made, output) = try Subprocess.run(
            try #require(which("openssl")),
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                rig.dir.file("other-ca.key"), "-out", rig.dir.file("other-ca.pem"), "-subj", "/CN=another CA",
                "-days", "1",
            ])
        #expect(made == 0, "\(output)")
        let handshake = try await #require(throws: ProvisioningError.self) {
            try await DPSTPMClient.register(registrationID: "gw-tamper", settings: untrusted, tpm: third)
        }
        #expect(handshake.code == .unreachable)
        #expect("\(handshake)".contains("localhost:\(rig.httpsPort)"), "\(handshake)")
    }
}

extension TPMAttestationTests {
    @Test("symmetric-key attestation over DevHub's HTTPS DPS: SAS in Authorization, 202, poll, assigned")
    func symmetricKeyOverHTTPS() async throws {
        let rig = try AttestationRig()
        let groupKey = [UInt8](repeating: 7, count: 32)
        try rig.devhubCLI(["group", "create", "line-1", "--key", Data(groupKey).base64EncodedString()])
        let deviceKey = HMAC<SHA256>.authenticationCode(for: Data("sym-1".utf8), using: SymmetricKey(data: groupKey))
        func sas(_ key: some ContiguousBytes) -> String {
            let sr = "\(AttestationRig.idScope)%2Fregistrations%2Fsym-1"
            let se = Int(Date().timeIntervalSince1970) + 600
            let sig = Data(
                HMAC<SHA256>.authenticationCode(for: Data("\(sr)\n\(se)".utf8), using: SymmetricKey(data: key))
            )
            .base64EncodedString().addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
            return "SharedAccessSignature sr=\(sr)&sig=\(sig)&se=\(se)&skn=registration"
        }
        func send(_ method: HTTPMethod, _ target: String, _ authorization: String) async throws -> (Int, [String: Any])
        {
            let request = HTTPSRequest(
                method: method, host: "localhost", port: rig.httpsPort, target: target,
                headers: [("Authorization", authorization), ("Content-Type", "application/json")],
                body: method == .PUT ? Array(#"{"registrationId":"sym-1"}"#.utf8) : [])
            let response = try await request.send(caFile: rig.caFile, timeout: .seconds(10))
            return (
                response.status, (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
            )
        }
        let base = "/\(AttestationRig.idScope)/registrations/sym-1"
        let (refused, _) = try await send(
            .PUT, "\(base)/register?api-version=2021-06-01", sas([UInt8](repeating: 1, count: 32)))
        #expect(refused == 401)
        let token = sas(Data(deviceKey))
        let (accepted, body) = try await send(.PUT, "\(base)/register?api-version=2021-06-01", token)
        #expect(accepted == 202)
        let operationID = try #require(body["operationId"] as? String)
        let (first, _) = try await send(.GET, "\(base)/operations/\(operationID)?api-version=2021-06-01", token)
        #expect(first == 202)
        let (second, result) = try await send(.GET, "\(base)/operations/\(operationID)?api-version=2021-06-01", token)
        #expect(second == 200)
        #expect(result["status"] as? String == "assigned")
        let state = try #require(result["registrationState"] as? [String: Any])
        #expect(state["assignedHub"] as? String == "localhost")
        #expect(state["deviceId"] as? String == "sym-1")
    }
}

/// The real gatehoused registering itself by TPM attestation through DevHub's HTTPS DPS.
@Suite(
    "gatehoused's own identity by DPS TPM attestation", .serialized,
    .enabled(
        if: AttestationRig.available && MosquittoBroker.available,
        "needs swtpm, tpm2-tools and mosquitto: scripts/setup")
)
struct GatewayIdentityTests {
    /// A GatewayRig whose [hub] is DevHub, with the TPM as identity and the gateway's own
    /// registration id in [provisioning].
    func gatewayRig(_ rig: AttestationRig, registrationID: String, tcti: String? = nil) throws -> GatewayRig {
        let gateway = try GatewayRig(
            extraConfig: """
                [provisioning]
                id_scope = "\(AttestationRig.idScope)"
                endpoint = "localhost"
                https_port = \(rig.httpsPort)
                ca_file = "\(rig.caFile)"
                gateway_registration_id = "\(registrationID)"
                """,
            hubSection: "hostname = \"localhost\"\nport = \(rig.mqttPort)\nca_file = \"\(rig.caFile)\"", in: rig.dir)
        var config = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        config = config.replacingOccurrences(
            of: "group_key_file = \"\(rig.dir.file("group.key"))\"", with: "tpm = \"\(tcti ?? rig.tcti)\"")
        try config.write(toFile: gateway.configPath, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: rig.dir.file("group.key"))
        return gateway
    }

    func connected(_ rig: AttestationRig, _ device: String) -> Bool {
        ((try? rig.devhubCLI(["devices"])) ?? "").split(separator: "\n").contains {
            $0.hasPrefix("\(device)\t") && $0.contains("\tconnected since")
        }
    }

    @Test("gatehoused provisions itself, connects under its own TPM-signed identity, reuses it after a restart")
    func provisionsItself() throws {
        let rig = try AttestationRig("gatehouse-gw-identity")
        try rig.enroll("gw-site-a")
        let gateway = try gatewayRig(rig, registrationID: "gw-site-a")
        let first = try gateway.startGateway()
        #expect(
            waitUntil(timeout: .seconds(30)) { connected(rig, "gw-site-a") },
            "\(gateway.gatewayLogs.suffix(3000))")
        #expect(gateway.gatewayLogs.contains("gateway registered with DPS (TPM attestation)"))
        let identity = try #require(try gateway.status()["gatewayIdentity"] as? [String: Any])
        #expect(identity["deviceID"] as? String == "gw-site-a")
        #expect(identity["assignedHub"] as? String == "localhost")
        #expect(identity["attestation"] as? String == "tpm")
        let (_, text) = try Subprocess.run(Paths.gatehouseCLI, ["status", "-c", gateway.configPath])
        #expect(text.contains("gateway identity: device gw-site-a on localhost"), "\(text)")

        // A restart reuses the recorded assignment and the key in the TPM: no new registration.
        first.stop()
        #expect(waitUntil(timeout: .seconds(10)) { !connected(rig, "gw-site-a") })
        try gateway.startGateway()
        #expect(waitUntil(timeout: .seconds(30)) { connected(rig, "gw-site-a") }, "\(gateway.gatewayLogs.suffix(2000))")
        #expect(gateway.gatewayLogs.contains("gateway identity reused from the state database"))
        gateway.gateway?.stop()

        // The key gone from the TPM: the next start registers again.
        #expect(waitUntil(timeout: .seconds(10)) { !connected(rig, "gw-site-a") })
        try rig.tool("tpm2_evictcontrol", ["-C", "o", "-c", "0x81000100"])
        try gateway.startGateway()
        #expect(waitUntil(timeout: .seconds(30)) { connected(rig, "gw-site-a") }, "\(gateway.gatewayLogs.suffix(2000))")
        #expect(gateway.gatewayLogs.contains("has no key in the TPM any more; registering with DPS again"))
        #expect(gateway.gatewayLogs.components(separatedBy: "gateway registered with DPS (TPM attestation)").count == 3)
        gateway.gateway?.stop()

        // No key material on disk or in the logs: the hub key (DevHub's record of it), SAS tokens.
        let device = try JSONSerialization.jsonObject(
            with: Data(try rig.devhubCLI(["device", "show", "gw-site-a"]).utf8))
        let hubKey = try #require((device as? [String: Any])?["primaryKey"] as? String)
        let files = try FileManager.default.subpathsOfDirectory(atPath: rig.dir.path).filter {
            !$0.hasPrefix("devhub") && !$0.hasPrefix("swtpm") && !$0.hasPrefix("cmd")
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: rig.dir.file(file)) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            #expect(!text.contains(hubKey), "\(file) holds the hub key")
            #expect(data.range(of: Data(base64Encoded: hubKey)!) == nil, "\(file) holds the raw hub key")
            #expect(!text.contains("SharedAccessSignature"), "\(file) holds a SAS token")
            #expect(!text.contains("authenticationKey"), "\(file) holds an authenticationKey blob")
        }
        #expect(files.contains("state.db"))
        // DevHub's own log neither (its database holds the device key, as IoT Hub's registry does).
        #expect(!rig.devhub.stderr.contains(hubKey))
        #expect(!rig.devhub.stderr.contains("SharedAccessSignature"))
        #expect(!rig.devhub.stderr.contains("sig="))
    }

    @Test("refusals stop gatehoused with an exit code and a message naming the cause")
    func refusals() throws {
        let rig = try AttestationRig("gatehouse-gw-refusals")
        try rig.enroll("gw-off", disabled: true)
        try rig.enroll("gw-tamper", fault: "tamper-authentication-key")

        // No TPM at the configured TCTI.
        let missing = rig.dir.file("no-such-tpm.sock")
        let noTPM = try gatewayRig(rig, registrationID: "gw-off", tcti: "swtpm:path=\(missing)")
        let child = try noTPM.startGateway()
        #expect(child.wait(timeout: .seconds(20)) == 78)
        #expect(
            child.stderr.contains("[identity] tpm = \"swtpm:path=\(missing)\": the TPM is not reachable"),
            "\(child.stderr)")

        for (registrationID, expected, code) in [
            ("gw-unknown", "has no TPM individual enrollment", "dps.not-enrolled"),
            ("gw-off", "status failed", "dps.failed"),
            (
                "gw-tamper", "the TPM refused the registration key (the 401 challenge) from DPS in Esys_Import",
                "dps.blob-refused"
            ),
        ] {
            var config = try String(contentsOfFile: noTPM.configPath, encoding: .utf8)
            config = config.replacingOccurrences(of: "swtpm:path=\(missing)", with: rig.tcti)
            config.replace(
                #/gateway_registration_id = "[^"]*"/#, with: "gateway_registration_id = \"\(registrationID)\"")
            try config.write(toFile: noTPM.configPath, atomically: true, encoding: .utf8)
            let child = try noTPM.startGateway()
            #expect(child.wait(timeout: .seconds(30)) == 78, "\(child.stderr)")
            #expect(child.stderr.contains("gateway_registration_id = \"\(registrationID)\""), "\(child.stderr)")
            #expect(child.stderr.contains(expected), "\(child.stderr)")
            #expect(child.stderr.contains(code), "\(child.stderr)")
        }

        // DPS unreachable: exit 69 (EX_UNAVAILABLE), so systemd may try again later.
        var config = try String(contentsOfFile: noTPM.configPath, encoding: .utf8)
        config = config.replacingOccurrences(of: "https_port = \(rig.httpsPort)", with: "https_port = \(freePort())")
        try config.write(toFile: noTPM.configPath, atomically: true, encoding: .utf8)
        let offline = try noTPM.startGateway()
        #expect(offline.wait(timeout: .seconds(30)) == 69, "\(offline.stderr)")
        #expect(offline.stderr.contains("cannot connect to https://localhost:"), "\(offline.stderr)")
        #expect(offline.stderr.contains("[dps.unreachable]"), "\(offline.stderr)")
    }
}
