import FoundationEssentials
import GatehouseBasics
import GatehousePluginKit

#if canImport(Glibc)
    import Glibc
#endif

/// The host settings beside the ruleset: sysctls (hardening, IPv6 off, SYN cookies, conntrack)
/// and USB mass storage blocked (a modprobe blacklist and a udev rule that de-authorises new
/// mass-storage interfaces, except the allow-listed vendor:product pairs).
///
/// Applied as one transaction, after the ruleset: every value is read before anything is
/// written, and if one write fails, every setting already written is put back as it was, and
/// the error names the setting (its config key). A setting that already has its value is not
/// written. A sysctl this process may not write — `/proc/sys` read-only (EROFS, EACCES: the
/// packaged unit's ProtectKernelTunables=yes) or not visible at all (ProcSubset=pid) — is not
/// applied and is a warning naming it, never a failure: the ruleset stands, the rest applies.
/// An interface that does not exist is a warning too.
struct HostSettings {
    /// One setting: a sysctl, or a file gatehouse owns.
    struct Setting: Sendable, Equatable {
        enum Target: Sendable, Equatable {
            /// A sysctl, by its path below `sysctl_root` ("net/ipv4/conf/all/rp_filter").
            case sysctl(String)
            /// A file with gatehouse's marker; `nil` content: gatehouse's file removed.
            case file(String)
        }
        var target: Target
        /// The value (a sysctl's number, a file's content; nil: no file).
        var value: String?
        /// The config key that asks for it, named in errors.
        var key: String

        /// "net.ipv4.conf.all.rp_filter" or the file's path.
        var name: String {
            switch target {
            case .sysctl(let path): return path.replacing("/", with: ".")
            case .file(let path): return path
            }
        }

        /// One line for render, status and the log: "net.ipv4.conf.all.rp_filter = 1 (rp_filter)".
        var line: String {
            switch target {
            case .sysctl: return "\(name) = \(value ?? "") (\(key))"
            case .file(let path):
                return value == nil ? "\(path): removed if gatehouse wrote it (\(key))" : "\(path): written (\(key))"
            }
        }
    }

    /// A sysctl this process may not write (or see): not applied, and a warning names it.
    struct NotApplied: Sendable {
        var setting: Setting
        /// Its value now, when it can be read.
        var live: String?
        /// Why: "/proc/sys is read-only here (Read-only file system)".
        var reason: String

        /// The warning: the setting, why, and how to allow it.
        var warning: String {
            let now = live.map { "it stays \($0)" } ?? "its value cannot be read here"
            return
                "\(setting.line) not applied: \(reason); \(now). The ruleset is applied. To apply it: allow /proc/sys/net in a drop-in (gatehouse.service shows it), install the sysctl.d file (docs/firewall.md), or run `sudo gatehouse firewall apply` once (until the next boot)"
        }
    }

    /// What an apply did: settings written, and sysctls it could not write.
    struct Outcome: Sendable {
        var changed: [String] = []
        var notApplied: [NotApplied] = []
    }

    let settings: FirewallSettings
    /// What the config asks for, in the order it is applied.
    let planned: [Setting]
    /// What cannot apply and is skipped (a missing interface), one sentence each.
    let warnings: [String]
    /// Whether `sysctl_root` is visible at all (the packaged unit's ProcSubset=pid hides
    /// /proc/sys): when not, the sysctls are planned for all/default only, and none applies.
    let sysctlVisible: Bool

    init(_ settings: FirewallSettings) {
        self.settings = settings
        var planned: [Setting] = []
        var warnings: [String] = []
        let root = settings.sysctlRoot
        let fileManager = FileManager.default
        func sysctl(_ path: String, _ value: String, _ key: String) {
            planned.append(Setting(target: .sysctl(path), value: value, key: key))
        }
        /// The interfaces the kernel has now (conf/all and conf/default aside), loopback excepted.
        func interfaces(_ family: String) -> [String] {
            let names = (try? fileManager.contentsOfDirectory(atPath: "\(root)/net/\(family)/conf")) ?? []
            return names.filter { !["all", "default", "lo"].contains($0) }.sorted()
        }
        let visible = fileManager.fileExists(atPath: "\(root)/net")
        sysctlVisible = visible
        // Unseen, IPv6 is taken to be there: the settings are then listed, as not applied.
        let hasIPv6 = !visible || fileManager.fileExists(atPath: "\(root)/net/ipv6")

        // IPv4 hardening. Which of all/default/each interface counts differs per setting
        // (kernel ip-sysctl.rst): rp_filter takes the larger of all and the interface,
        // log_martians either, accept_source_route both; redirects need every interface too.
        let rpFilter = ["off": "0", "strict": "1", "loose": "2"][settings.rpFilter] ?? "1"
        for scope in ["all", "default"] {
            sysctl("net/ipv4/conf/\(scope)/rp_filter", rpFilter, "rp_filter")
            sysctl("net/ipv4/conf/\(scope)/log_martians", settings.logMartians ? "1" : "0", "log_martians")
            sysctl(
                "net/ipv4/conf/\(scope)/accept_source_route", settings.acceptSourceRoute ? "1" : "0",
                "accept_source_route")
        }
        for scope in ["all", "default"] + interfaces("ipv4") {
            sysctl(
                "net/ipv4/conf/\(scope)/accept_redirects", settings.acceptRedirects ? "1" : "0", "accept_redirects")
            sysctl("net/ipv4/conf/\(scope)/secure_redirects", settings.acceptRedirects ? "1" : "0", "accept_redirects")
            sysctl("net/ipv4/conf/\(scope)/send_redirects", settings.sendRedirects ? "1" : "0", "send_redirects")
        }
        for (key, value, path) in [
            (
                "icmp_ignore_bogus_error_responses", settings.icmpIgnoreBogusErrorResponses,
                "net/ipv4/icmp_ignore_bogus_error_responses"
            ),
            ("tcp_syncookies", settings.tcpSyncookies, "net/ipv4/tcp_syncookies"),
            ("icmp_echo_ignore_broadcasts", settings.icmpEchoIgnoreBroadcasts, "net/ipv4/icmp_echo_ignore_broadcasts"),
        ] {
            guard let value else { continue }
            sysctl(path, value ? "1" : "0", key)
        }
        // Conntrack (loaded by the ruleset, which is applied first): half-open inbound
        // connections forgotten sooner, so a spoofed flood holds fewer entries; SYNPROXY needs
        // strict tracking (a packet in the middle of an unknown connection is invalid).
        if settings.conntrackSynTimeout > 0 {
            sysctl(
                "net/netfilter/nf_conntrack_tcp_timeout_syn_recv", "\(settings.conntrackSynTimeout)",
                "conntrack_syn_timeout")
        }
        if settings.synFloodProtection == .synproxy {
            sysctl("net/netfilter/nf_conntrack_tcp_loose", "0", "syn_flood_protection")
        }

        // IPv6: off where asked; router advertisements and redirects off unless the site uses them.
        if hasIPv6 {
            for interface in settings.disableIPv6 {
                if interface == "all" {
                    sysctl("net/ipv6/conf/all/disable_ipv6", "1", "disable_ipv6")
                    sysctl("net/ipv6/conf/default/disable_ipv6", "1", "disable_ipv6")
                } else if !visible || fileManager.fileExists(atPath: "\(root)/net/ipv6/conf/\(interface)") {
                    sysctl("net/ipv6/conf/\(interface)/disable_ipv6", "1", "disable_ipv6")
                } else {
                    warnings.append(
                        "disable_ipv6: interface \(interface) does not exist: its IPv6 is left as it is; the rest applies"
                    )
                }
            }
            for scope in ["all", "default"] + interfaces("ipv6") {
                sysctl("net/ipv6/conf/\(scope)/accept_ra", settings.acceptRA ? "1" : "0", "accept_ra")
                sysctl(
                    "net/ipv6/conf/\(scope)/accept_redirects", settings.acceptRedirects ? "1" : "0",
                    "accept_redirects")
            }
            for scope in ["all", "default"] {
                sysctl(
                    "net/ipv6/conf/\(scope)/accept_source_route", settings.acceptSourceRoute ? "0" : "-1",
                    "accept_source_route")
            }
        } else if !settings.disableIPv6.isEmpty {
            warnings.append("disable_ipv6: IPv6 is not available on this host: nothing to disable")
        }

        switch settings.usbStorage {
        case "block":
            // Allowed devices need the driver: only the udev rule then.
            let blacklist = settings.usbAllow.isEmpty ? Self.modprobeBlacklist : nil
            planned.append(Setting(target: .file(settings.modprobeFile), value: blacklist, key: "modprobe_file"))
            planned.append(
                Setting(
                    target: .file(settings.udevRulesFile), value: Self.udevRule(allow: settings.usbAllow),
                    key: "udev_rules_file"))
        case "allow":
            planned.append(Setting(target: .file(settings.modprobeFile), value: nil, key: "modprobe_file"))
            planned.append(Setting(target: .file(settings.udevRulesFile), value: nil, key: "udev_rules_file"))
        default:
            break
        }
        for allow in settings.unpinnedDerived {
            warnings.append(
                "\(allow.origin) (\(allow.comment), \(allow.proto) port \(allow.port)) is not opened: set [firewall] site_interface or site_source to say where leaf devices connect from"
            )
        }
        self.planned = planned
        self.warnings = warnings
    }

    /// What one setting is now: a sysctl's value, a file's content (nil: no file).
    func current(_ setting: Setting) throws(PluginError) -> String? {
        switch setting.target {
        case .sysctl(let path):
            guard let text = try? String(contentsOfFile: "\(settings.sysctlRoot)/\(path)", encoding: .utf8) else {
                throw PluginError(
                    "\(setting.key): cannot read \(setting.name) (\(String(cString: strerror(errno))))",
                    configKey: setting.key)
            }
            return text.trimmingWhitespace
        case .file(let path):
            return try? String(contentsOfFile: path, encoding: .utf8)
        }
    }

    /// Applies every setting; on the first failure puts back what it changed and throws, naming
    /// the setting. A sysctl this process may not write (or see) is not applied and the rest
    /// goes on: the outcome lists it.
    func apply() throws(PluginError) -> Outcome {
        var outcome = Outcome()
        // Recorded before anything is written: a setting that cannot be read fails here
        // (unless /proc/sys is not visible at all: then no sysctl applies).
        var before: [String?] = []
        for setting in planned {
            if case .sysctl = setting.target, !sysctlVisible {
                before.append(nil)
            } else {
                before.append(try current(setting))
            }
        }
        var changed: [Int] = []
        for (index, setting) in planned.enumerated() where !isInPlace(setting, before[index]) {
            if case .sysctl = setting.target, !sysctlVisible {
                outcome.notApplied.append(
                    NotApplied(
                        setting: setting, live: nil,
                        reason: "\(settings.sysctlRoot) is not visible to this process (ProcSubset=pid)"))
                continue
            }
            do {
                try write(setting.target, setting.value, key: setting.key)
                changed.append(index)
                outcome.changed.append(setting.line)
            } catch let failure as ReadOnly {
                outcome.notApplied.append(NotApplied(setting: setting, live: before[index], reason: failure.reason))
            } catch {
                // Any other failure: what was changed is put back (the transaction).
                let failure = error as? PluginError ?? PluginError("\(setting.key): \(error)", configKey: setting.key)
                let restored = restore(changed.map { (planned[$0], before[$0]) })
                throw PluginError(
                    "\(failure.message); \(restored) — the host settings are as they were", configKey: failure.configKey
                )
            }
        }
        return outcome
    }

    /// A sysctl write refused because /proc/sys is read-only or not writable by this process.
    struct ReadOnly: Error {
        var reason: String
    }

    /// Whether a setting already holds its value (then nothing is written).
    private func isInPlace(_ setting: Setting, _ now: String?) -> Bool {
        switch setting.target {
        case .sysctl: return now == setting.value
        case .file:
            // An absent file is in place when none is wanted; someone else's file is never touched.
            if setting.value == nil { return now.map { !$0.hasPrefix(Self.marker) } ?? true }
            return now == setting.value
        }
    }

    /// Puts the given settings back, last changed first; a sentence saying how it went.
    private func restore(_ settings: [(Setting, String?)]) -> String {
        var failed: [String] = []
        for (setting, value) in settings.reversed() {
            do {
                try write(setting.target, value, key: setting.key)
            } catch let error as PluginError {
                failed.append(error.message)
            } catch {
                failed.append("\(setting.key): cannot put \(setting.name) back: \(error)")
            }
        }
        if settings.isEmpty { return "nothing had been changed" }
        if failed.isEmpty { return "\(settings.count) setting(s) already changed were put back" }
        return "putting back what was changed failed too: \(failed.joined(separator: "; "))"
    }

    /// Writes one setting. A sysctl write refused by a read-only /proc/sys (EROFS) or by its
    /// permissions (EACCES) throws `ReadOnly`; any other failure a `PluginError`.
    private func write(_ target: Setting.Target, _ value: String?, key: String) throws {
        switch target {
        case .sysctl(let path):
            let full = "\(settings.sysctlRoot)/\(path)"
            let name = path.replacing("/", with: ".")
            let fd = open(full, O_WRONLY | O_CLOEXEC)
            if fd < 0 {
                let code = errno
                if code == EROFS || code == EACCES {
                    throw ReadOnly(
                        reason:
                            "\(settings.sysctlRoot) is \(code == EROFS ? "read-only" : "not writable") here (\(String(cString: strerror(code))))"
                    )
                }
                throw PluginError("\(key): cannot set \(name) (\(String(cString: strerror(code))))", configKey: key)
            }
            defer { close(fd) }
            let bytes = Array((value ?? "").utf8)
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written != bytes.count {
                let code = written < 0 ? errno : EIO
                if code == EROFS || code == EACCES {
                    throw ReadOnly(
                        reason: "\(settings.sysctlRoot) is not writable here (\(String(cString: strerror(code))))")
                }
                throw PluginError("\(key): cannot set \(name) (\(String(cString: strerror(code))))", configKey: key)
            }
        case .file(let path):
            if let value {
                try install(value, at: path, key: key)
            } else {
                try remove(path, key: key)
            }
        }
    }

    static let marker = "# Written by gatehouse ([firewall] usb_storage)."

    static let modprobeBlacklist = """
        \(marker) Do not edit: gatehouse rewrites it.
        # USB mass storage is blocked on this gateway: the drivers are not loaded, even on request.
        blacklist usb-storage
        blacklist uas
        install usb-storage /bin/false
        install uas /bin/false

        """

    static func udevRule(allow: [String]) -> String {
        var lines = [
            "\(Self.marker) Do not edit: gatehouse rewrites it.",
            "# New USB interfaces of class 08 (mass storage) are de-authorised unless allow-listed.",
            #"ACTION!="add", GOTO="gatehouse_usb_storage_end""#,
            #"SUBSYSTEM!="usb", GOTO="gatehouse_usb_storage_end""#,
            #"ENV{DEVTYPE}!="usb_interface", GOTO="gatehouse_usb_storage_end""#,
            #"ATTR{bInterfaceClass}!="08", GOTO="gatehouse_usb_storage_end""#,
        ]
        for id in allow {
            let parts = id.lowercased().split(separator: ":")
            lines.append(
                #"ATTRS{idVendor}=="\#(parts[0])", ATTRS{idProduct}=="\#(parts[1])", GOTO="gatehouse_usb_storage_end""#)
        }
        lines.append(#"ATTR{authorized}="0""#)
        lines.append(#"LABEL="gatehouse_usb_storage_end""#)
        return lines.joined(separator: "\n") + "\n"
    }

    /// Writes a file atomically (a temporary file renamed over it), creating its folder.
    private func install(_ contents: String, at path: String, key: String) throws(PluginError) {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(contents.utf8).write(to: url, options: .atomic)
        } catch {
            throw PluginError("\(key): cannot write \(path): \(error)", configKey: key)
        }
    }

    /// Removes a file gatehouse wrote (and only such a file).
    private func remove(_ path: String, key: String) throws(PluginError) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), text.hasPrefix(Self.marker) else {
            return
        }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw PluginError("\(key): cannot remove \(path): \(error)", configKey: key)
        }
    }
}
