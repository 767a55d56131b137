import Crypto
import Foundation
import GatehouseTPM
import GatehouseTestSupport
import Testing

@testable import GatehouseProvisioning

#if canImport(Glibc)
    import Glibc
#endif

/// Issue #5, the whole story with real processes: a fresh swtpm, DevHub (IoT Hub + DPS over MQTT
/// and HTTPS), a mosquitto site broker and gatehoused. The gateway registers itself by TPM
/// attestation, the enrollment-group key is imported into the TPM, and leaf devices that appear
/// on the site broker are registered with DPS on their behalf (their keys derived in the TPM)
/// and relayed under their own identities.
@Suite(
    "Leaf devices provisioned through DPS with the gateway's TPM", .serialized,
    .enabled(
        if: AttestationRig.available && MosquittoBroker.available,
        "needs swtpm, tpm2-tools and mosquitto: scripts/setup")
)
struct LeafProvisioningTests {
    /// A GatewayRig whose [hub] is DevHub, [identity] the swtpm with the group key imported from
    /// stdin by `gatehouse tpm import-group-key`; `gatewayID` adds the gateway's own registration.
    static func gatewayRig(
        _ rig: AttestationRig, groupKey: [UInt8], allow: String = "leaf-*", gatewayID: String? = nil,
        concurrency: Int = 4
    ) throws -> GatewayRig {
        let gateway = try GatewayRig(
            extraConfig: """
                [provisioning]
                id_scope = "\(AttestationRig.idScope)"
                endpoint = "localhost"
                port = \(rig.mqttPort)
                https_port = \(rig.httpsPort)
                ca_file = "\(rig.caFile)"
                allow = ["\(allow)"]
                concurrency = \(concurrency)
                \(gatewayID.map { "gateway_registration_id = \"\($0)\"" } ?? "")
                """,
            hubSection: "hostname = \"localhost\"\nport = \(rig.mqttPort)\nca_file = \"\(rig.caFile)\"", in: rig.dir)
        // The TPM instead of the plaintext key file the rig writes.
        var config = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        config = config.replacingOccurrences(
            of: "group_key_file = \"\(rig.dir.file("group.key"))\"",
            with: "tpm = \"\(rig.tcti)\"\ngroup_key_blob = \"\(rig.dir.file("tpm/group-key.blob"))\"")
        try config.write(toFile: gateway.configPath, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(atPath: rig.dir.file("group.key"))

        // The key is read from stdin; only the TPM-wrapped blob stays on disk.
        let input = try rig.dir.write("key-input", Data(groupKey).base64EncodedString() + "\n")
        let importer = try Subprocess(
            Paths.gatehouseCLI, ["tpm", "import-group-key", "-c", gateway.configPath], in: rig.dir, name: "import",
            stdin: FileHandle(forReadingAtPath: input))
        let status = importer.wait(timeout: .seconds(30))
        try FileManager.default.removeItem(atPath: input)
        guard status == 0, importer.stdout.contains("imported into the TPM") else {
            throw FixtureError("import-group-key → \(status.map(String.init) ?? "timeout"): \(importer.stderr)")
        }
        return gateway
    }

    /// `waitUntil` that yields its thread between polls (every 250 ms: the conditions run
    /// subprocesses): Swift Testing runs tests on Swift concurrency's pool (two threads on these
    /// VMs), and a test blocking one for its whole minute starved other suites' tasks.
    static func eventually(timeout: Duration, _ condition: () throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if try condition() { return true }
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    static func derivedKey(_ groupKey: [UInt8], _ device: String) -> Data {
        Data(HMAC<SHA256>.authenticationCode(for: Data(device.utf8), using: SymmetricKey(data: groupKey)))
    }

    /// DevHub's received telemetry as (device, payload).
    static func telemetry(_ rig: AttestationRig) throws -> [(device: String, payload: String)] {
        let json = try rig.devhubCLI(["telemetry", "--json", "--limit", "100000"])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8))
        let messages =
            (object as? [String: Any])?["messages"] as? [[String: Any]] ?? (object as? [[String: Any]] ?? [])
        return messages.map { ($0["deviceId"] as? String ?? "", $0["payload"] as? String ?? "") }
    }

    /// The registry as `gatehouse status --json` shows it: device → provisioning state.
    static func provisioning(_ gateway: GatewayRig) -> [String: String] {
        let devices = ((try? gateway.status())?["devices"] as? [[String: Any]]) ?? []
        return Dictionary(
            devices.map { ($0["id"] as? String ?? "", $0["provisioning"] as? String ?? "") },
            uniquingKeysWith: { a, _ in a })
    }

    /// Publishes `lines` as QoS 1 telemetry of each device (its own client id), `parallel` at a time.
    static func publish(_ devices: [String], lines: (String) -> [String], site: MosquittoBroker, in dir: TempDir)
        throws -> [String]
    {
        var failed: [String] = []
        for chunk in stride(from: 0, to: devices.count, by: 25).map({ Array(devices[$0..<min($0 + 25, devices.count)]) }
        ) {
            var children: [(String, Subprocess)] = []
            for device in chunk {
                let input = try dir.write("pub-\(device).txt", lines(device).joined(separator: "\n") + "\n")
                children.append(
                    (
                        device,
                        try Subprocess(
                            which("mosquitto_pub")!,
                            site.clientArguments + [
                                "-q", "1", "-i", device, "-l", "-t", "devices/\(device)/messages/events/",
                            ], in: dir, name: "pub-\(device)", stdin: FileHandle(forReadingAtPath: input))
                    ))
            }
            for (device, child) in children where child.wait(timeout: .seconds(30)) != 0 { failed.append(device) }
        }
        return failed
    }

    @Test(
        "the gateway registers itself by TPM attestation; 100 new leaf devices are registered through DPS with keys derived in the TPM and relayed under their own ids; no key material in plaintext"
    )
    func hundredLeaves() async throws {
        let rig = try AttestationRig("gatehouse-prov100")
        try rig.enroll("gw-site-a")
        let groupKey = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let groupKeyText = Data(groupKey).base64EncodedString()
        try rig.devhubCLI(["group", "create", "site-a", "--key", groupKeyText])
        let gateway = try Self.gatewayRig(rig, groupKey: groupKey, gatewayID: "gw-site-a")
        try gateway.startGateway()
        #expect(
            await Self.eventually(timeout: .seconds(30)) {
                ((try? rig.devhubCLI(["devices"])) ?? "").contains("gw-site-a\tconnected since")
            }, "\(gateway.gatewayLogs.suffix(3000))")
        let identity = try gateway.status()["gatewayIdentity"] as? [String: Any]
        #expect(identity?["deviceID"] as? String == "gw-site-a")

        let devices = (1...100).map { String(format: "leaf-%03d", $0) }
        let started = ContinuousClock.now
        let unpublished = try Self.publish(
            devices, lines: { ["\($0) m1", "\($0) m2"] }, site: gateway.site, in: rig.dir)
        #expect(unpublished.isEmpty, "mosquitto_pub failed for \(unpublished)")
        let published = ContinuousClock.now

        let allAssigned = await Self.eventually(timeout: .seconds(75)) {
            let states = Self.provisioning(gateway)
            return devices.allSatisfy { states[$0] == "assigned" }
        }
        let assignedAt = ContinuousClock.now
        let allRelayed = await Self.eventually(timeout: .seconds(30)) {
            ((try? Self.telemetry(rig)) ?? []).count >= 200
        }
        let relayedAt = ContinuousClock.now
        print(
            "100 leaves: published in \(published - started), all assigned after \(assignedAt - started), all relayed after \(relayedAt - started)"
        )
        let states = Self.provisioning(gateway)
        #expect(
            allAssigned,
            "not assigned: \(devices.filter { states[$0] != "assigned" }.map { "\($0)=\(states[$0] ?? "-")" }.prefix(10)) \(gateway.gatewayLogs.suffix(2000))"
        )
        #expect(allRelayed)

        // Every device's two messages, in order, under its own id — and nothing else.
        let received = try Self.telemetry(rig)
        var byDevice: [String: [String]] = [:]
        for message in received { byDevice[message.device, default: []].append(message.payload) }
        for device in devices { #expect(byDevice[device] == ["\(device) m1", "\(device) m2"], "\(device)") }
        #expect(Set(byDevice.keys) == Set(devices))

        // DevHub made the devices through DPS: 100 leaves and the gateway.
        let listed = try JSONSerialization.jsonObject(with: Data(try rig.devhubCLI(["devices", "--json"]).utf8))
        let hubDevices = ((listed as? [[String: Any]]) ?? []).compactMap { $0["deviceId"] as? String }
        #expect(Set(hubDevices) == Set(devices + ["gw-site-a"]))
        #expect(hubDevices.count == 101)
        let registrations = try JSONSerialization.jsonObject(
            with: Data(try rig.devhubCLI(["device", "show", "leaf-042"]).utf8))
        #expect((registrations as? [String: Any])?["source"] as? String == "dps:group:site-a")
        // heartbeat: 1 s
        #expect(await Self.eventually(timeout: .seconds(5)) { gateway.daemonCounter("outboxMessages") == 0 })
        gateway.gateway?.stop()

        // The plaintext scan: no group key, no derived key (base64 or raw), no SAS token or
        // signature anywhere gatehouse wrote (state, blob, logs), nor in DevHub's log. DevHub's
        // data folder holds device keys as IoT Hub's registry does, and swtpm's state is the TPM.
        let derived = devices.map { Self.derivedKey(groupKey, $0) }
        let files = try FileManager.default.subpathsOfDirectory(atPath: rig.dir.path).filter {
            !$0.hasPrefix("devhub/") && $0 != "devhub" && !$0.hasPrefix("swtpm-state")
        }
        #expect(files.contains("state.db"))
        #expect(files.contains("tpm/group-key.blob"))
        #expect(files.contains("devhub.err"))
        for file in files {
            guard let data = FileManager.default.contents(atPath: rig.dir.file(file)) else { continue }
            let text = String(decoding: data, as: UTF8.self)
            #expect(!text.contains(groupKeyText), "\(file) holds the group key")
            #expect(data.range(of: Data(groupKey)) == nil, "\(file) holds the raw group key")
            for (device, key) in zip(devices, derived) {
                #expect(!text.contains(key.base64EncodedString()), "\(file) holds \(device)'s derived key")
                #expect(data.range(of: key) == nil, "\(file) holds \(device)'s raw derived key")
            }
            #expect(!text.contains("SharedAccessSignature"), "\(file) holds a SAS token")
            #expect(!text.contains("sig="), "\(file) holds a SAS signature")
        }
    }

    @Test(
        "refusals: a wrong group key and a disabled group leave the device failed with DPS's reason, its telemetry waiting; fixed, nothing is lost"
    )
    func refusals() async throws {
        let rig = try AttestationRig("gatehouse-prov-refusals")
        let keyA = (0..<32).map { _ in UInt8.random(in: 0...255) }
        let keyB = (0..<32).map { _ in UInt8.random(in: 0...255) }
        // gatehouse's TPM holds key A; DevHub's group has key B.
        try rig.devhubCLI(["group", "create", "site-a", "--key", Data(keyB).base64EncodedString()])
        let gateway = try Self.gatewayRig(rig, groupKey: keyA)
        try gateway.startGateway()
        #expect(
            try Self.publish(["leaf-x"], lines: { ["\($0) 1", "\($0) 2"] }, site: gateway.site, in: rig.dir).isEmpty)

        func failure(_ expected: String) async -> Bool {
            await Self.eventually(timeout: .seconds(20)) {
                Self.provisioning(gateway)["leaf-x"]?.contains(expected) == true
                    && gateway.daemonCounter("outboxMessages") == 2
            }
        }
        func devicesTable() throws -> String {
            let (code, output) = try Subprocess.run(Paths.gatehouseCLI, ["devices", "-c", gateway.configPath])
            #expect(code == 0, "\(output)")
            return output
        }
        #expect(
            await failure("failed: DPS refused the registration of leaf-x: Connection Refused: not authorised"),
            "\(Self.provisioning(gateway)) \(gateway.gatewayLogs.suffix(2000))")
        #expect(try devicesTable().contains("failed: DPS refused the registration of leaf-x"))
        #expect(rig.devhub.stderr.contains("signature matches no enrollment"), "\(rig.devhub.stderr.suffix(1500))")
        #expect(try Self.telemetry(rig).isEmpty)
        gateway.gateway?.stop()

        // The group with the right key, but disabled: attestation succeeds, DPS answers failed.
        try rig.devhubCLI(["group", "create", "site-a", "--key", Data(keyA).base64EncodedString(), "--disabled"])
        try gateway.startGateway()
        #expect(
            await failure("failed: DPS answered failed for leaf-x: the enrollment group site-a is disabled"),
            "\(Self.provisioning(gateway)) \(gateway.gatewayLogs.suffix(2000))")
        #expect(
            try devicesTable().contains(
                "failed: DPS answered failed for leaf-x: the enrollment group site-a is disabled"))
        #expect(gateway.gatewayLogs.contains("[dps.failed]"))
        #expect(try Self.telemetry(rig).isEmpty)
        let hubDevices = try JSONSerialization.jsonObject(with: Data(try rig.devhubCLI(["devices", "--json"]).utf8))
        #expect((hubDevices as? [Any])?.isEmpty == true, "a disabled group makes no hub device")
        gateway.gateway?.stop()

        // Enabled: at the next start the device registers, and the waiting telemetry arrives.
        try rig.devhubCLI(["group", "create", "site-a", "--key", Data(keyA).base64EncodedString()])
        try gateway.startGateway()
        #expect(
            await Self.eventually(timeout: .seconds(30)) { ((try? Self.telemetry(rig)) ?? []).count == 2 },
            "\(gateway.gatewayLogs.suffix(2000))")
        #expect(try Self.telemetry(rig).map(\.payload) == ["leaf-x 1", "leaf-x 2"])
        #expect(Self.provisioning(gateway)["leaf-x"] == "assigned")
        gateway.gateway?.stop()

        // No key material in the logs (the refusals name no key or signature).
        for text in [gateway.gatewayLogs, rig.devhub.stderr] {
            for key in [keyA, keyB] {
                #expect(!text.contains(Data(key).base64EncodedString()))
                #expect(!text.contains(Self.derivedKey(key, "leaf-x").base64EncodedString()))
            }
            #expect(!text.contains("SharedAccessSignature"))
            #expect(!text.contains("sig="))
        }
    }

    @Test("no TPM at [identity] tpm for leaf provisioning: gatehoused exits 78 naming the TCTI")
    func noTPM() throws {
        let rig = try AttestationRig("gatehouse-prov-notpm")
        let gateway = try Self.gatewayRig(rig, groupKey: (0..<32).map { _ in UInt8.random(in: 0...255) })
        let dead = rig.dir.file("dead.sock")
        var config = try String(contentsOfFile: gateway.configPath, encoding: .utf8)
        config = config.replacingOccurrences(of: rig.tcti, with: "swtpm:path=\(dead)")
        try config.write(toFile: gateway.configPath, atomically: true, encoding: .utf8)
        let child = try gateway.startGateway()
        #expect(child.wait(timeout: .seconds(20)) == 78)
        #expect(
            child.stderr.contains("[identity] tpm = \"swtpm:path=\(dead)\": the TPM is not reachable"),
            "\(child.stderr)")
    }

    @Test(
        "a DPS registration works while the process holds descriptors numbered past 1024 (a few hundred hub identities)"
    )
    func highDescriptorNumbers() throws {
        let rig = try AttestationRig("gatehouse-prov-fds")
        let groupKey = (0..<32).map { _ in UInt8.random(in: 0...255) }
        try rig.devhubCLI(["group", "create", "site-a", "--key", Data(groupKey).base64EncodedString()])
        let settings = DPSSettings(
            host: "localhost", port: rig.mqttPort, idScope: AttestationRig.idScope, caFile: rig.caFile)
        let key = Self.derivedKey(groupKey, "leaf-fd")
        // Every descriptor below 1100 taken, so the registration's socket is numbered above them
        // (libmosquitto's own loop used select(2), which cannot watch it). Held briefly: other
        // suites in this process may open descriptors meanwhile.
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        var raised = limit
        raised.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, 4096))
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised)
        var held: [Int32] = []
        while held.count < 1100 {
            let fd = open("/dev/null", O_RDONLY)
            guard fd >= 0 else { break }
            held.append(fd)
        }
        let highest = held.max() ?? 0
        let result = Result { () throws(ProvisioningError) in
            try DPSClient.register(registrationID: "leaf-fd", settings: settings, timeout: .seconds(20)) {
                resource, expiry in
                SharedAccessSignature.make(resource: resource, expiry: expiry, policyName: "registration") {
                    Data(HMAC<SHA256>.authenticationCode(for: $0, using: SymmetricKey(data: key)))
                }
            }
        }
        for fd in held { close(fd) }
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        #expect(highest >= 1024, "could not open descriptors past 1024 (limit \(raised.rlim_cur))")
        #expect(try result.get() == DPSAssignment(assignedHub: "localhost", deviceID: "leaf-fd"))
    }
}
