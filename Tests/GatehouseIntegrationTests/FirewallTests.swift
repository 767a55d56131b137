import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The nftables firewall plugin in network namespaces the test makes and removes: the ruleset is
/// applied in a "gateway" namespace, and an "attacker" namespace on the other end of a veth pair
/// sends XMAS and NULL packets, a SYN burst, ICMP echo, and connects to an allowed and a blocked
/// port (hping3, ping, Python sockets). The named counters and the connection results must show
/// each handled as intended. The host's own firewall and sysctls are never touched.
@Suite(
    "Firewall plugin in network namespaces", .serialized,
    .enabled(if: NetnsLab.available, "\(NetnsLab.unavailableReason)"))
struct FirewallTests {
    @Test("applies in the gateway namespace; scans, floods and echo are dropped and counted; ports as configured")
    func attacks() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let hostIPv6 = try String(contentsOfFile: "/proc/sys/net/ipv6/conf/all/disable_ipv6", encoding: .utf8)
        let config = try lab.config()

        let (code, applied) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config])
        #expect(code == 0, "\(applied)")
        #expect(applied.contains("firewall applied:") && applied.contains("read back and verified"))

        // Listeners on an allowed (8883) and a blocked (9999) port in the gateway namespace.
        let listener = try lab.listen(ports: [8883, 9999])
        defer { listener.stop() }
        #expect(try lab.connect(port: 8883) == "connected", "the allowed port must accept")
        #expect(try lab.connect(port: 9999) == "timeout", "the blocked port must drop (not refuse)")

        try lab.attacker("hping3", ["-q", "-c", "3", "-F", "-P", "-U", "-p", "8883", NetnsLab.gatewayAddress])  // XMAS
        try lab.attacker("hping3", ["-q", "-c", "3", "-p", "8883", NetnsLab.gatewayAddress])  // NULL: no flags
        try lab.attacker("hping3", ["-q", "-c", "400", "-S", "-i", "u1000", "-p", "8883", NetnsLab.gatewayAddress])
        let (pingCode, _) = try lab.attacker("ping", ["-c", "3", "-W", "1", NetnsLab.gatewayAddress])
        #expect(pingCode != 0, "ICMP echo must go unanswered")

        let counters = try lab.counters(config)
        #expect(counters["drop_xmas"] ?? 0 >= 3, "\(counters)")
        #expect(counters["drop_null"] ?? 0 >= 3, "\(counters)")
        #expect(counters["drop_syn_flood"] ?? 0 >= 100, "\(counters)")  // 400 SYNs at ~1/ms, 25/s + burst 50 pass
        #expect(counters["drop_icmp_echo"] ?? 0 >= 3, "\(counters)")
        #expect(counters["drop_not_allowed"] ?? 0 >= 1, "\(counters)")  // the blocked port's SYNs
        #expect(counters["accept_allowed"] ?? 0 >= 1, "\(counters)")

        // IPv6 off inside the namespace, untouched on the host; the host has no gatehouse table.
        let (_, inside) = try lab.gateway("/bin/cat", ["/proc/sys/net/ipv6/conf/all/disable_ipv6"])
        #expect(inside.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        #expect(try String(contentsOfFile: "/proc/sys/net/ipv6/conf/all/disable_ipv6", encoding: .utf8) == hostIPv6)
        let (_, hostTables) = try Subprocess.run(NetnsLab.nft, ["list", "tables"])
        #expect(!hostTables.contains("gatehouse"))
        let (_, syncookies) = try lab.gateway("/bin/cat", ["/proc/sys/net/ipv4/tcp_syncookies"])
        #expect(syncookies.trimmingCharacters(in: .whitespacesAndNewlines) == "1")

        // USB storage: checked statically (no USB bus here).
        let modprobe = try String(contentsOfFile: lab.dir.file("modprobe/gatehouse-usb-storage.conf"), encoding: .utf8)
        #expect(modprobe.contains("blacklist usb-storage") && modprobe.contains("install usb-storage /bin/false"))
        let udev = try String(contentsOfFile: lab.dir.file("udev/90-gatehouse-usb-storage.rules"), encoding: .utf8)
        #expect(udev.contains(#"ATTR{bInterfaceClass}!="08", GOTO="gatehouse_usb_storage_end""#))
        #expect(udev.contains(#"ATTR{authorized}="0""#))
    }

    @Test(
        "an invalid ruleset leaves the previous one with the error naming the rule; a change behind its back is noticed"
    )
    func safeApply() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config()
        #expect(try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config]).0 == 0)
        let (_, before) = try lab.gateway(NetnsLab.nft, ["-s", "list", "table", "inet", "gatehouse"])

        // A source network nftables refuses (prefix 33): check and apply fail, naming the rule.
        let bad = try lab.config(source: "10.231.0.0/33", name: "bad.toml")
        let (checkCode, checkOutput) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "check", "-c", bad])
        #expect(checkCode == 1)
        #expect(checkOutput.contains("in rule `allow[0]`"), "\(checkOutput)")
        let (applyCode, applyOutput) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", bad])
        #expect(applyCode == 1)
        #expect(applyOutput.contains("the previous ruleset stays in place"), "\(applyOutput)")
        let (_, after) = try lab.gateway(NetnsLab.nft, ["-s", "list", "table", "inet", "gatehouse"])
        #expect(after == before, "the previous ruleset must stay")
        #expect(try lab.gateway(Paths.gatehouseCLI, ["firewall", "check", "-c", config]).0 == 0)

        // A rule added behind gatehouse's back: check and status notice it, apply restores.
        try lab.gateway(NetnsLab.nft, ["add", "rule", "inet", "gatehouse", "input", "tcp", "dport", "7777", "accept"])
        let (driftCode, drift) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "check", "-c", config])
        #expect(driftCode == 1)
        #expect(drift.contains("was added: `tcp dport 7777 accept`"), "\(drift)")
        let (_, status) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "status", "-c", config])
        #expect(status.contains(#""matches_applied" : false"#), "\(status)")
        #expect(try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config]).0 == 0)
        #expect(try lab.gateway(Paths.gatehouseCLI, ["firewall", "check", "-c", config]).0 == 0)
        // render changes nothing and prints the table.
        let (_, rendered) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "render", "-c", config])
        #expect(rendered.contains("table inet gatehouse {") && rendered.contains("policy drop;"))
    }

    @Test("gatehoused applies the ruleset at start and leaves it in place when it stops (fail closed)")
    func daemonAppliesAtStart() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config()
        let daemon = try Subprocess(
            NetnsLab.ip, ["netns", "exec", lab.gatewayNamespace, Paths.gatehoused, "-c", config], in: lab.dir,
            name: "gatehoused")
        #expect(waitUntil(timeout: .seconds(20)) { daemon.stderr.contains("gatehoused started") || !daemon.isRunning })
        #expect(daemon.stderr.contains("firewall applied:"), "\(daemon.stderr)")

        // SIGHUP with another allowed port: applied. Then a config nftables refuses: the running
        // ruleset stays, the error is logged.
        var text = try String(contentsOfFile: config, encoding: .utf8)
        text = text.replacingOccurrences(
            of: "comment = \"site broker TLS\" }]", with: "comment = \"site broker TLS\" }, { port = 9000 }]")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(
            waitUntil(timeout: .seconds(10)) {
                (try? lab.gateway(NetnsLab.nft, ["list", "table", "inet", "gatehouse"]).1.contains("dport 9000"))
                    == true
            })
        try text.replacingOccurrences(of: "10.231.0.0/24", with: "10.231.0.0/40").write(
            toFile: config, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(waitUntil(timeout: .seconds(10)) { daemon.stderr.contains("firewall reload refused") })
        #expect(try lab.gateway(NetnsLab.nft, ["list", "table", "inet", "gatehouse"]).1.contains("dport 9000"))
        daemon.signal(SIGTERM)
        #expect(daemon.wait(timeout: .seconds(15)) == 0, "\(daemon.stderr.suffix(1500))")
        #expect(daemon.stderr.contains("firewall rules stay in place after stop"))
        let (code, _) = try lab.gateway(NetnsLab.nft, ["list", "table", "inet", "gatehouse"])
        #expect(code == 0, "the ruleset must outlive the daemon")
    }

    @Test("with on_stop = \"remove\", a reload (SIGHUP) keeps the ruleset; only SIGTERM removes it")
    func reloadKeepsRulesetWithOnStopRemove() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config()
        // Appended to the last section of the config, [firewall].
        let handle = try #require(FileHandle(forWritingAtPath: config))
        handle.seekToEndOfFile()
        handle.write(Data("\non_stop = \"remove\"\n".utf8))
        try handle.close()
        let daemon = try Subprocess(
            NetnsLab.ip, ["netns", "exec", lab.gatewayNamespace, Paths.gatehoused, "-c", config], in: lab.dir,
            name: "gatehoused")
        defer { daemon.signal(SIGKILL) }
        #expect(waitUntil(timeout: .seconds(20)) { daemon.stderr.contains("gatehoused started") || !daemon.isRunning })
        try #require(daemon.stderr.contains("firewall applied:"), "\(daemon.stderr)")
        let table = ["-s", "list", "table", "inet", "gatehouse"]
        let (startCode, applied) = try lab.gateway(NetnsLab.nft, table)
        try #require(startCode == 0 && applied.contains("dport 8883"), "\(applied)")

        // `gatehouse devices remove` and `gatehouse rules reload` send SIGHUP: the table stays as
        // applied, rule for rule, after each.
        for reload in 1...2 {
            daemon.signal(SIGHUP)
            #expect(
                waitUntil(timeout: .seconds(10)) {
                    daemon.stderr.components(separatedBy: "configuration reloaded").count > reload
                }, "\(daemon.stderr.suffix(1500))")
            let (code, live) = try lab.gateway(NetnsLab.nft, table)
            #expect(code == 0, "after SIGHUP \(reload) the table must still be there: \(daemon.stderr.suffix(1500))")
            #expect(live == applied, "after SIGHUP \(reload) the rules must be the ones applied")
        }

        // The daemon really stops: on_stop = "remove" applies now.
        let beforeStop = daemon.stderr.count
        daemon.signal(SIGTERM)
        #expect(daemon.wait(timeout: .seconds(15)) == 0, "\(daemon.stderr.suffix(1500))")
        #expect(
            daemon.stderr.dropFirst(beforeStop).contains("firewall removed: table inet gatehouse deleted"),
            "\(daemon.stderr)")
        let (code, _) = try lab.gateway(NetnsLab.nft, table)
        #expect(code != 0, "SIGTERM with on_stop = \"remove\" must remove the table")
    }
}

/// Two network namespaces joined by a veth pair, made by the test and removed after it.
final class NetnsLab: @unchecked Sendable {
    // @unchecked: used from one test at a time.
    static let ip = "/usr/sbin/ip"
    static let nft = "/usr/sbin/nft"
    static let gatewayAddress = "10.231.0.1"
    static let attackerAddress = "10.231.0.2"

    static var unavailableReason: String {
        if getuid() != 0 { return "network namespaces need root" }
        for tool in [ip, nft, "/usr/sbin/hping3"] where !FileManager.default.isExecutableFile(atPath: tool) {
            return "\(tool) is missing: run scripts/setup (iproute2, nftables, hping3)"
        }
        return "cannot create a network namespace here"
    }

    static let available: Bool = {
        guard getuid() == 0, [ip, nft, "/usr/sbin/hping3"].allSatisfy(FileManager.default.isExecutableFile) else {
            return false
        }
        let probe = "gh-probe-\(getpid())"
        guard let (code, _) = try? Subprocess.run(ip, ["netns", "add", probe]), code == 0 else { return false }
        _ = try? Subprocess.run(ip, ["netns", "del", probe])
        return true
    }()

    let dir = TempDir("gatehouse-netns")
    let gatewayNamespace: String
    let attackerNamespace: String

    init() throws {
        let tag = "\(getpid() % 100_000)-\(Int.random(in: 0..<1000))"
        gatewayNamespace = "gh-gw-\(tag)"
        attackerNamespace = "gh-atk-\(tag)"
        let steps: [[String]] = [
            ["netns", "add", gatewayNamespace], ["netns", "add", attackerNamespace],
            [
                "link", "add", "ghv-gw", "netns", gatewayNamespace, "type", "veth", "peer", "name", "ghv-atk", "netns",
                attackerNamespace,
            ],
            ["-n", gatewayNamespace, "addr", "add", "\(Self.gatewayAddress)/24", "dev", "ghv-gw"],
            ["-n", attackerNamespace, "addr", "add", "\(Self.attackerAddress)/24", "dev", "ghv-atk"],
            ["-n", gatewayNamespace, "link", "set", "ghv-gw", "up"],
            ["-n", gatewayNamespace, "link", "set", "lo", "up"],
            ["-n", attackerNamespace, "link", "set", "ghv-atk", "up"],
            ["-n", attackerNamespace, "link", "set", "lo", "up"],
        ]
        for step in steps {
            let (code, output) = try Subprocess.run(Self.ip, step)
            guard code == 0 else {
                tearDown()
                throw FixtureError("ip \(step.joined(separator: " ")): \(output)")
            }
        }
    }

    func tearDown() {
        _ = try? Subprocess.run(Self.ip, ["netns", "del", gatewayNamespace])
        _ = try? Subprocess.run(Self.ip, ["netns", "del", attackerNamespace])
    }

    /// A gatehouse config with a [firewall] section whose every path is inside the test folder.
    func config(source: String = "10.231.0.0/24", name: String = "gatehouse.toml") throws -> String {
        try dir.write(
            name,
            """
            [gateway]
            state_db = "\(dir.file("state.db"))"
            plugin_dir = "\(Paths.binDir.path)"
            drain_timeout = "1s"

            [site]
            plugin = "mqtt"
            port = 1883

            [hub]
            plugin = "mqtt"
            hostname = "hub.invalid"

            [firewall]
            plugin = "nftables"
            allow = [{ port = 8883, interface = "ghv-gw", source = "\(source)", comment = "site broker TLS" }]
            disable_ipv6 = ["all"]
            tcp_syncookies = true
            icmp_ignore_bogus_error_responses = true
            icmp_echo_ignore_broadcasts = true
            usb_storage = "block"
            modprobe_file = "\(dir.file("modprobe/gatehouse-usb-storage.conf"))"
            udev_rules_file = "\(dir.file("udev/90-gatehouse-usb-storage.rules"))"
            state_file = "\(dir.file("firewall.json"))"
            """)
    }

    /// Runs a command in the gateway namespace; (status, stdout + stderr).
    @discardableResult
    func gateway(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        try Subprocess.run(Self.ip, ["netns", "exec", gatewayNamespace, executable] + arguments)
    }

    @discardableResult
    func attacker(_ executable: String, _ arguments: [String]) throws -> (Int32, String) {
        let path = executable.hasPrefix("/") ? executable : (which(executable) ?? "/usr/sbin/\(executable)")
        return try Subprocess.run(
            Self.ip, ["netns", "exec", attackerNamespace, path] + arguments, timeout: .seconds(30))
    }

    /// TCP listeners in the gateway namespace (a Python process that accepts and closes).
    func listen(ports: [Int]) throws -> Subprocess {
        let script = """
            import socket, selectors
            selector = selectors.DefaultSelector()
            for port in [\(ports.map(String.init).joined(separator: ","))]:
                server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind(("\(Self.gatewayAddress)", port)); server.listen(64); selector.register(server, selectors.EVENT_READ)
            print("listening", flush=True)
            while True:
                for key, _ in selector.select():
                    connection, _ = key.fileobj.accept(); connection.close()
            """
        let child = try Subprocess(
            Self.ip, ["netns", "exec", gatewayNamespace, "/usr/bin/env", "python3", "-c", script], in: dir,
            name: "listener")
        guard waitUntil(timeout: .seconds(10), { child.stdout.contains("listening") }) else {
            throw FixtureError("listener did not start: \(child.stderr)")
        }
        return child
    }

    /// "connected", "refused" or "timeout", from the attacker namespace.
    func connect(port: Int) throws -> String {
        let script = """
            import socket
            s = socket.socket(); s.settimeout(2)
            try:
                s.connect(("\(Self.gatewayAddress)", \(port))); print("connected")
            except socket.timeout:
                print("timeout")
            except ConnectionRefusedError:
                print("refused")
            """
        let (_, output) = try Subprocess.run(
            Self.ip, ["netns", "exec", attackerNamespace, "/usr/bin/env", "python3", "-c", script])
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The named counters' packet counts, from `gatehouse firewall status`.
    func counters(_ config: String) throws -> [String: Int] {
        let (code, output) = try gateway(Paths.gatehouseCLI, ["firewall", "status", "-c", config])
        guard code == 0, let start = output.firstIndex(of: "{"),
            let json = try JSONSerialization.jsonObject(with: Data(output[start...].utf8)) as? [String: Any],
            let counters = json["counters"] as? [String: [String: Any]]
        else { throw FixtureError("gatehouse firewall status: \(output)") }
        return counters.mapValues { $0["packets"] as? Int ?? 0 }
    }
}
