import ArgumentParser
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehousePluginHost
import GatehousePluginKit

/// `gatehouse firewall render|check|apply|status|remove`: the `[firewall]` plugin, by hand.
/// `render` and `check` change nothing; `apply` does what gatehoused does at start.
struct Firewall: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Render, check, apply and inspect the host firewall of the [firewall] section.",
        discussion: """
            render: print the ruleset for review. check: render and dry-run it, and verify that the \
            applied ruleset was not changed behind gatehouse's back (exit 1 if it was). apply: render, \
            check, apply atomically, read back. status: counters by drop reason (JSON). remove: delete \
            gatehouse's table (the host's other rules are untouched).
            """,
        subcommands: [Render.self, Check.self, Apply.self, Status.self, Remove.self])

    struct Render: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the ruleset for review.")
        @OptionGroup var options: ConfigOption
        func run() throws { try Firewall.run(.render, options) }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Dry-run the ruleset; verify the applied one is intact.")
        @OptionGroup var options: ConfigOption
        func run() throws { try Firewall.run(.check, options) }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Render, check, apply, read back.")
        @OptionGroup var options: ConfigOption
        func run() throws { try Firewall.run(.apply, options) }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "What was dropped, by reason (JSON).")
        @OptionGroup var options: ConfigOption
        func run() throws { try Firewall.run(.status, options) }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete gatehouse's firewall table.")
        @OptionGroup var options: ConfigOption
        func run() throws { try Firewall.run(.remove, options) }
    }

    static func run(_ action: FirewallAction, _ options: ConfigOption) throws {
        let config = try options.loadConfig()
        guard let section = config.firewall else {
            throw ValidationError(
                "\(config.sourcePath): no [firewall] section: gatehouse leaves the host's firewall alone")
        }
        let instance: PluginInstance
        do {
            instance = try Gateway.instantiate(section, role: nil, config: config, delegate: CLIPluginHost())
        } catch {
            StandardStreams.writeError("gatehouse firewall: \(error)\n")
            throw ExitCode(error.exitCode)
        }
        defer { instance.discard() }  // never stopped: stop is the daemon's (on_stop)
        switch instance.control(action) {
        case .success(let text):
            print(text, terminator: text.hasSuffix("\n") ? "" : "\n")
        case .failure(let error):
            StandardStreams.writeError("gatehouse firewall \(action): \(error.message)\n")
            throw ExitCode(1)
        }
    }
}

/// The host side of a plugin loaded by the CLI: its log lines go to standard error; it takes no
/// telemetry and signs nothing.
final class CLIPluginHost: PluginHostDelegate {
    func ingest(_ messages: [PluginMessage], from plugin: String) -> PluginStatus { .invalid }
    func delivered(token: UInt64, status: PluginStatus) {}
    func linkStateChanged(deviceID: String, state: LinkState, reason: String, plugin: String) {}
    func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError> {
        .failure(PluginStatusError(.refused))
    }
    func command(_ command: PluginCommand, respond: @escaping @Sendable (Int32, [UInt8]) -> Void) {
        respond(403, [])
    }
    func deliverResult(token: UInt64, status: Int32, body: [UInt8], plugin: String) {}
    func log(level: PluginLogLevel, message: String, plugin: String) {
        StandardStreams.writeError("[\(plugin)] \(message)\n")
    }
}
