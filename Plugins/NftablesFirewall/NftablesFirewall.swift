import FoundationEssentials
import GatehouseBasics
import GatehousePluginKit
import StrictJSON
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
            case .render: return render()
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
        _ = try ownedTable(nft)
        let summary =
            "ruleset checks: \(ruleset.ruleCount) rules in table inet \(settings.table) (dry run \(Self.ms(.now - started)))"
        if let drift = try verify(nft) {
            throw PluginError("\(summary); but the applied ruleset \(drift) — apply again to restore it")
        }
        return summary
    }

    /// Render → check → apply the ruleset → read it back → host settings. The ruleset goes
    /// first, so it is never absent because of a host setting; if a host setting fails, the
    /// host settings are put back (HostSettings) and so is the previous ruleset — on a host that
    /// had none (a first start), the new one stays: failing closed, never open.
    private func apply() throws(PluginError) -> String {
        let nft = try nftables()
        let clock = ContinuousClock()
        let t0 = clock.now
        let ruleset = Ruleset(settings)
        let host = HostSettings(settings)
        let t1 = clock.now
        try dryRun(ruleset, nft)
        let previous = try ownedTable(nft)
        let previousRecord = previous == nil ? nil : AppliedRecord.load(from: settings.stateFile)
        let recorded = previousRecord?.table == settings.table ? previousRecord : nil
        let t2 = clock.now
        do {
            try nft.run(ruleset.script)
        } catch {
            throw PluginError(describe(error, ruleset, stage: "apply"))
        }
        let t3 = clock.now
        let applied: Fingerprint
        do throws(PluginError) {
            applied = try readBack(nft, ruleset)
        } catch {
            throw PluginError(
                "\(error.message); \(restore(recorded, hadPrevious: previous != nil, nft))", configKey: error.configKey)
        }
        let t4 = clock.now
        let outcome: HostSettings.Outcome
        do throws(PluginError) {
            outcome = try host.apply()
        } catch {
            throw PluginError(
                "a host setting does not apply: \(error.message); \(restore(recorded, hadPrevious: previous != nil, nft))",
                configKey: error.configKey)
        }
        let t5 = clock.now
        let record = AppliedRecord(
            table: settings.table, appliedAtMS: Int64(Date().timeIntervalSince1970 * 1000), fingerprint: applied,
            timings: [
                "render_ms": Self.milliseconds(t1 - t0), "check_ms": Self.milliseconds(t2 - t1),
                "apply_ms": Self.milliseconds(t3 - t2), "read_back_ms": Self.milliseconds(t4 - t3),
                "host_settings_ms": Self.milliseconds(t5 - t4),
            ], hostSettings: host.planned.map(\.line), script: ruleset.script,
            notApplied: Dictionary(outcome.notApplied.map { ($0.setting.name, $0.reason) }) { first, _ in first })
        try record.save(to: settings.stateFile)
        for warning in host.warnings { self.host.log(.warning, "firewall: \(warning)") }
        for skipped in outcome.notApplied { self.host.log(.warning, "firewall: host setting \(skipped.warning)") }
        for change in outcome.changed { self.host.log(.info, "host setting: \(change)") }
        let inPlace = host.planned.count - outcome.notApplied.count
        let notApplied =
            outcome.notApplied.isEmpty
            ? ""
            : ", \(outcome.notApplied.count) NOT applied (\(outcome.notApplied[0].reason): one warning each)"
        return
            "firewall applied: \(ruleset.ruleCount) rules in table inet \(settings.table), read back and verified in \(Self.ms(t4 - t0)) (render \(Self.ms(t1 - t0)), check \(Self.ms(t2 - t1)), apply \(Self.ms(t3 - t2)), read back \(Self.ms(t4 - t3))); host settings: \(inPlace) of \(host.planned.count) as configured, \(outcome.changed.count) changed\(notApplied) (\(Self.ms(t5 - t4)))\(host.warnings.isEmpty ? "" : "; \(host.warnings.count) warning(s): \(host.warnings.joined(separator: "; "))")"
    }

    /// The kernel holds the chains, the policy, every counter and every rule rendered.
    private func readBack(_ nft: Nftables, _ ruleset: Ruleset) throws(PluginError) -> Fingerprint {
        guard let json = nft.listTable(settings.table, json: true, stateless: true),
            let text = nft.listTable(settings.table, json: false, stateless: true)
        else { throw PluginError("applied, but table inet \(settings.table) cannot be read back") }
        let applied = try Fingerprint(json: json, text: text)
        guard applied.policy == "drop", applied.hook == "input" else {
            throw PluginError("read back: chain input is not hooked on input with policy drop")
        }
        guard applied.rules.count == ruleset.ruleCount else {
            throw PluginError("read back: \(applied.rules.count) rules in the table, \(ruleset.ruleCount) rendered")
        }
        let missing = Set(Ruleset.counters.map(\.name)).subtracting(applied.counters)
        guard missing.isEmpty else {
            throw PluginError("read back: counters missing: \(missing.sorted().joined(separator: ", "))")
        }
        return applied
    }

    /// Puts the previously applied ruleset back after a failed apply; a sentence saying what
    /// the host is left with.
    private func restore(_ previous: AppliedRecord?, hadPrevious: Bool, _ nft: Nftables) -> String {
        guard let previous else {
            return hadPrevious
                ? "the previous ruleset was not recorded (\(settings.stateFile)): the new one stays in place (fail closed)"
                : "there was no previous ruleset: the new one stays in place (fail closed)"
        }
        do {
            try nft.run(previous.script)
            return "the previous ruleset is back in place"
        } catch {
            return "the previous ruleset could not be put back (\(error.message)): the new one stays in place"
        }
    }

    /// The live table's text when it is gatehouse's (it carries `Ruleset.marker`); nil when
    /// there is none. A table of that name that gatehouse did not create is refused, never
    /// replaced or removed.
    private func ownedTable(_ nft: Nftables) throws(PluginError) -> String? {
        guard let text = nft.listTable(settings.table, json: false, stateless: true) else { return nil }
        let head = text.split(separator: "\n").prefix(3).map { $0.trimmingBlanks }
        guard head.contains("comment \"\(Ruleset.marker)\"") else {
            throw PluginError(
                "table: table inet \(settings.table) exists and gatehouse did not create it (it lacks gatehouse's comment); it is left as it is — name another table in [firewall] table",
                configKey: "table")
        }
        return text
    }

    private func remove() throws(PluginError) -> String {
        let nft = try nftables()
        guard try ownedTable(nft) != nil else {
            try? FileManager.default.removeItem(atPath: settings.stateFile)
            return "firewall: table inet \(settings.table) is not there: nothing to remove"
        }
        do {
            try nft.run("delete table inet \(settings.table)\n")
        } catch {
            throw PluginError("cannot remove table inet \(settings.table): \(error.message)")
        }
        try? FileManager.default.removeItem(atPath: settings.stateFile)
        return "firewall removed: table inet \(settings.table) deleted"
    }

    /// The ruleset, then the host settings it comes with, as comments; those the last apply
    /// could not write (a read-only /proc/sys) marked.
    private func render() -> String {
        let host = HostSettings(settings)
        let notApplied = AppliedRecord.load(from: settings.stateFile)?.notApplied ?? [:]
        var lines = [
            "", "# Host settings, applied after the ruleset (all put back if one fails):",
        ]
        lines += host.planned.map { setting in
            guard let reason = notApplied[setting.name] else { return "#   \(setting.line)" }
            return "#   \(setting.line) -- NOT APPLIED at the last apply: \(reason)"
        }
        if !notApplied.isEmpty {
            lines.append(
                "# \(notApplied.count) host setting(s) not applied at the last apply: allow /proc/sys/net in a drop-in (gatehouse.service shows it), install the sysctl.d file (docs/firewall.md), or run `sudo gatehouse firewall apply` once"
            )
        }
        lines += host.warnings.map { "# warning: \($0)" }
        return Ruleset(settings).script + lines.joined(separator: "\n") + "\n"
    }

    /// JSON: the counters by reason, and whether the table is still what was applied.
    private func status() throws(PluginError) -> String {
        let nft = try nftables()
        var report: JSONObject = ["table": .string("inet \(settings.table)")]
        let live = nft.listTable(settings.table, json: true, stateless: false)
        report["present"] = .bool(live != nil)
        let record = AppliedRecord.load(from: settings.stateFile)
        if let record {
            report["applied_at_ms"] = .int(record.appliedAtMS)
            report["timings_ms"] = .object(
                JSONObject(
                    uniqueKeysWithValues: record.timings.map { ($0.key, JSONValue.number(Self.number($0.value))) }))
        }
        let notApplied = record?.notApplied ?? [:]
        report["not_applied"] = .object(
            JSONObject(uniqueKeysWithValues: notApplied.map { ($0.key, .string($0.value)) }))
        let drift = try verify(nft)
        report["matches_applied"] = .bool(drift == nil)
        if let drift { report["drift"] = .string(drift) }
        var counters = JSONObject()
        if let live, case .object(let root)? = try? JSONValue(parsing: live, maximumDepth: Fingerprint.maximumDepth),
            let entries = root["nftables"]?.arrayValue
        {
            for entry in entries {
                guard let counter = entry["counter"], let name = counter["name"]?.stringValue else { continue }
                counters[name] = [
                    "packets": .int(counter["packets"]?.intValue ?? 0), "bytes": .int(counter["bytes"]?.intValue ?? 0),
                    "reason": .string(Ruleset.counters.first { $0.name == name }?.reason ?? ""),
                ]
            }
        }
        report["counters"] = .object(counters)
        let hostSettings = HostSettings(settings)
        report["host_settings"] = .array(
            hostSettings.planned.map { setting -> JSONValue in
                let live = try? hostSettings.current(setting)
                var entry: JSONObject = ["setting": .string(setting.name), "key": .string(setting.key)]
                if let reason = notApplied[setting.name] { entry["not_applied"] = .string(reason) }
                switch setting.target {
                case .sysctl:
                    entry["wanted"] = .string(setting.value ?? "")
                    entry["live"] = .string(live ?? "unavailable")
                    entry["as_configured"] = .bool(live == setting.value)
                case .file:
                    entry["wanted"] = .string(setting.value == nil ? "absent" : "written by gatehouse")
                    entry["live"] = .string(
                        live == nil ? "absent" : live == setting.value ? "written by gatehouse" : "other content")
                    entry["as_configured"] = .bool(
                        live == setting.value
                            || (setting.value == nil && live.map { !$0.hasPrefix(HostSettings.marker) } ?? true))
                }
                return .object(entry)
            })
        report["warnings"] = .array(hostSettings.warnings.map { .string($0) })
        return JSONValue.object(report).formatted(JSONFormat(indentation: "  ", sortsKeys: true))
    }

    /// A timing in milliseconds as a JSON number (0 if it is not finite).
    private static func number(_ value: Double) -> JSONNumber { JSONNumber(value) ?? JSONNumber(0) }

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
            for (line, origin, _, text) in ruleset.rules {
                if (try? nft.run(Ruleset.probe(text), dryRun: true)) == nil {
                    rule = " in rule `\(origin)` (line \(line): `\(text.trimmingBlanks)`)"
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

    static func ms(_ duration: Duration) -> String {
        let tenths = Int((milliseconds(duration) * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) ms"
    }
}

/// What the kernel holds for the table, normalised (no handles, no counter values): compared to
/// notice changes made behind the plugin's back.
struct Fingerprint: Codable, Equatable {
    var hook: String
    var policy: String
    var counters: [String]
    /// Each rule's expression, canonical JSON (its chain included), every chain in order.
    var rules: [String]
    /// Each rule as `nft list` prints it, for messages.
    var ruleText: [String]
    /// Each rule's chain, for messages.
    var ruleChains: [String]

    /// nft's JSON nests a rule's expressions; deeper than the parser's default of 64 is allowed
    /// for this output of the local nftables library.
    static let maximumDepth = 256

    init(json: String, text: String) throws(PluginError) {
        guard case .object(let root)? = try? JSONValue(parsing: json, maximumDepth: Self.maximumDepth),
            let entries = root["nftables"]?.arrayValue
        else { throw PluginError("cannot read the ruleset back (unexpected JSON from nftables)") }
        var hook = ""
        var policy = ""
        var counters: [String] = []
        var rules: [String] = []
        for entry in entries {
            if let chain = entry["chain"], chain["name"]?.stringValue == "input" {
                hook = chain["hook"]?.stringValue ?? ""
                policy = chain["policy"]?.stringValue ?? ""
            } else if let counter = entry["counter"], let name = counter["name"]?.stringValue {
                counters.append(name)
            } else if var rule = entry["rule"]?.objectValue {
                rule["handle"] = nil
                rules.append(JSONValue.object(rule).formatted(JSONFormat(sortsKeys: true)))
            }
        }
        self.hook = hook
        self.policy = policy
        self.counters = counters.sorted()
        self.rules = rules
        // The rule lines of each chain, after its `type ... policy ...;` line.
        var chain: String?
        var lines: [String] = []
        var chains: [String] = []
        for line in text.split(separator: "\n") {
            let trimmed = line.trimmingBlanks
            if trimmed.hasPrefix("chain "), trimmed.hasSuffix("{") {
                chain = String(trimmed.dropFirst(6).dropLast().trimmingBlanks)
            } else if chain != nil, trimmed == "}" {
                chain = nil
            } else if let chain, !trimmed.hasPrefix("type "), !trimmed.isEmpty {
                lines.append(trimmed)
                chains.append(chain)
            }
        }
        ruleText = lines
        ruleChains = chains
    }

    /// A sentence naming the first difference, or nil.
    func difference(from live: Fingerprint) -> String? {
        if live.policy != policy { return "was changed: chain input's policy is now \(live.policy), applied \(policy)" }
        if live.hook != hook { return "was changed: chain input is hooked on \(live.hook), applied \(hook)" }
        if live.counters != counters { return "was changed: its counters are not the ones applied" }
        // Chain by chain: a rule added to one chain does not shift the rules of the next.
        func byChain(_ print: Fingerprint) -> [String: [(rule: String, text: String)]] {
            var chains: [String: [(rule: String, text: String)]] = [:]
            for (index, rule) in print.rules.enumerated() {
                let chain = index < print.ruleChains.count ? print.ruleChains[index] : "input"
                let text = index < print.ruleText.count ? print.ruleText[index] : "(none)"
                chains[chain, default: []].append((rule, text))
            }
            return chains
        }
        let appliedChains = byChain(self)
        let liveChains = byChain(live)
        var order: [String] = []
        for chain in ruleChains + live.ruleChains where !order.contains(chain) { order.append(chain) }
        for chain in order {
            let applied = appliedChains[chain] ?? []
            let now = liveChains[chain] ?? []
            for index in 0..<max(applied.count, now.count) {
                let was = index < applied.count ? applied[index] : nil
                let isNow = index < now.count ? now[index] : nil
                guard was?.rule != isNow?.rule else { continue }
                let place = "rule \(index + 1) of chain \(chain)"
                guard let was else { return "was changed: \(place) was added: `\(isNow?.text ?? "")`" }
                guard let isNow else { return "was changed: \(place) was removed: `\(was.text)`" }
                return "was changed: \(place) is now `\(isNow.text)`, applied `\(was.text)`"
            }
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
    /// The script applied: what a failed apply puts back.
    var script: String
    /// The sysctls the apply could not write (a read-only /proc/sys), by name, with the reason.
    var notApplied: [String: String]? = nil

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
