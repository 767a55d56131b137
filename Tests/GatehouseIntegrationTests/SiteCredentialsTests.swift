import Foundation
import GatehouseSiteBroker
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A site broker running mosquitto's dynamic security plugin from a fresh dynsec JSON
/// (`mosquitto_ctrl dynsec init`), a TLS hub broker, and a gatehouse config with `[site_broker]`.
/// `gatehouse site init` and `gatehouse devices …` are the real CLI; devices are real MQTT clients
/// (mosquitto_pub / mosquitto_sub) logging in with the printed passwords.
final class DynsecRig: @unchecked Sendable {
    // @unchecked: used from one test task at a time.
    static let pluginPath = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    static var available: Bool {
        MosquittoBroker.available
            && ["mosquitto_ctrl", "mosquitto_pub", "mosquitto_sub"].allSatisfy { which($0) != nil }
            && FileManager.default.fileExists(atPath: pluginPath)
    }

    let dir = TempDir("gatehouse-dynsec")
    let adminPassword = SitePassword.generate()
    let dynsecFile: String
    let site: MosquittoBroker
    let hub: MosquittoBroker
    let configPath: String
    var gateway: Subprocess?

    var stateDir: String { dir.file("state") }
    var gatewayPasswordFile: String { dir.file("etc/site.password") }

    init(siteBrokerKeys: String? = nil) throws {
        dynsecFile = dir.file("dynamic-security.json")
        let (status, output) = try Subprocess.run(
            which("mosquitto_ctrl")!, ["dynsec", "init", dynsecFile, "admin", adminPassword])
        guard status == 0 else { throw FixtureError("mosquitto_ctrl dynsec init: \(output)") }
        site = try MosquittoBroker(
            name: "site", in: dir,
            extraConfig: "plugin \(Self.pluginPath)\nplugin_opt_config_file \(dynsecFile)\n"
                + (try MosquittoBroker.packagedSiteSettings()), allowAnonymous: false)
        hub = try MosquittoBroker(name: "hub", in: dir, tls: true)
        for folder in ["state", "etc"] {
            try FileManager.default.createDirectory(atPath: dir.file(folder), withIntermediateDirectories: true)
        }
        try dir.write("etc/admin.password", adminPassword + "\n")
        chmod(dir.file("etc/admin.password"), 0o600)
        try dir.write("etc/group.key", Data((0..<32).map { UInt8($0) }).base64EncodedString())
        chmod(dir.file("etc/group.key"), 0o600)
        configPath = try dir.write(
            "gatehouse.toml",
            """
            [gateway]
            state_db = "\(dir.file("state/state.db"))"
            plugin_dir = "\(Paths.binDir.path)"
            log_level = "info"
            drain_timeout = "2s"

            [identity]
            group_key_file = "\(dir.file("etc/group.key"))"

            [site_broker]
            \(siteBrokerKeys ?? "admin_username = \"admin\"\nadmin_password_file = \"\(dir.file("etc/admin.password"))\"")

            [site]
            plugin = "mqtt"
            port = \(site.port)
            username = "gatehouse"
            client_id = "gatehouse"
            password_file = "\(dir.file("etc/site.password"))"

            [hub]
            plugin = "mqtt"
            hostname = "localhost"
            port = \(hub.port)
            ca_file = "\(hub.tls!.caFile)"
            """)
    }

    /// Runs the gatehouse CLI with this config; (exit status, stdout + stderr).
    func cli(_ arguments: [String]) throws -> (Int32, String) {
        try Subprocess.run(Paths.gatehouseCLI, arguments + ["-c", configPath])
    }

    /// `gatehouse devices add ID`: the password it printed.
    func addDevice(_ id: String) throws -> String {
        let (status, output) = try cli(["devices", "add", id])
        guard status == 0,
            let line = output.split(separator: "\n").first(where: { $0.hasPrefix("  password: ") })
        else { throw FixtureError("gatehouse devices add \(id) (\(status)): \(output)") }
        return String(line.dropFirst("  password: ".count))
    }

    func gatewayPassword() throws -> String {
        try String(contentsOfFile: gatewayPasswordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var loginArguments: [String] { ["-h", "127.0.0.1", "-p", String(site.port)] }

    /// Publishes one QoS 1 message as `username` (client id = username unless given); exit status and output.
    @discardableResult
    func publish(
        as username: String, password: String, clientID: String? = nil, topic: String, _ message: String
    ) throws -> (Int32, String) {
        try Subprocess.run(
            which("mosquitto_pub")!,
            loginArguments + [
                "-u", username, "-P", password, "-i", clientID ?? username, "-q", "1", "-t", topic, "-m", message,
            ],
            timeout: .seconds(20))
    }

    /// A subscriber logged in as `username`; its stdout is "topic payload" lines.
    func subscribe(as username: String, password: String, topics: [String], name: String) throws -> Subprocess {
        var arguments = loginArguments + ["-u", username, "-P", password, "-i", username, "-q", "1", "-v"]
        for topic in topics { arguments += ["-t", topic] }
        let child = try Subprocess(which("mosquitto_sub")!, arguments, in: dir, name: name)
        // Subscribed once the broker logged the SUBSCRIBE of this client id (log_type all).
        _ = waitUntil(timeout: .seconds(5)) {
            site.log.contains("Received SUBSCRIBE from \(username)") || !child.isRunning
        }
        Thread.sleep(forTimeInterval: 0.2)
        return child
    }

    func startGateway() throws -> Subprocess {
        let child = try Subprocess(Paths.gatehoused, ["-c", configPath], in: dir, name: "gatehoused")
        gateway = child
        _ = waitUntil(timeout: .seconds(10)) { child.stderr.contains("subscribed to") || !child.isRunning }
        return child
    }

    func devicesJSON() throws -> [[String: Any]] {
        let (status, output) = try Subprocess.run(Paths.gatehouseCLI, ["devices", "--json", "-c", configPath])
        let json = output.drop { $0 != "[" }
        guard status == 0, let rows = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]]
        else { throw FixtureError("gatehouse devices --json (\(status)): \(output)") }
        return rows
    }

    deinit { gateway?.stop() }
}

@Suite(
    "Site-broker credentials (mosquitto dynamic security)", .serialized,
    .enabled(
        if: DynsecRig.available,
        "needs mosquitto 2 with mosquitto_dynamic_security.so, mosquitto_ctrl and mosquitto-clients: run scripts/setup")
)
struct SiteCredentialsTests {
    @Test("site init, then devices add: each device publishes only its own telemetry and reads only its own commands")
    func deviceACLs() throws {
        let rig = try DynsecRig()
        let (initStatus, initOutput) = try rig.cli(["site", "init"])
        #expect(initStatus == 0, "\(initOutput)")
        #expect(initOutput.contains("role gatehouse-gateway: created"))
        #expect(initOutput.contains("client gatehouse (client id gatehouse): created"))
        var info = stat()
        #expect(stat(rig.gatewayPasswordFile, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let gatewayPassword = try rig.gatewayPassword()
        #expect(!initOutput.contains(gatewayPassword), "the gateway's password went to its file only")
        // Idempotent: a second run changes nothing and says so.
        let (again, againOutput) = try rig.cli(["site", "init"])
        #expect(again == 0 && againOutput.contains("exists, has role gatehouse-gateway"), "\(againOutput)")
        #expect(try rig.gatewayPassword() == gatewayPassword)

        let passwordA = try rig.addDevice("dev-a")
        let passwordB = try rig.addDevice("dev-b")
        #expect(passwordA.count == 32 && passwordB.count == 32 && passwordA != passwordB)

        // Up: the gateway's client receives dev-a's telemetry; dev-a posing as dev-b reaches nobody.
        let telemetry = try rig.subscribe(
            as: "gatehouse", password: gatewayPassword, topics: ["devices/+/messages/events/#"], name: "gateway-sub")
        #expect(
            try rig.publish(as: "dev-a", password: passwordA, topic: "devices/dev-a/messages/events/", "a-own").0 == 0)
        try rig.publish(as: "dev-a", password: passwordA, topic: "devices/dev-b/messages/events/", "a-as-b")
        try rig.publish(
            as: "dev-a", password: passwordA, topic: "devices/dev-a/messages/devicebound/", "a-fake-command")
        #expect(
            try rig.publish(as: "dev-b", password: passwordB, topic: "devices/dev-b/messages/events/k=v", "b-own").0
                == 0)
        #expect(
            waitUntil(timeout: .seconds(10)) {
                telemetry.stdout.contains("b-own") && telemetry.stdout.contains("a-own")
            })
        telemetry.stop()
        #expect(telemetry.stdout.contains("devices/dev-a/messages/events/ a-own"))
        #expect(telemetry.stdout.contains("devices/dev-b/messages/events/k=v b-own"))
        #expect(!telemetry.stdout.contains("a-as-b"), "dev-a published as dev-b")
        #expect(rig.site.log.contains("Denied PUBLISH from dev-a"), "the broker did not log the refusal")

        // Down: dev-a asks for its own, dev-b's and everyone's commands; only its own are granted.
        let deviceA = try rig.subscribe(
            as: "dev-a", password: passwordA,
            topics: [
                "devices/dev-a/messages/devicebound/#", "devices/dev-b/messages/devicebound/#",
                "devices/+/messages/devicebound/#", "#",
            ],
            name: "dev-a-sub")
        let deviceB = try rig.subscribe(
            as: "dev-b", password: passwordB, topics: ["devices/dev-b/messages/devicebound/#"], name: "dev-b-sub")
        // The gateway may publish commands; nobody receives another device's.
        try rig.publish(
            as: "gatehouse", password: gatewayPassword, topic: "devices/dev-b/messages/devicebound/", "cmd-for-b")
        try rig.publish(
            as: "gatehouse", password: gatewayPassword, topic: "devices/dev-a/messages/devicebound/", "cmd-for-a")
        #expect(
            waitUntil(timeout: .seconds(10)) {
                deviceA.stdout.contains("cmd-for-a") && deviceB.stdout.contains("cmd-for-b")
            })
        deviceA.stop()
        deviceB.stop()
        #expect(!deviceA.stdout.contains("cmd-for-b"), "dev-a read dev-b's commands: \(deviceA.stdout)")
        #expect(!deviceA.stdout.contains("a-fake-command") && !deviceB.stdout.contains("a-fake-command"))
        #expect(!deviceA.stdout.contains("b-own"), "dev-a read telemetry")

        // Logins: a wrong password, and the right password under another client id, are refused.
        let (wrong, wrongOutput) = try rig.publish(
            as: "dev-a", password: "not-" + passwordA, topic: "devices/dev-a/messages/events/", "x")
        #expect(wrong != 0, "\(wrongOutput)")
        let (otherID, _) = try rig.publish(
            as: "dev-a", password: passwordA, clientID: "dev-b", topic: "devices/dev-a/messages/events/", "x")
        #expect(otherID != 0, "dev-a logged in with dev-b's client id")
        // dynsec stores a salted hash only.
        let dynsec = try String(contentsOfFile: rig.dynsecFile, encoding: .utf8)
        #expect(!dynsec.contains(passwordA) && !dynsec.contains(passwordB) && !dynsec.contains(gatewayPassword))
    }

    @Test("devices remove: the login is refused, gatehoused closes the identity and relays nothing more of it")
    func removal() throws {
        let rig = try DynsecRig()
        #expect(try rig.cli(["site", "init"]).0 == 0)
        let passwordA = try rig.addDevice("dev-a")
        let passwordB = try rig.addDevice("dev-b")
        let gateway = try rig.startGateway()
        #expect(gateway.isRunning, "\(gateway.stderr)")
        let upstream = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir, name: "hub")
        try rig.publish(as: "dev-a", password: passwordA, topic: "devices/dev-a/messages/events/", "a1")
        try rig.publish(as: "dev-b", password: passwordB, topic: "devices/dev-b/messages/events/", "b1")
        #expect(
            waitUntil(timeout: .seconds(20)) {
                upstream.lines.contains { $0.hasSuffix(" a1") } && upstream.lines.contains { $0.hasSuffix(" b1") }
            }, "\(upstream.lines) \(gateway.stderr)")

        var rows = try rig.devicesJSON()
        let before = try #require(rows.first { $0["id"] as? String == "dev-a" })
        #expect(before["siteCredential"] as? Bool == true)
        #expect(before["link"] as? String == "up")
        #expect(before["removed"] as? Bool == false)

        let (status, output) = try rig.cli(["devices", "remove", "dev-a"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("deleted the site-broker credential of dev-a"))
        #expect(output.contains("asked gatehoused (pid \(gateway.pid)) to drop dev-a"), "\(output)")
        #expect(waitUntil(timeout: .seconds(10)) { gateway.stderr.contains("device removed") }, "\(gateway.stderr)")
        // Its hub identity is closed: the hub sees dev-a's connection end.
        #expect(
            waitUntil(timeout: .seconds(10)) { rig.hub.log.contains("Client dev-a disconnected") },
            "\(rig.hub.log.split(separator: "\n").filter { $0.contains("dev-a") }.suffix(5))")

        // The broker refuses dev-a now.
        let (login, loginOutput) = try rig.publish(
            as: "dev-a", password: passwordA, topic: "devices/dev-a/messages/events/", "a-after")
        #expect(login != 0, "dev-a still logs in: \(loginOutput)")

        rows = try rig.devicesJSON()
        let after = try #require(rows.first { $0["id"] as? String == "dev-a" })
        #expect(after["siteCredential"] as? Bool == false)
        #expect(after["removed"] as? Bool == true)
        #expect(after["provisioning"] as? String == "removed")
        #expect(rows.first { $0["id"] as? String == "dev-b" }?["siteCredential"] as? Bool == true)

        // Telemetry on dev-a's topic (from a client allowed to publish anywhere under devices/)
        // reaches gatehoused but is not relayed; dev-b's still is.
        for arguments in [
            ["createRole", "injector"], ["addRoleACL", "injector", "publishClientSend", "devices/#", "allow"],
            ["createClient", "injector", "-p", "injector-pw"], ["addClientRole", "injector", "injector"],
        ] {
            let (code, text) = try Subprocess.run(
                which("mosquitto_ctrl")!,
                rig.loginArguments + ["-u", "admin", "-P", rig.adminPassword, "dynsec"] + arguments)
            #expect(code == 0, "mosquitto_ctrl \(arguments): \(text)")
        }
        try rig.publish(as: "injector", password: "injector-pw", topic: "devices/dev-a/messages/events/", "a-injected")
        try rig.publish(as: "dev-b", password: passwordB, topic: "devices/dev-b/messages/events/", "b2")
        #expect(waitUntil(timeout: .seconds(20)) { upstream.lines.contains { $0.hasSuffix(" b2") } })
        #expect(waitUntil(timeout: .seconds(5)) { gateway.stderr.contains("dropped telemetry of a removed device") })
        Thread.sleep(forTimeInterval: 0.5)
        upstream.stop()
        #expect(!upstream.lines.contains { $0.contains("a-injected") }, "relayed after removal: \(upstream.lines)")

        // Unknown devices and repeated removals.
        let (ghost, ghostOutput) = try rig.cli(["devices", "remove", "ghost"])
        #expect(ghost == 67, "\(ghostOutput)")
        #expect(ghostOutput.contains("unknown device ghost"))

        // Added again: a new password, and the device is relayed again.
        let passwordA2 = try rig.addDevice("dev-a")
        #expect(passwordA2 != passwordA)
        #expect(waitUntil(timeout: .seconds(10)) { gateway.stderr.contains("device added again") })
        let again = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir, name: "hub-again")
        try rig.publish(as: "dev-a", password: passwordA2, topic: "devices/dev-a/messages/events/", "a3")
        #expect(waitUntil(timeout: .seconds(20)) { again.lines.contains { $0.hasSuffix(" a3") } }, "\(gateway.stderr)")
        again.stop()
        gateway.stop()

        // The printed passwords are nowhere on disk in the state folder, in any log, or in dynsec's file.
        var places: [String: String] = [
            "gatehoused log": gateway.stderr + gateway.stdout, "site broker log": rig.site.log,
            "dynsec file": try String(contentsOfFile: rig.dynsecFile, encoding: .utf8),
        ]
        for file in try FileManager.default.subpathsOfDirectory(atPath: rig.stateDir) {
            let data = FileManager.default.contents(atPath: rig.stateDir + "/" + file) ?? Data()
            places["state/\(file)"] = String(decoding: data, as: UTF8.self)
        }
        #expect(places.count >= 4, "\(places.keys)")
        for (place, text) in places {
            for secret in [passwordA, passwordB, passwordA2] {
                #expect(!text.contains(secret), "a device password is in \(place)")
            }
            #expect(!text.contains(rig.adminPassword), "the admin password is in \(place)")
        }
    }

    @Test("mistakes a user makes give clear errors, exit codes and no secret")
    func errors() throws {
        let rig = try DynsecRig()
        #expect(try rig.cli(["site", "init"]).0 == 0)
        _ = try rig.addDevice("dev-a")

        for bad in ["dev/a", "dev a", "dev+", "#", String(repeating: "x", count: 129), "dév"] {
            let (status, output) = try rig.cli(["devices", "add", bad])
            #expect(status == 65, "\(bad): \(output)")
            #expect(output.contains("invalid device id"), "\(output)")
        }
        let (exists, existsOutput) = try rig.cli(["devices", "add", "dev-a"])
        #expect(exists == 73 && existsOutput.contains("already has a credential"), "\(existsOutput)")
        let (reserved, reservedOutput) = try rig.cli(["devices", "remove", "admin"])
        #expect(reserved == 65 && reservedOutput.contains("not a leaf device"), "\(reservedOutput)")
        let (unknown, unknownOutput) = try rig.cli(["devices", "remove", "nobody"])
        #expect(unknown == 67 && unknownOutput.contains("unknown device nobody"), "\(unknownOutput)")

        // The admin's password is wrong.
        let wrong = "wrong-" + rig.adminPassword
        try rig.dir.write("etc/wrong.password", wrong)
        chmod(rig.dir.file("etc/wrong.password"), 0o600)
        let badAdmin = try DynsecRig(
            siteBrokerKeys:
                "admin_username = \"admin\"\nadmin_password_file = \"\(rig.dir.file("etc/wrong.password"))\"\nport = \(rig.site.port)"
        )
        let (refused, refusedOutput) = try badAdmin.cli(["devices", "add", "dev-c"])
        #expect(refused == 77, "\(refusedOutput)")
        #expect(refusedOutput.contains("refused the login of `admin`"))
        #expect(!refusedOutput.contains(wrong) && !refusedOutput.contains(rig.adminPassword))

        // Nothing listens there.
        let port = freePort()
        let nowhere = try DynsecRig(
            siteBrokerKeys:
                "admin_username = \"admin\"\nadmin_password_file = \"\(rig.dir.file("etc/admin.password"))\"\nport = \(port)"
        )
        let (unreachable, unreachableOutput) = try nowhere.cli(["devices", "add", "dev-c"])
        #expect(unreachable == 69, "\(unreachableOutput)")
        #expect(unreachableOutput.contains("127.0.0.1:\(port)"))
        #expect(!unreachableOutput.contains(rig.adminPassword))

        // The admin password file is readable by others.
        chmod(rig.dir.file("etc/admin.password"), 0o644)
        let (open, openOutput) = try rig.cli(["devices", "add", "dev-c"])
        #expect(open == 78 && openOutput.contains("chmod 600"), "\(openOutput)")
        #expect(!openOutput.contains(rig.adminPassword))
        chmod(rig.dir.file("etc/admin.password"), 0o600)

        // The listing still works without the broker: credentials are "?" then.
        let (list, listOutput) = try nowhere.cli(["devices"])
        #expect(list == 0 && listOutput.contains("site credentials unknown"), "\(listOutput)")
        let (table, tableOutput) = try rig.cli(["devices"])
        #expect(table == 0, "\(tableOutput)")
        let row = tableOutput.split(separator: "\n").first { $0.hasPrefix("dev-a ") }?.split(separator: " ")
        #expect(tableOutput.contains("DEVICE  SITE CREDENTIAL  DPS"), "\(tableOutput)")
        #expect(row == ["dev-a", "yes", "pending", "-", "down"], "\(tableOutput)")
    }
}
