/// Renders the ruleset: one table of its own (`inet gatehouse`), so it coexists with whatever
/// else the host runs, replaced atomically on every apply (the `add`/`delete`/define sequence is
/// one nftables transaction). The table carries `marker` as its comment: the plugin replaces or
/// removes only a table that carries it.
///
/// Order matters: scans are dropped before conntrack can accept them, established traffic
/// passes before the per-port rules, a new connection must open with a SYN, and the allowed TCP
/// ports go through `syn_guard`, whose per-source meter only ever counts SYNs to those ports: a
/// flood from one source cannot use up another's budget, a spoofed flood (every source new) is
/// left to SYN cookies (or SYNPROXY), and a scan of a blocked port never reaches it.
/// docs/firewall.md, "SYN floods", has the measurements behind this.
struct Ruleset: Sendable {
    /// The table's comment: what says gatehouse created it.
    static let marker = "managed by gatehouse ([firewall]): do not edit"

    /// The nft script, ready for `nft -f`.
    let script: String
    /// Every rule in order: its script line (1-based), what it came from (to name a rule in an
    /// error), its chain and its text.
    let rules: [(line: Int, origin: String, chain: String, text: String)]
    /// The named counters: name → what a packet counted there was.
    static let counters: [(name: String, reason: String)] = [
        ("drop_xmas", "XMAS scan (FIN+PSH+URG)"),
        ("drop_null", "NULL scan (no TCP flags)"),
        ("drop_invalid", "invalid connection-tracking state"),
        ("drop_new_not_syn", "a new TCP connection that does not open with a SYN (lone ACK, FIN, RST)"),
        ("drop_syn_flood", "SYNs to an allowed port over one source's rate (syn_rate, syn_burst)"),
        ("drop_icmp_echo", "inbound ICMP or ICMPv6 echo request"),
        ("drop_icmp_error_out", "outbound ICMP error not about a tracked connection (e.g. fragment reassembly)"),
        ("drop_not_allowed", "no rule allows it (default drop)"),
        ("accept_allowed", "accepted by an allow rule"),
    ]

    /// The per-source meters: one element a source address, forgotten 30 s after its last SYN.
    /// When a spoofed flood fills one, `update` cannot add the next source and the rule does not
    /// match: the meter can then let SYNs through (to SYN cookies), never lock anyone out.
    static let declarations = [
        "\tset syn_meter_v4 { type ipv4_addr; size 65535; flags dynamic,timeout; timeout 30s; }",
        "\tset syn_meter_v6 { type ipv6_addr; size 65535; flags dynamic,timeout; timeout 30s; }",
    ]

    init(_ settings: FirewallSettings) {
        var lines: [String] = []
        var rules: [(line: Int, origin: String, chain: String, text: String)] = []
        var chain = ""
        func add(_ line: String, origin: String? = nil) {
            lines.append(line)
            if let origin { rules.append((lines.count, origin, chain, line)) }
        }
        let table = settings.table
        let synproxy = settings.synFloodProtection == .synproxy
        let syn = "tcp flags & (fin | syn | rst | ack) == syn"
        func match(_ allow: FirewallSettings.Allow) -> String {
            var match = ""
            if let interface = allow.interface { match += "iifname \"\(interface)\" " }
            if let source = allow.source { match += (source.contains(":") ? "ip6" : "ip") + " saddr \(source) " }
            return match
        }
        let tcpAllows = settings.allow.filter { $0.proto == "tcp" }

        add("# gatehouse firewall: rendered from the [firewall] section; do not edit by hand.")
        add("table inet \(table)")
        add("delete table inet \(table)")
        add("table inet \(table) {")
        add("\tcomment \"\(Self.marker)\"")
        for counter in Self.counters {
            add("\tcounter \(counter.name) { comment \"\(counter.reason)\" }")
        }
        for line in Self.declarations { add(line) }

        if synproxy {
            // SYNPROXY: the allowed ports' SYNs are not tracked; the proxy answers them with a
            // cookie and opens the real connection only for a client that completes the handshake.
            add("")
            add("\tchain prerouting {")
            chain = "prerouting"
            add("\t\ttype filter hook prerouting priority raw; policy accept;")
            for allow in tcpAllows {
                add(
                    "\t\tiif != \"lo\" \(match(allow))tcp dport \(allow.port) \(syn) notrack comment \"\(allow.comment)\"",
                    origin: allow.origin)
            }
            add("\t}")
        }

        add("")
        add("\tchain syn_guard {")
        chain = "syn_guard"
        add(
            "\t\t\(syn) update @syn_meter_v4 { ip saddr limit rate over \(settings.synRate)/second burst \(settings.synBurst) packets } counter name \"drop_syn_flood\" drop",
            origin: "per-source SYN meter (syn_rate, syn_burst)")
        add(
            "\t\t\(syn) update @syn_meter_v6 { ip6 saddr limit rate over \(settings.synRate)/second burst \(settings.synBurst) packets } counter name \"drop_syn_flood\" drop",
            origin: "per-source SYN meter, IPv6 (syn_rate, syn_burst)")
        if synproxy {
            add("\t\tcounter name \"accept_allowed\"", origin: "allowed (SYNPROXY)")
            // No `timestamp`: with it a local server rejects the proxy's ACK (TSecr) and every
            // connection waits 1 s for a retransmission (docs/firewall.md).
            add("\t\tsynproxy mss 1460 wscale 7 sack-perm", origin: "SYNPROXY (syn_flood_protection)")
        } else {
            add("\t\tcounter name \"accept_allowed\" accept", origin: "allowed")
        }
        add("\t}")

        add("")
        add("\tchain input {")
        chain = "input"
        add("\t\ttype filter hook input priority filter; policy drop;")
        add("\t\tiif \"lo\" accept", origin: "loopback")
        add(
            "\t\ttcp flags & (fin | psh | urg) == fin | psh | urg counter name \"drop_xmas\" drop",
            origin: "XMAS scan protection")
        add(
            "\t\ttcp flags & (fin | syn | rst | psh | ack | urg) == 0x0 counter name \"drop_null\" drop",
            origin: "NULL scan protection")
        if synproxy {
            for allow in tcpAllows {
                add(
                    "\t\t\(match(allow))tcp dport \(allow.port) ct state invalid,untracked goto syn_guard comment \"\(allow.comment)\"",
                    origin: allow.origin)
            }
        }
        add("\t\tct state invalid counter name \"drop_invalid\" drop", origin: "invalid state")
        add("\t\tct state established,related accept", origin: "established connections")
        add(
            "\t\ttcp flags & (fin | syn | rst | ack) != syn ct state new counter name \"drop_new_not_syn\" drop",
            origin: "new connections open with a SYN")
        add("\t\ticmp type echo-request counter name \"drop_icmp_echo\" drop", origin: "no inbound ICMP echo")
        add("\t\ticmpv6 type echo-request counter name \"drop_icmp_echo\" drop", origin: "no inbound ICMPv6 echo")
        if !settings.ipv6Off {
            // What IPv6 cannot work without (RFC 4890): errors, neighbour discovery, MLD; router
            // advertisements only where the site uses them (accept_ra).
            let advert = settings.acceptRA ? "nd-router-advert, " : ""
            add(
                "\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, \(advert)nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, mld-listener-report, mld2-listener-report } accept",
                origin: "ICMPv6 that IPv6 needs")
        }
        for allow in settings.allow {
            if allow.proto == "tcp" {
                guard !synproxy else { continue }  // above, before the invalid-state drop
                add(
                    "\t\t\(match(allow))tcp dport \(allow.port) goto syn_guard comment \"\(allow.comment)\"",
                    origin: allow.origin)
            } else {
                add(
                    "\t\t\(match(allow))udp dport \(allow.port) counter name \"accept_allowed\" accept comment \"\(allow.comment)\"",
                    origin: allow.origin)
            }
        }
        add("\t\tcounter name \"drop_not_allowed\"", origin: "default drop")
        add("\t}")

        // ICMP errors the host itself sends (reassembly timeout, port unreachable) leave only
        // about a connection it tracks: a probe of a dropped port or an incomplete fragment
        // learns nothing, not even that the host is up.
        add("")
        add("\tchain output {")
        chain = "output"
        add("\t\ttype filter hook output priority filter; policy accept;")
        add(
            "\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem } ct state != related counter name \"drop_icmp_error_out\" drop",
            origin: "outbound ICMP errors only about tracked connections")
        add(
            "\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } ct state != related counter name \"drop_icmp_error_out\" drop",
            origin: "outbound ICMPv6 errors only about tracked connections")
        add("\t}")
        add("}")
        script = lines.joined(separator: "\n") + "\n"
        self.rules = rules
    }

    /// The number of rules, all chains.
    var ruleCount: Int { rules.count }

    /// A table in which one rule can be dry-run alone (to find the rule nftables refuses).
    static func probe(_ rule: String) -> String {
        let counters = Self.counters.map { "\tcounter \($0.name) {}" }
        return
            (["table inet gatehouse_probe {"] + counters + Self.declarations + [
                "\tchain syn_guard {}", "\tchain probe {", rule, "\t}", "}",
            ]).joined(separator: "\n") + "\n"
    }
}
