import FoundationEssentials
import GatehouseCore
import GatehousePluginHost
import GatehousePluginKit

/// The firewall's part of `gatehouse status`: the table, and every host setting with its live
/// value, as the plugin's own `status` reports them (the CLI only reads, never applies).
struct FirewallStatus: Codable {
    struct HostSetting: Codable {
        var setting: String
        var key: String
        var wanted: String
        var live: String
        var asConfigured: Bool
        /// Why the last apply did not write it (a read-only /proc/sys), if it did not.
        var notApplied: String?
    }
    var table: String
    var present: Bool
    var matchesApplied: Bool
    var drift: String?
    var hostSettings: [HostSetting]
    var warnings: [String]

    /// nil without a `[firewall]` section; else the status, or the error that kept it from being read.
    static func read(_ config: GatewayConfig) -> Result<FirewallStatus, PluginError>? {
        guard let section = config.firewall else { return nil }
        let instance: PluginInstance
        do {
            instance = try Gateway.instantiate(section, role: nil, config: config, delegate: CLIPluginHost())
        } catch {
            return .failure(PluginError("\(error)"))
        }
        defer { instance.discard() }
        return instance.control(.status).flatMap { text in
            let decoder = JSONDecoder()
            decoder.keyDecodingStrategy = .convertFromSnakeCase
            guard let status = try? decoder.decode(FirewallStatus.self, from: Data(text.utf8)) else {
                return .failure(PluginError("the firewall plugin's status is not what gatehouse reads"))
            }
            return .success(status)
        }
    }

    /// The lines `gatehouse status` prints.
    var lines: [String] {
        let state =
            !present ? "absent" : matchesApplied ? "in place, as applied" : "in place, changed: \(drift ?? "")"
        let off = hostSettings.filter { !$0.asConfigured }
        let skipped = hostSettings.filter { $0.notApplied != nil }.count
        var lines = [
            "firewall: table \(table) \(state); host settings: \(hostSettings.count - off.count) of \(hostSettings.count) as configured"
                + (skipped == 0 ? "" : ", \(skipped) not applied at the last apply")
        ]
        for setting in hostSettings {
            let mark = setting.asConfigured ? " " : "!"
            let why = setting.notApplied.map { " — not applied: \($0)" } ?? ""
            lines.append("  \(mark) \(setting.setting) = \(setting.live) (\(setting.key): \(setting.wanted))\(why)")
        }
        if skipped > 0 {
            lines.append(
                "  to apply them: allow /proc/sys/net in a drop-in (gatehouse.service shows it), install the sysctl.d file (docs/firewall.md), or run `sudo gatehouse firewall apply` once"
            )
        }
        lines += warnings.map { "  warning: \($0)" }
        return lines
    }
}
