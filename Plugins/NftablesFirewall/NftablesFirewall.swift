import Foundation
import GatehousePluginKit
import Synchronization

/// The `nftables` firewall plugin: the gateway hardens its own host from its config.
///
/// Safe apply: render → check (libnftables dry run) → host settings → apply (one atomic
/// transaction that replaces only table `inet gatehouse`) → read back (JSON) and check it is what
/// was rendered. Whatever fails, the previous ruleset stays in place and the error names the rule
/// (or the setting). What was applied is recorded in `state_file`, so a later `status` or `check`
/// notices a rule changed behind the plugin's back.
final class NftablesFirewall: FirewallPlugin {
    static let pluginName = "nftables"
    static let pluginVersion = "0.1.0"

    let settings: FirewallSettings
    let host: PluginHost
    /// libnftables contexts are not thread-safe: one caller at a time.
    private let lock = Mutex(())

    init(config: PluginConfig, host: PluginHost) throws(PluginError) {
        settings = try FirewallSettings(config)
        self.host = host
    }

    /// Set by `start` (gatehoused's apply at start or reload). The host stops only the instance
    /// in use when gatehoused stops; this guard also keeps an instance never started from removing.
    private let started = Atomic<Bool>(false)

    func start() throws(PluginError) {
        let summary = try control(.apply)
        started.store(true, ordering: .sequentiallyConsistent)
        host.log(.info, summary)
    }

    func stop() {
        guard started.exchange(false, ordering: .sequentiallyConsistent) else { return }
        guard settings.onStop == "remove" else {
            host.log(.info, "firewall rules stay in place after stop (on_stop = \"keep\": fail closed)")
            return
        }
        do throws(PluginError) {
            host.log(.info, try control(.remove))
        } catch {
            host.log(.error, "cannot remove the firewall rules: \(error.message)")
        }
    }

    func control(_ action: FirewallAction) throws(PluginError) -> String {
        try lock.withLock { _ throws(PluginError) -> String in
            switch action {
            case .render: return Ruleset(settings).script
            case .check: return try check()
            case .apply: return try apply()
            case .status: return try status()
            case .remove: return try remove()
            }
        }
    }

    // MARK: - Actions

    private func nftables() throws(PluginError) -> Nftables {
        do {
            return try Nftables()
        } catch {
            throw PluginError(error.message)
        }
    }

    /// Renders and dry-runs the ruleset; also reports whether the applied one was changed.
    private func check() throws(PluginError) -> String {
        let nft = try nftables()
        let ruleset = Ruleset(settings)
        let started = ContinuousClock.now
        try dryRun(ruleset, nft)
        let summary =
            "ruleset checks: \(ruleset.ruleCount) rules in table inet \(settings.table) (dry run \(Self.ms(.now - started)))"
        if let drift = try verify(nft) {
            throw PluginError("\(summary); but the applied ruleset \(drift) — apply again to restore it")
        }
        return summary
    }

    private func apply() throws(PluginError) -> String {
        let nft = try nftables()
        let clock = ContinuousClock()
        let t0 = clock.now
        let ruleset = Ruleset(settings)
        let t1 = clock.now
        try dryRun(ruleset, nft)
        let t2 = clock.now
        let hostChanges = try HostSettings(settings: settings).apply()
        do {
            try nft.run(ruleset.script)
        } catch {
            throw PluginError(describe(error, ruleset, stage: "apply"))
        }
        let t3 = clock.now
        guard let json = nft.listTable(settings.table, json: true, stateless: true),
            let text = nft.listTable(settings.table, json: false, stateless: true)
        else { throw PluginError("applied, but table inet \(settings.table) cannot be read back") }
        let applied = try Fingerprint(json: json, text: text)
        // Read back: the kernel holds the chain, the policy, every counter and every rule rendered.
        guard applied.policy == "drop", applied.hook == "input" else {
            throw PluginError("read back: chain input is not hooked on input with policy drop")
        }
        guard applied.rules.count == ruleset.ruleCount else {
            throw PluginError("read back: \(applied.rules.count) rules in chain input, \(ruleset.ruleCount) rendered")
        }
        let missing = Set(Ruleset.counters.map(\.name)).subtracting(applied.counters)
        guard missing.isEmpty else {
            throw PluginError("read back: counters missing: \(missing.sorted().joined(separator: ", "))")
        }
        let t4 = clock.now
        let record = AppliedRecord(
            table: settings.table, appliedAtMS: Int64(Date().timeIntervalSince1970 * 1000), fingerprint: applied,
            timings: [
                "render_ms": Self.milliseconds(t1 - t0), "check_ms": Self.milliseconds(t2 - t1),
                "apply_ms": Self.milliseconds(t3 - t2), "read_back_ms": Self.milliseconds(t4 - t3),
            ], hostSettings: hostChanges)
        try record.save(to: settings.stateFile)
        for change in hostChanges { host.log(.info, "host setting: \(change)") }
        return
            "firewall applied: \(ruleset.ruleCount) rules in table inet \(settings.table), read back and verified in \(Self.ms(t4 - t0)) (render \(Self.ms(t1 - t0)), check \(Self.ms(t2 - t1)), apply \(Self.ms(t3 - t2)), read back \(Self.ms(t4 - t3)))"
    }

    private func remove() throws(PluginError) -> String {
        let nft = try nftables()
        do {
            try nft.run("table inet \(settings.table)\ndelete table inet \(settings.table)\n")
        } catch {
            throw PluginError("cannot remove table inet \(settings.table): \(error.message)")
        }
        try? FileManager.default.removeItem(atPath: settings.stateFile)
        return "firewall removed: table inet \(settings.table) deleted"
    }

    /// JSON: the counters by reason, and whether the table is still what was applied.
    private func status() throws(PluginError) -> String {
        let nft = try nftables()
        var report: [String: Any] = ["table": "inet \(settings.table)"]
        let live = nft.listTable(settings.table, json: true, stateless: false)
        report["present"] = live != nil
        if let record = AppliedRecord.load(from: settings.stateFile) {
            report["applied_at_ms"] = record.appliedAtMS
            report["timings_ms"] = record.timings
        }
        let drift = try verify(nft)
        report["matches_applied"] = drift == nil
        if let drift { report["drift"] = drift }
        var counters: [String: Any] = [:]
        if let live, let data = live.data(using: .utf8),
            let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let entries = root["nftables"] as? [[String: Any]]
        {
            for entry in entries {
                guard let counter = entry["counter"] as? [String: Any], let name = counter["name"] as? String else {
                    continue
                }
                counters[name] = [
                    "packets": counter["packets"] as? Int ?? 0, "bytes": counter["bytes"] as? Int ?? 0,
                    "reason": Ruleset.counters.first { $0.name == name }?.reason ?? "",
                ]
            }
        }
        report["counters"] = counters
        guard
            let data = try? JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted])
        else { throw PluginError("cannot encode the status") }
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: - Helpers

    private func dryRun(_ ruleset: Ruleset, _ nft: Nftables) throws(PluginError) {
        do {
            try nft.run(ruleset.script, dryRun: true)
        } catch {
            throw PluginError(describe(error, ruleset, stage: "check"))
        }
    }

    /// "the ruleset does not check in rule `allow[0]` (...)" — nft's own message with the rule
    /// named. nft's error position is unreliable for scripts read from a buffer (1.0.6 points
    /// into the wrong line), so the rule is found by dry-running each rule alone.
    private func describe(_ error: Nftables.Failure, _ ruleset: Ruleset, stage: String) -> String {
        var rule = ""
        if let nft = try? Nftables() {
            for (line, origin, text) in ruleset.rules {
                let probe =
                    "table inet gatehouse_probe {\n\tcounter \(Ruleset.counters.map(\.name).joined(separator: " {}\n\tcounter ")) {}\n\tchain probe {\n\(text)\n\t}\n}\n"
                if (try? nft.run(probe, dryRun: true)) == nil {
                    rule = " in rule `\(origin)` (line \(line): `\(text.trimmingCharacters(in: .whitespaces))`)"
                    break
                }
            }
        }
        // Only nft's "Error: ..." lines: the source line and caret it prints can be the wrong line.
        let errors = error.message.split(separator: "\n").filter { $0.hasPrefix("Error:") }.joined(separator: "\n")
        return
            "the ruleset does not \(stage == "check" ? "check" : "apply")\(rule); the previous ruleset stays in place: \(errors.isEmpty ? error.message : errors)"
    }

    /// nil when the live table is what was last applied; else what changed.
    private func verify(_ nft: Nftables) throws(PluginError) -> String? {
        guard let record = AppliedRecord.load(from: settings.stateFile) else { return nil }
        guard let json = nft.listTable(settings.table, json: true, stateless: true),
            let text = nft.listTable(settings.table, json: false, stateless: true)
        else { return "is gone: table inet \(settings.table) no longer exists" }
        let live = try Fingerprint(json: json, text: text)
        return record.fingerprint.difference(from: live)
    }

    static func milliseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
    }

    static func ms(_ duration: Duration) -> String { String(format: "%.1f ms", milliseconds(duration)) }
}

/// What the kernel holds for the table, normalised (no handles, no counter values): compared to
/// notice changes made behind the plugin's back.
struct Fingerprint: Codable, Equatable {
    var hook: String
    var policy: String
    var counters: [String]
    /// Each rule's expression, canonical JSON.
    var rules: [String]
    /// Each rule as `nft list` prints it, for messages.
    var ruleText: [String]

    init(json: String, text: String) throws(PluginError) {
        guard let data = json.data(using: .utf8),
            let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let entries = root["nftables"] as? [[String: Any]]
        else { throw PluginError("cannot read the ruleset back (unexpected JSON from nftables)") }
        var hook = ""
        var policy = ""
        var counters: [String] = []
        var rules: [String] = []
        for entry in entries {
            if let chain = entry["chain"] as? [String: Any], chain["name"] as? String == "input" {
                hook = chain["hook"] as? String ?? ""
                policy = chain["policy"] as? String ?? ""
            } else if let counter = entry["counter"] as? [String: Any], let name = counter["name"] as? String {
                counters.append(name)
            } else if let rule = entry["rule"] as? [String: Any], rule["chain"] as? String == "input" {
                var normalized = rule
                normalized["handle"] = nil
                let data = (try? JSONSerialization.data(withJSONObject: normalized, options: [.sortedKeys])) ?? Data()
                rules.append(String(decoding: data, as: UTF8.self))
            }
        }
        self.hook = hook
        self.policy = policy
        self.counters = counters.sorted()
        self.rules = rules
        // The rule lines of chain input, after its `type ... policy ...;` line.
        var inChain = false
        var lines: [String] = []
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("chain input") {
                inChain = true
            } else if inChain, trimmed == "}" {
                inChain = false
            } else if inChain, !trimmed.hasPrefix("type "), !trimmed.isEmpty {
                lines.append(trimmed)
            }
        }
        ruleText = lines
    }

    /// A sentence naming the first difference, or nil.
    func difference(from live: Fingerprint) -> String? {
        if live.policy != policy { return "was changed: chain input's policy is now \(live.policy), applied \(policy)" }
        if live.hook != hook { return "was changed: chain input is hooked on \(live.hook), applied \(hook)" }
        if live.counters != counters { return "was changed: its counters are not the ones applied" }
        for index in 0..<max(rules.count, live.rules.count) {
            let applied = index < rules.count ? rules[index] : nil
            let now = index < live.rules.count ? live.rules[index] : nil
            guard applied != now else { continue }
            let appliedText = index < ruleText.count ? ruleText[index] : "(none)"
            let nowText = index < live.ruleText.count ? live.ruleText[index] : "(none)"
            if applied == nil { return "was changed: rule \(index + 1) of chain input was added: `\(nowText)`" }
            if now == nil { return "was changed: rule \(index + 1) of chain input was removed: `\(appliedText)`" }
            return "was changed: rule \(index + 1) of chain input is now `\(nowText)`, applied `\(appliedText)`"
        }
        return nil
    }
}

/// What the last apply put in place, kept in `state_file` (no secrets: rules and timings).
struct AppliedRecord: Codable {
    var table: String
    var appliedAtMS: Int64
    var fingerprint: Fingerprint
    var timings: [String: Double]
    var hostSettings: [String]

    func save(to path: String) throws(PluginError) {
        do {
            let url = URL(fileURLWithPath: path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try encoder.encode(self).write(to: url, options: .atomic)
        } catch {
            throw PluginError("cannot record the applied ruleset in \(path): \(error)", configKey: "state_file")
        }
    }

    static func load(from path: String) -> AppliedRecord? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(AppliedRecord.self, from: data)
    }
}

/// The plugin's one exported symbol (gatehouse_plugin.h).
@_cdecl("gatehouse_plugin_entry")
public func gatehousePluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? {
    PluginExport.firewall(NftablesFirewall.self, hostABI: hostABI)
}
