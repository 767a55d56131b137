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
        #expect(status.contains(#""matches_applied": false"#), "\(status)")
        #expect(try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config]).0 == 0)
        #expect(try lab.gateway(Paths.gatehouseCLI, ["firewall", "check", "-c", config]).0 == 0)
        // render changes nothing and prints the table.
        let (_, rendered) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "render", "-c", config])
        #expect(rendered.contains("table inet gatehouse {") && rendered.contains("policy drop;"))
    }

    @Test("a lone ACK and an incomplete fragment get no answer; the derived broker port is closed where unpinned")
    func silentToProbes() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        // The site broker's port (1883, derived from [site]) pinned to a LAN interface the
        // attacker is not on; fragments given up after 2 s instead of 30 (inside the namespace).
        let config = try lab.config(extra: #"site_interface = "ghv-lan""#)
        try lab.gateway("/usr/sbin/sysctl", ["-q", "-w", "net.ipv4.ipfrag_time=2"])
        let (code, applied) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config])
        try #require(code == 0, "\(applied)")
        let (_, rendered) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "render", "-c", config])
        #expect(rendered.contains(#"iifname "ghv-lan" tcp dport 1883 goto syn_guard"#), "\(rendered)")
        let listener = try lab.listen(ports: [8883, 1883])
        defer { listener.stop() }
        #expect(try lab.connect(port: 8883) == "connected")
        #expect(try lab.connect(port: 1883) == "timeout", "the derived broker port must be closed on the WAN side")

        let gateway = NetnsLab.gatewayAddress
        let replies = try lab.replies(seconds: 8) {
            try lab.attacker("hping3", ["-q", "-c", "2", "-A", "-p", "8883", gateway])  // lone ACK
            try lab.attacker("hping3", ["-q", "-c", "1", "-2", "-x", "-d", "100", "-p", "5000", gateway])  // fragment
            try lab.attacker("hping3", ["-q", "-c", "1", "-S", "-x", "-d", "100", "-p", "8883", gateway])
        }
        #expect(replies.isEmpty, "the gateway answered: \(replies)")
        let counters = try lab.counters(config)
        #expect(counters["drop_new_not_syn"] ?? 0 >= 2, "\(counters)")
        #expect(counters["drop_icmp_error_out"] ?? 0 >= 1, "\(counters)")

        // Without a pin the derived port is not opened at all, and apply says so.
        let unpinned = try lab.config(name: "unpinned.toml")
        let (unpinnedCode, output) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", unpinned])
        #expect(unpinnedCode == 0, "\(output)")
        #expect(output.contains("derived_allow[0]") && output.contains("is not opened"), "\(output)")
        #expect(try lab.connect(port: 1883) == "timeout")
    }

    @Test(
        "a failed apply (bad port, bad prefix, unwritable USB file) leaves the ruleset and every host setting; a missing interface is a warning"
    )
    func transactionalApply() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config()
        try #require(try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config]).0 == 0)
        // Host settings moved away from what gatehouse applied, so a new apply would write them.
        for setting in [
            "net.ipv4.conf.all.log_martians=0", "net.ipv4.conf.all.accept_redirects=1", "net.ipv4.tcp_syncookies=0",
        ] {
            try lab.gateway("/usr/sbin/sysctl", ["-q", "-w", setting])
        }
        let table = ["-s", "list", "table", "inet", "gatehouse"]
        let (_, rulesBefore) = try lab.gateway(NetnsLab.nft, table)
        let settingsBefore = try lab.hostSettings()
        #expect(settingsBefore.contains("/proc/sys/net/ipv4/conf/all/log_martians:0"), "\(settingsBefore)")

        // A file where the USB rule's folder should be: the udev file cannot be written.
        _ = try lab.dir.write("not-a-folder", "")
        let failures: [(name: String, extra: String, source: String, says: String)] = [
            ("bad port", "", "10.231.0.0/24", "allow[0]"),  // port below, via the allow list
            ("bad prefix", "", "10.231.0.0/33", "in rule `allow[0]`"),
            (
                "unwritable USB file", "udev_rules_file = \"\(lab.dir.file("not-a-folder/90-usb.rules"))\"",
                "10.231.0.0/24", "udev_rules_file"
            ),
        ]
        for failure in failures {
            var text = try String(
                contentsOfFile: try lab.config(source: failure.source, name: "variant.toml", extra: failure.extra),
                encoding: .utf8)
            if failure.name == "bad port" {
                text = text.replacingOccurrences(of: "port = 8883,", with: "port = 70000,")
            }
            if failure.name == "unwritable USB file" {
                // The config's own udev_rules_file line goes; the unwritable one (appended) stays.
                text = text.split(separator: "\n").filter { !$0.hasPrefix("udev_rules_file = \"\(lab.dir.path)/udev") }
                    .joined(separator: "\n")
            }
            let bad = try lab.dir.write("bad.toml", text)
            let (code, output) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", bad])
            #expect(code != 0, "\(failure.name): \(output)")
            #expect(output.contains(failure.says), "\(failure.name): \(output)")
            #expect(try lab.gateway(NetnsLab.nft, table).1 == rulesBefore, "\(failure.name): the ruleset changed")
            #expect(try lab.hostSettings() == settingsBefore, "\(failure.name): a host setting changed")
        }

        // A missing interface: a warning naming disable_ipv6; the ruleset and the rest apply.
        let missing = try lab.config(name: "missing.toml")
        let text = try String(contentsOfFile: missing, encoding: .utf8).replacingOccurrences(
            of: #"disable_ipv6 = ["all"]"#, with: #"disable_ipv6 = ["ghv-missing"]"#)
        try text.write(toFile: missing, atomically: true, encoding: .utf8)
        let (code, output) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", missing])
        #expect(code == 0, "\(output)")
        #expect(output.contains("disable_ipv6: interface ghv-missing does not exist"), "\(output)")
        let (_, martians) = try lab.gateway("/bin/cat", ["/proc/sys/net/ipv4/conf/all/log_martians"])
        #expect(martians.trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        let (_, rendered) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "render", "-c", missing])
        for line in [
            "net.ipv4.conf.all.rp_filter = 1 (rp_filter)", "net.ipv4.conf.all.accept_redirects = 0 (accept_redirects)",
            "net.ipv4.conf.all.send_redirects = 0 (send_redirects)",
            "net.ipv4.conf.all.accept_source_route = 0 (accept_source_route)",
            "net.ipv4.conf.all.log_martians = 1 (log_martians)", "net.ipv6.conf.all.accept_ra = 0 (accept_ra)",
        ] {
            #expect(rendered.contains(line), "render must show \(line)")
        }
    }

    @Test("a table of the same name that gatehouse did not create is refused and left intact")
    func foreignTable() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        try lab.gateway(NetnsLab.nft, ["add", "table", "inet", "hostfw"])
        try lab.gateway(
            NetnsLab.nft, ["add", "chain", "inet", "hostfw", "input", "{ type filter hook input priority 0; }"])
        try lab.gateway(NetnsLab.nft, ["add", "rule", "inet", "hostfw", "input", "tcp", "dport", "22", "accept"])
        let (_, before) = try lab.gateway(NetnsLab.nft, ["-s", "list", "table", "inet", "hostfw"])
        let config = try lab.config(extra: #"table = "hostfw""#)
        for action in ["check", "apply", "remove"] {
            let (code, output) = try lab.gateway(Paths.gatehouseCLI, ["firewall", action, "-c", config])
            #expect(code != 0, "\(action) must refuse: \(output)")
            #expect(output.contains("gatehouse did not create it"), "\(action): \(output)")
        }
        #expect(try lab.gateway(NetnsLab.nft, ["-s", "list", "table", "inet", "hostfw"]).1 == before)
    }

    @Test("gatehoused applies the ruleset at start and leaves it in place when it stops (fail closed)")
    func daemonAppliesAtStart() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        // An interface that is missing at start is a warning: the ruleset still applies.
        let config = try lab.config()
        try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(
            of: #"disable_ipv6 = ["all"]"#, with: #"disable_ipv6 = ["all", "ghv-missing"]"#
        ).write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = try Subprocess(
            NetnsLab.ip, ["netns", "exec", lab.gatewayNamespace, Paths.gatehoused, "-c", config], in: lab.dir,
            name: "gatehoused")
        #expect(waitUntil(timeout: .seconds(20)) { daemon.stderr.contains("gatehoused started") || !daemon.isRunning })
        #expect(daemon.stderr.contains("firewall applied:"), "\(daemon.stderr)")
        #expect(daemon.stderr.contains("interface ghv-missing does not exist"), "\(daemon.stderr)")
        // gatehouse status shows the firewall and each host setting, live.
        let (_, status) = try lab.gateway(Paths.gatehouseCLI, ["status", "-c", config])
        #expect(status.contains("firewall: table inet gatehouse in place, as applied"), "\(status)")
        #expect(status.contains("net.ipv4.conf.all.rp_filter = 1 (rp_filter: 1)"), "\(status)")
        #expect(status.contains("net.ipv6.conf.all.disable_ipv6 = 1 (disable_ipv6: 1)"), "\(status)")

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

    @Test(
        "under a read-only /proc/sys (the packaged unit's ProtectKernelTunables=yes) gatehoused starts: the ruleset applies, each host setting it cannot write is a warning naming it, shown as not applied"
    )
    func readOnlySysctls() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config()
        // Settings away from their targets (they must be written) and one already at it.
        for setting in [
            "net.ipv4.conf.all.log_martians=0", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.tcp_syncookies=1",
        ] {
            try lab.gateway("/usr/sbin/sysctl", ["-q", "-w", setting])
        }
        let before = try lab.sysctls()
        // What systemd does for ProtectKernelTunables=yes: /proc/sys bound read-only in a mount
        // namespace of gatehoused's own (writes fail with EROFS).
        let daemon = try Subprocess(
            NetnsLab.ip,
            [
                "netns", "exec", lab.gatewayNamespace, "/usr/bin/unshare", "-m", "--propagation", "private", "sh", "-c",
                "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$0\" \"$@\"",
                Paths.gatehoused, "-c", config,
            ], in: lab.dir, name: "gatehoused")
        defer { daemon.signal(SIGKILL) }
        #expect(waitUntil(timeout: .seconds(20)) { daemon.stderr.contains("gatehoused started") || !daemon.isRunning })
        try #require(daemon.isRunning, "gatehoused must start: \(daemon.stderr.suffix(3000))")
        #expect(daemon.stderr.contains("firewall applied:"), "\(daemon.stderr)")
        #expect(daemon.stderr.contains("NOT applied (/proc/sys is read-only here"), "\(daemon.stderr)")
        let warning =
            "host setting net.ipv4.conf.all.log_martians = 1 (log_martians) not applied: /proc/sys is read-only here (Read-only file system); it stays 0."
        #expect(daemon.stderr.contains(warning), "\(daemon.stderr)")
        #expect(daemon.stderr.contains("sudo gatehouse firewall apply"), "the warning must say how to allow it")
        // A setting already at its value needs no write: no warning for it.
        #expect(!daemon.stderr.contains("net.ipv4.tcp_syncookies = 1 (tcp_syncookies) not applied"))
        // The ruleset is in place; not one sysctl changed.
        let (tableCode, table) = try lab.gateway(NetnsLab.nft, ["list", "table", "inet", "gatehouse"])
        #expect(tableCode == 0 && table.contains("dport 8883"), "\(table)")
        #expect(try lab.sysctls() == before, "a sysctl changed under a read-only /proc/sys")

        // render, the plugin's status and gatehouse status show what was not applied.
        let (_, rendered) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "render", "-c", config])
        #expect(
            rendered.contains(
                "net.ipv4.conf.all.log_martians = 1 (log_martians) -- NOT APPLIED at the last apply: /proc/sys is read-only here"
            ), "\(rendered)")
        let (_, pluginStatus) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "status", "-c", config])
        #expect(pluginStatus.contains(#""not_applied": "/proc/sys is read-only here"#), "\(pluginStatus)")
        let (_, status) = try lab.gateway(Paths.gatehouseCLI, ["status", "-c", config])
        #expect(status.contains("not applied at the last apply"), "\(status)")
        #expect(
            status.contains(
                "! net.ipv4.conf.all.log_martians = 0 (log_martians: 1) — not applied: /proc/sys is read-only here"),
            "\(status)")
        #expect(status.contains("  net.ipv4.tcp_syncookies = 1 (tcp_syncookies: 1)\n"), "\(status)")
        daemon.signal(SIGTERM)
        #expect(daemon.wait(timeout: .seconds(15)) == 0, "\(daemon.stderr.suffix(1500))")

        // The same, once as root without the read-only mount: everything applies, nothing is marked.
        let (applyCode, applied) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "apply", "-c", config])
        #expect(applyCode == 0 && !applied.contains("NOT applied"), "\(applied)")
        let (_, after) = try lab.gateway(Paths.gatehouseCLI, ["status", "-c", config])
        #expect(after.contains("net.ipv4.conf.all.log_martians = 1 (log_martians: 1)\n"), "\(after)")
        #expect(!after.contains("not applied"), "\(after)")
    }

    @Test(
        "with /proc/sys not visible at all (the packaged unit's ProcSubset=pid) the ruleset applies and every sysctl is a warning"
    )
    func hiddenSysctls() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config()
        // What systemd does for ProcSubset=pid: a procfs of the process's own with subset=pid.
        let (code, output) = try lab.gateway(
            "/usr/bin/unshare",
            [
                "-m", "--propagation", "private", "sh", "-c",
                "mount -t proc -o subset=pid proc /proc && test ! -e /proc/sys && exec \"$0\" \"$@\"",
                Paths.gatehouseCLI, "firewall", "apply", "-c", config,
            ])
        #expect(code == 0, "\(output)")
        #expect(output.contains("firewall applied:"), "\(output)")
        #expect(
            output.contains(
                "net.ipv4.conf.all.rp_filter = 1 (rp_filter) not applied: /proc/sys is not visible to this process (ProcSubset=pid); its value cannot be read here."
            ), "\(output)")
        #expect(try lab.gateway(NetnsLab.nft, ["list", "table", "inet", "gatehouse"]).0 == 0)
        let (_, rendered) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "render", "-c", config])
        #expect(
            rendered.contains(
                "net.ipv4.conf.all.rp_filter = 1 (rp_filter) -- NOT APPLIED at the last apply: /proc/sys is not visible"
            ),
            "\(rendered)")
        let (_, status) = try lab.gateway(Paths.gatehouseCLI, ["firewall", "status", "-c", config])
        #expect(status.contains(#""not_applied": "/proc/sys is not visible to this process"#), "\(status)")
    }

    @Test("gatehoused's Prometheus metrics count the firewall's drops by reason, as its counters do")
    func dropMetrics() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        // `extra` ends [firewall]; [metrics] follows it (loopback of the gateway namespace).
        let config = try lab.config(extra: "\n[metrics]\nlisten = \"127.0.0.1:9600\"")
        let daemon = try lab.startDaemon(config)
        defer { daemon.signal(SIGKILL) }

        try lab.attacker("hping3", ["-q", "-c", "4", "-F", "-P", "-U", "-p", "8883", NetnsLab.gatewayAddress])  // XMAS
        let (pingCode, _) = try lab.attacker("ping", ["-c", "3", "-W", "1", NetnsLab.gatewayAddress])
        #expect(pingCode != 0, "ICMP echo must go unanswered")

        let counters = try lab.counters(config)
        let metrics = try lab.scrape(port: 9600)
        func dropped(_ reason: String) -> Int? {
            let prefix = "gatehouse_firewall_dropped_packets_total{reason=\"\(reason)\"} "
            return metrics.split(separator: "\n").first { $0.hasPrefix(prefix) }
                .flatMap { Double($0.dropFirst(prefix.count)) }.map { Int($0) }
        }
        #expect(dropped("xmas") == counters["drop_xmas"] && (counters["drop_xmas"] ?? 0) >= 4, "\(metrics)")
        #expect(dropped("icmp_echo") == counters["drop_icmp_echo"] && (counters["drop_icmp_echo"] ?? 0) >= 3)
        #expect(dropped("syn_flood") == 0, "nothing flooded: \(metrics)")
        // What an allow rule accepted is not a drop.
        #expect(!metrics.contains("reason=\"allowed\"") && !metrics.contains("accept"), "\(metrics)")
        #expect(metrics.contains("gatehouse_firewall_applied 1"), "\(metrics)")
        let bytesPrefix = "gatehouse_firewall_dropped_bytes_total{reason=\"xmas\"} "
        let bytes = metrics.split(separator: "\n").first { $0.hasPrefix(bytesPrefix) }
            .flatMap { Double($0.dropFirst(bytesPrefix.count)) }
        #expect((bytes ?? 0) >= 4 * 40, "an XMAS probe is at least a 40-byte IP+TCP header: \(metrics)")
    }

    @Test("with on_stop = \"remove\", a reload (SIGHUP) keeps the ruleset; only SIGTERM removes it")
    func reloadKeepsRulesetWithOnStopRemove() throws {
        let lab = try NetnsLab()
        defer { lab.tearDown() }
        let config = try lab.config(extra: "on_stop = \"remove\"")
        let daemon = try lab.startDaemon(config)
        defer { daemon.signal(SIGKILL) }
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
    func config(source: String = "10.231.0.0/24", name: String = "gatehouse.toml", extra: String = "") throws
        -> String
    {
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
            \(extra)
            """)
    }

    /// Every host setting the plugin may touch, as the gateway namespace has them now
    /// ("path:value" lines): compared before and after a failed apply.
    func hostSettings() throws -> String {
        let paths = [
            "/proc/sys/net/ipv4/conf", "/proc/sys/net/ipv6/conf", "/proc/sys/net/ipv4/tcp_syncookies",
            "/proc/sys/net/ipv4/icmp_ignore_bogus_error_responses", "/proc/sys/net/ipv4/icmp_echo_ignore_broadcasts",
            "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_syn_recv",
            "/proc/sys/net/netfilter/nf_conntrack_tcp_loose",
        ]
        let (_, output) = try gateway("/bin/sh", ["-c", "grep -r . \(paths.joined(separator: " ")) 2>/dev/null"])
        let files = [
            dir.file("modprobe/gatehouse-usb-storage.conf"), dir.file("udev/90-gatehouse-usb-storage.rules"),
        ].map { "\($0): \((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "(absent)")" }
        return output + files.joined(separator: "\n")
    }

    /// Every sysctl below net/ the plugin may touch ("path:value" lines), in the gateway namespace.
    func sysctls() throws -> String {
        let (_, output) = try gateway(
            "/bin/sh",
            [
                "-c",
                "grep -r . /proc/sys/net/ipv4/conf /proc/sys/net/ipv6/conf /proc/sys/net/ipv4/tcp_syncookies 2>/dev/null",
            ])
        return output
    }

    /// What the attacker namespace receives from the gateway while `probe` runs, one line a
    /// packet ("icmp type=11 code=1", "tcp 8883->1234 flags=0x14"), for `seconds` in all.
    func replies(seconds: Double, during probe: () throws -> Void) throws -> [String] {
        let script = """
            import socket, struct, time
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            s.bind(("ghv-atk", 0)); s.settimeout(0.2)
            print("sniffing", flush=True)
            end = time.time() + \(seconds)
            while time.time() < end:
                try: frame, addr = s.recvfrom(65535)
                except socket.timeout: continue
                if addr[2] == socket.PACKET_OUTGOING: continue
                ip = frame[14:]
                if socket.inet_ntoa(ip[12:16]) != "\(Self.gatewayAddress)": continue
                header = (ip[0] & 15) * 4
                if ip[9] == 1: print(f"icmp type={ip[header]} code={ip[header + 1]}", flush=True)
                elif ip[9] == 6:
                    sport, dport = struct.unpack("!HH", ip[header:header + 4])
                    print(f"tcp {sport}->{dport} flags=0x{ip[header + 13]:02x}", flush=True)
                else: print(f"proto {ip[9]}", flush=True)
            print("done", flush=True)
            """
        let sniffer = try Subprocess(
            Self.ip, ["netns", "exec", attackerNamespace, "/usr/bin/env", "python3", "-c", script], in: dir,
            name: "sniffer")
        guard waitUntil(timeout: .seconds(10), { sniffer.stdout.contains("sniffing") }) else {
            throw FixtureError("sniffer did not start: \(sniffer.stderr)")
        }
        try probe()
        _ = sniffer.wait(timeout: .seconds(Int(seconds) + 10))
        return sniffer.stdout.split(separator: "\n").map(String.init).filter { $0 != "sniffing" && $0 != "done" }
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

    /// gatehoused in the gateway namespace, once it has started and applied the firewall.
    func startDaemon(_ config: String) throws -> Subprocess {
        let daemon = try Subprocess(
            Self.ip, ["netns", "exec", gatewayNamespace, Paths.gatehoused, "-c", config], in: dir, name: "gatehoused")
        _ = waitUntil(timeout: .seconds(20)) { daemon.stderr.contains("gatehoused started") || !daemon.isRunning }
        guard daemon.stderr.contains("gatehoused started"), daemon.stderr.contains("firewall applied:") else {
            daemon.signal(SIGKILL)
            throw FixtureError("gatehoused did not start with its firewall applied: \(daemon.stderr.suffix(2000))")
        }
        return daemon
    }

    /// gatehoused's Prometheus exposition, fetched on the gateway namespace's loopback.
    func scrape(port: Int) throws -> String {
        let script =
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:\(port)/metrics').read().decode())"
        let (code, output) = try gateway("/usr/bin/env", ["python3", "-c", script])
        guard code == 0 else { throw FixtureError("scraping 127.0.0.1:\(port) in \(gatewayNamespace): \(output)") }
        return output
    }
}
