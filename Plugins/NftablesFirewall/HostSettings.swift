import Foundation
import GatehousePluginKit

/// The host settings beside the ruleset: sysctls (IPv6 off, ICMP and SYN-cookie hardening) and
/// USB mass storage blocked (a modprobe blacklist and a udev rule that de-authorises new mass-
/// storage interfaces, except the allow-listed vendor:product pairs). Each is optional; what the
/// config does not name is left alone.
struct HostSettings {
    let settings: FirewallSettings

    /// Applies them; returns what it did, one line each.
    func apply() throws(PluginError) -> [String] {
        var done: [String] = []
        for interface in settings.disableIPv6 {
            let names = interface == "all" ? ["all", "default"] : [interface]
            for name in names {
                let path = "\(settings.sysctlRoot)/net/ipv6/conf/\(name)/disable_ipv6"
                if !FileManager.default.fileExists(atPath: "\(settings.sysctlRoot)/net/ipv6") {
                    done.append("IPv6 is not available on this host: nothing to disable")
                    break
                }
                try write(sysctl: path, "1", key: "disable_ipv6")
                done.append("net.ipv6.conf.\(name).disable_ipv6 = 1")
            }
        }
        for (key, value, sysctl) in [
            (
                "icmp_ignore_bogus_error_responses", settings.icmpIgnoreBogusErrorResponses,
                "net/ipv4/icmp_ignore_bogus_error_responses"
            ),
            ("tcp_syncookies", settings.tcpSyncookies, "net/ipv4/tcp_syncookies"),
            ("icmp_echo_ignore_broadcasts", settings.icmpEchoIgnoreBroadcasts, "net/ipv4/icmp_echo_ignore_broadcasts"),
        ] {
            guard let value else { continue }
            try write(sysctl: "\(settings.sysctlRoot)/\(sysctl)", value ? "1" : "0", key: key)
            done.append("\(sysctl.replacingOccurrences(of: "/", with: ".")) = \(value ? 1 : 0)")
        }
        switch settings.usbStorage {
        case "block":
            if settings.usbAllow.isEmpty {
                try install(Self.modprobeBlacklist, at: settings.modprobeFile, key: "modprobe_file")
                done.append("usb-storage and uas blacklisted: \(settings.modprobeFile)")
            } else {
                // Allowed devices need the driver: only the udev rule then.
                try removeOurs(settings.modprobeFile, key: "modprobe_file")
            }
            try install(udevRule(allow: settings.usbAllow), at: settings.udevRulesFile, key: "udev_rules_file")
            done.append(
                "new USB mass-storage interfaces de-authorised\(settings.usbAllow.isEmpty ? "" : " except \(settings.usbAllow.joined(separator: ", "))"): \(settings.udevRulesFile)"
            )
        case "allow":
            try removeOurs(settings.modprobeFile, key: "modprobe_file")
            try removeOurs(settings.udevRulesFile, key: "udev_rules_file")
            done.append("USB mass storage allowed (gatehouse's blocking files removed)")
        default:
            break
        }
        return done
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

    func udevRule(allow: [String]) -> String {
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

    private func write(sysctl path: String, _ value: String, key: String) throws(PluginError) {
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw PluginError("cannot set \(path) (\(String(cString: strerror(errno))))", configKey: key)
        }
        defer { try? handle.close() }
        do {
            try handle.write(contentsOf: Data(value.utf8))
        } catch {
            throw PluginError("cannot set \(path): \(error)", configKey: key)
        }
    }

    /// Writes a file atomically (a temporary file renamed over it), creating its folder.
    private func install(_ contents: String, at path: String, key: String) throws(PluginError) {
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(contents.utf8).write(to: url, options: .atomic)
        } catch {
            throw PluginError("cannot write \(path): \(error)", configKey: key)
        }
    }

    /// Removes a file gatehouse wrote (and only such a file).
    private func removeOurs(_ path: String, key: String) throws(PluginError) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        guard text.hasPrefix(Self.marker) else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw PluginError("cannot remove \(path): \(error)", configKey: key)
        }
    }
}
