/// Renders the ruleset: one table of its own (`inet gatehouse`), so it coexists with whatever
/// else the host runs, replaced atomically on every apply (the `add`/`delete`/define sequence is
/// one nftables transaction).
///
/// Order matters: scans are dropped before conntrack can accept them, established traffic
/// passes before the per-port rules, and the last rule counts what the policy drops.
struct Ruleset: Sendable {
    /// The nft script, ready for `nft -f`.
    let script: String
    /// The rules of chain input in order: their script line (1-based), what they came from (to
    /// name a rule in an error) and their text.
    let rules: [(line: Int, origin: String, text: String)]
    /// The named counters: name → what a packet counted there was.
    static let counters: [(name: String, reason: String)] = [
        ("drop_xmas", "XMAS scan (FIN+PSH+URG)"),
        ("drop_null", "NULL scan (no TCP flags)"),
        ("drop_invalid", "invalid connection-tracking state"),
        ("drop_syn_flood", "new TCP connections over the SYN rate limit"),
        ("drop_icmp_echo", "inbound ICMP or ICMPv6 echo request"),
        ("drop_not_allowed", "no rule allows it (default drop)"),
        ("accept_allowed", "accepted by an allow rule"),
    ]

    init(_ settings: FirewallSettings) {
        var lines: [String] = []
        var rules: [(line: Int, origin: String, text: String)] = []
        func add(_ line: String, origin: String? = nil) {
            lines.append(line)
            if let origin { rules.append((lines.count, origin, line)) }
        }
        let table = settings.table
        add("# gatehouse firewall: rendered from the [firewall] section; do not edit by hand.")
        add("table inet \(table)")
        add("delete table inet \(table)")
        add("table inet \(table) {")
        for counter in Self.counters {
            add("\tcounter \(counter.name) { comment \"\(counter.reason)\" }")
        }
        add("")
        add("\tchain input {")
        add("\t\ttype filter hook input priority filter; policy drop;")
        add("\t\tiif \"lo\" accept", origin: "loopback")
        add(
            "\t\ttcp flags & (fin | psh | urg) == fin | psh | urg counter name \"drop_xmas\" drop",
            origin: "XMAS scan protection")
        add(
            "\t\ttcp flags & (fin | syn | rst | psh | ack | urg) == 0x0 counter name \"drop_null\" drop",
            origin: "NULL scan protection")
        add("\t\tct state invalid counter name \"drop_invalid\" drop", origin: "invalid state")
        add("\t\tct state established,related accept", origin: "established connections")
        add("\t\ticmp type echo-request counter name \"drop_icmp_echo\" drop", origin: "no inbound ICMP echo")
        add("\t\ticmpv6 type echo-request counter name \"drop_icmp_echo\" drop", origin: "no inbound ICMPv6 echo")
        add(
            "\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem } accept",
            origin: "ICMP errors")
        if !settings.ipv6Off {
            // What IPv6 cannot work without (RFC 4890): errors, neighbour discovery, MLD.
            add(
                "\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-query, mld-listener-report, mld2-listener-report } accept",
                origin: "ICMPv6 that IPv6 needs")
        }
        add(
            "\t\ttcp flags & (fin | syn | rst | ack) == syn limit rate over \(settings.synRate)/second burst \(settings.synBurst) packets counter name \"drop_syn_flood\" drop",
            origin: "SYN-flood rate limit (syn_rate, syn_burst)")
        for allow in settings.allow {
            var match = ""
            if let interface = allow.interface { match += "iifname \"\(interface)\" " }
            if let source = allow.source { match += (source.contains(":") ? "ip6" : "ip") + " saddr \(source) " }
            add(
                "\t\t\(match)\(allow.proto) dport \(allow.port) counter name \"accept_allowed\" accept comment \"\(allow.comment)\"",
                origin: allow.origin)
        }
        add("\t\tcounter name \"drop_not_allowed\"", origin: "default drop")
        add("\t}")
        add("}")
        script = lines.joined(separator: "\n") + "\n"
        self.rules = rules
    }

    /// The number of rules in chain input.
    var ruleCount: Int { rules.count }
}
