import FoundationEssentials
import GatehousePluginKit
import StrictJSON

/// The `[firewall]` section, validated. Values that end up inside the ruleset are checked here
/// against injection (quotes, newlines, braces); what they mean (an address, a prefix length)
/// is left to nftables' own check, whose error then names the rule.
struct FirewallSettings: Sendable {
    struct Allow: Sendable, Equatable {
        var port: String  // "8883" or "8000-8100"
        var proto: String  // "tcp" or "udp"
        var interface: String?
        var source: String?
        var comment: String
        /// Where it came from, for messages: "allow[2]" or "the [site] broker port".
        var origin: String
    }

    /// How allowed TCP ports are kept usable under a SYN flood (docs/firewall.md, "SYN floods").
    enum SynFloodProtection: String, Sendable {
        /// Per-source SYN meter, then the kernel's SYN cookies when a listen queue overflows.
        case syncookies
        /// Per-source SYN meter, then nftables' SYNPROXY answers the handshake before conntrack
        /// or the socket hold any state (allowed ports' SYNs untracked; strict conntrack).
        case synproxy
    }

    var allow: [Allow] = []
    /// New TCP connections a second one source may open to the allowed ports (and its burst).
    var synRate = 25
    var synBurst = 50
    var synFloodProtection = SynFloodProtection.syncookies
    /// Where the derived ports (the site broker's) are opened: leaf devices' interface and network.
    var siteInterface: String?
    var siteSource: String?
    /// Interfaces whose IPv6 is switched off, or ["all"].
    var disableIPv6: [String] = []
    var icmpIgnoreBogusErrorResponses: Bool?
    var tcpSyncookies: Bool?
    var icmpEchoIgnoreBroadcasts: Bool?
    /// Host hardening, each on by default: reverse-path filter ("strict", "loose" or "off"),
    /// ICMP redirects, source routing, martians logged, IPv6 router advertisements.
    var rpFilter = "strict"
    var acceptRedirects = false
    var sendRedirects = false
    var acceptSourceRoute = false
    var logMartians = true
    var acceptRA = false
    /// Seconds a half-open inbound connection stays in the conntrack table (0: the kernel's 60).
    var conntrackSynTimeout = 10
    /// nil: USB storage is left alone; "block" writes the modprobe and udev files.
    var usbStorage: String?
    var usbAllow: [String] = []
    var modprobeFile = "/etc/modprobe.d/gatehouse-usb-storage.conf"
    var udevRulesFile = "/etc/udev/rules.d/90-gatehouse-usb-storage.rules"
    var sysctlRoot = "/proc/sys"
    /// "keep" (fail closed) or "remove" at daemon stop.
    var onStop = "keep"
    var stateFile = "/var/lib/gatehouse/firewall.json"
    var table = "gatehouse"

    /// Derived ports with neither an interface nor a source: not opened (a warning says why).
    var unpinnedDerived: [Allow] = []

    var ipv6Off: Bool { disableIPv6.contains("all") }

    static let knownKeys: Set<String> = [
        "allow", "derived_allow", "syn_rate", "syn_burst", "disable_ipv6", "icmp_ignore_bogus_error_responses",
        "tcp_syncookies", "icmp_echo_ignore_broadcasts", "usb_storage", "usb_allow", "modprobe_file", "udev_rules_file",
        "sysctl_root", "on_stop", "state_file", "table", "syn_flood_protection", "site_interface", "site_source",
        "rp_filter", "accept_redirects", "send_redirects", "accept_source_route", "log_martians", "accept_ra",
        "conntrack_syn_timeout",
    ]

    init(_ config: PluginConfig) throws(PluginError) {
        try config.requireKnownKeys(Self.knownKeys)
        siteInterface = try config.optionalString("site_interface")
        if let siteInterface, !Self.isInterfaceName(siteInterface) {
            throw PluginError(
                "site_interface: \"\(siteInterface)\" is not an interface name", configKey: "site_interface")
        }
        siteSource = try config.optionalString("site_source")
        if let siteSource, !Self.isNetwork(siteSource) {
            throw PluginError("site_source: \"\(siteSource)\" is not an address or network", configKey: "site_source")
        }
        // Ports gatehouse opens by itself are pinned like configured ones: to where the leaf
        // devices are (site_interface, site_source). Without either they are not opened at all.
        for (index, entry) in (try Self.tables(config, "derived_allow")).enumerated() {
            var derived = try Self.allow(entry, key: "derived_allow", index: index)
            derived.interface = derived.interface ?? siteInterface
            derived.source = derived.source ?? siteSource
            unpinnedDerived += derived.interface == nil && derived.source == nil ? [derived] : []
            if derived.interface != nil || derived.source != nil { allow.append(derived) }
        }
        for (index, entry) in (try Self.tables(config, "allow")).enumerated() {
            allow.append(try Self.allow(entry, key: "allow", index: index))
        }
        synRate = try config.integer("syn_rate", default: 25, range: 1...100_000)
        synBurst = try config.integer("syn_burst", default: 50, range: 1...1_000_000)
        let protection = try config.string("syn_flood_protection", default: "syncookies")
        guard let parsed = SynFloodProtection(rawValue: protection) else {
            throw PluginError(
                "syn_flood_protection must be \"syncookies\" or \"synproxy\"", configKey: "syn_flood_protection")
        }
        synFloodProtection = parsed
        rpFilter = try config.string("rp_filter", default: "strict")
        guard ["strict", "loose", "off"].contains(rpFilter) else {
            throw PluginError("rp_filter must be \"strict\", \"loose\" or \"off\"", configKey: "rp_filter")
        }
        acceptRedirects = try config.bool("accept_redirects", default: false)
        sendRedirects = try config.bool("send_redirects", default: false)
        acceptSourceRoute = try config.bool("accept_source_route", default: false)
        logMartians = try config.bool("log_martians", default: true)
        acceptRA = try config.bool("accept_ra", default: false)
        conntrackSynTimeout = try config.integer("conntrack_syn_timeout", default: 10, range: 0...600)
        disableIPv6 = try config.strings("disable_ipv6", default: [])
        for name in disableIPv6 where name != "all" {
            guard Self.isInterfaceName(name) else {
                throw PluginError(
                    "disable_ipv6: `\(name)` is not an interface name (or \"all\")", configKey: "disable_ipv6")
            }
        }
        func flag(_ key: String) throws(PluginError) -> Bool? {
            config.object[key] == nil ? nil : try config.bool(key, default: false)
        }
        icmpIgnoreBogusErrorResponses = try flag("icmp_ignore_bogus_error_responses")
        // SYN cookies are what keeps an allowed port open under a spoofed flood: on unless refused.
        tcpSyncookies = try flag("tcp_syncookies") ?? true
        icmpEchoIgnoreBroadcasts = try flag("icmp_echo_ignore_broadcasts")
        if let usb = try config.optionalString("usb_storage") {
            guard usb == "block" || usb == "allow" else {
                throw PluginError("usb_storage must be \"block\" or \"allow\"", configKey: "usb_storage")
            }
            usbStorage = usb
        }
        usbAllow = try config.strings("usb_allow", default: [])
        for id in usbAllow {
            let parts = id.split(separator: ":")
            guard parts.count == 2, parts.allSatisfy({ $0.count == 4 && $0.allSatisfy(\.isHexDigit) }) else {
                throw PluginError(
                    "usb_allow: `\(id)` is not vendor:product in hex (e.g. 0781:5583)", configKey: "usb_allow")
            }
        }
        modprobeFile = try config.string("modprobe_file", default: modprobeFile)
        udevRulesFile = try config.string("udev_rules_file", default: udevRulesFile)
        sysctlRoot = try config.string("sysctl_root", default: sysctlRoot)
        onStop = try config.string("on_stop", default: "keep")
        guard onStop == "keep" || onStop == "remove" else {
            throw PluginError("on_stop must be \"keep\" (fail closed) or \"remove\"", configKey: "on_stop")
        }
        stateFile = try config.string("state_file", default: stateFile)
        table = try config.string("table", default: "gatehouse")
        guard Self.isInterfaceName(table) else { throw PluginError("table: not a valid name", configKey: "table") }
    }

    private static func tables(_ config: PluginConfig, _ key: String) throws(PluginError) -> [JSONObject] {
        guard let value = config.object[key] else { return [] }
        guard let list = value.arrayValue else {
            throw PluginError("`\(key)` must be a list of tables, e.g. [{ port = 8883 }]", configKey: key)
        }
        var result: [JSONObject] = []
        for item in list {
            guard let table = item.objectValue else {
                throw PluginError("`\(key)` must be a list of tables, e.g. [{ port = 8883 }]", configKey: key)
            }
            result.append(table)
        }
        return result
    }

    private static func allow(_ entry: JSONObject, key: String, index: Int) throws(PluginError) -> Allow {
        let place = "\(key)[\(index)]"
        for name in entry.keys where !["port", "proto", "interface", "source", "comment"].contains(name) {
            throw PluginError(
                "\(place): unknown key `\(name)` (port, proto, interface, source, comment)", configKey: key)
        }
        let port: String
        if let number = entry["port"]?.intValue, (1...65535).contains(number) {
            port = String(number)
        } else if let text = entry["port"]?.stringValue, Self.isPortRange(text) {
            port = text
        } else {
            throw PluginError("\(place): `port` must be 1–65535 or a range \"8000-8100\"", configKey: key)
        }
        let proto = entry["proto"]?.stringValue ?? "tcp"
        guard proto == "tcp" || proto == "udp" else {
            throw PluginError("\(place): `proto` must be \"tcp\" or \"udp\"", configKey: key)
        }
        let interface = entry["interface"]?.stringValue
        if let interface, !isInterfaceName(interface) {
            throw PluginError("\(place): `interface` \"\(interface)\" is not an interface name", configKey: key)
        }
        let source = entry["source"]?.stringValue
        if let source, !isNetwork(source) {
            throw PluginError("\(place): `source` \"\(source)\" is not an address or network", configKey: key)
        }
        let comment = entry["comment"]?.stringValue ?? ""
        guard !comment.contains(where: { "\"\\\n\r{};".contains($0) }), comment.count <= 100 else {
            throw PluginError("\(place): `comment` must be one line without quotes or braces", configKey: key)
        }
        return Allow(
            port: port, proto: proto, interface: interface, source: source, comment: comment.isEmpty ? place : comment,
            origin: place)
    }

    static func isInterfaceName(_ name: String) -> Bool {
        (1...15).contains(name.count)
            && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
    }

    /// Only the characters of an address or network: what it means is nftables' check.
    static func isNetwork(_ text: String) -> Bool {
        !text.isEmpty && text.allSatisfy { $0.isHexDigit || ".:/".contains($0) }
    }

    static func isPortRange(_ text: String) -> Bool {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let low = Int(parts[0]), let high = Int(parts[1]) else { return false }
        return 1 <= low && low < high && high <= 65535
    }
}
