import ArgumentParser
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehouseStore

extension Rules {
    /// `gatehouse rules stats`: what each telemetry rule did since gatehoused started, as the
    /// daemon writes it beside its status (within a second).
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what each telemetry rule did since gatehoused started: routed, archived, dropped, expired.",
            discussion: """
                routed: messages the rule sent upstream; archived: kept in the archive; dropped: sent nowhere (a \
                `drop` rule, or `(no rule routes the message)`); expired: sent upstream, but their time to live \
                (the rule's `ttl`) ran out before the hub took them — dropped, never sent; failed: times the rule's \
                condition failed. A message several routes send counts for each of them.
                """)

        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON instead of a table.") var json = false

        func run() throws {
            let config = try options.loadConfig()
            let store = try ConfigOption.openState(config)
            let stats = try store.telemetryRuleStats()
            let status = try store.readStatus()
            if json {
                struct Report: Codable {
                    var startedMS: Int64?
                    var rules: [TelemetryRuleStats]
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(
                    String(
                        decoding: try encoder.encode(Report(startedMS: status?.startedMS, rules: stats)), as: UTF8.self)
                )
                return
            }
            guard let status else {
                print("gatehoused has not run with \(config.gateway.stateDB) yet")
                return
            }
            print("telemetry rules since gatehoused started \(Status.format(status.startedMS)):")
            guard !stats.isEmpty else {
                print(
                    config.gateway.rulesDir == nil
                        ? "(no [gateway] rules_dir: every message goes upstream at normal priority)"
                        : "(no telemetry rules: every message goes upstream at normal priority)")
                return
            }
            let header = ["KIND", "RULE", "WHERE", "ROUTED", "ARCHIVED", "DROPPED", "EXPIRED", "FAILED"]
            var rows = [header]
            for rule in stats {
                rows.append([
                    rule.kind, ControlEscaping.escape(rule.rule),
                    rule.file.isEmpty ? "-" : "\(PathText.lastComponent(of: rule.file)):\(rule.line)",
                    "\(rule.routed)", "\(rule.archived)", "\(rule.dropped)", "\(rule.expired)", "\(rule.failed)",
                ])
            }
            let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                print(
                    zip(row, widths).map { $0.padded(to: $1) }.joined(
                        separator: "  "
                    )
                    .trimmingBlanks)
            }
        }
    }
}
