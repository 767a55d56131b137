import ArgumentParser
import FoundationEssentials
import GateRules
import GatehouseBasics
import GatehouseCore
import GatehouseStore

#if canImport(Glibc)
    import Glibc
#endif

extension Rules {
    /// `gatehouse rules reload`: check the daemon's rule directory here first, so the integrator
    /// sees every diagnostic at once, then ask the running daemon to swap it in (SIGHUP). The
    /// daemon checks again and keeps its running rules if anything is wrong.
    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check [gateway] rules_dir and make the running gatehoused load it (SIGHUP).")

        @OptionGroup var options: ConfigOption

        func run() throws {
            let config = try options.loadConfig()
            guard let directory = config.gateway.rulesDir else {
                throw ValidationError("\(options.config): [gateway] rules_dir is not set; the daemon loads no rules")
            }
            // As the daemon checks it: telemetry routes only to the destinations it knows.
            let (policy, diagnostics, files) = Policy.compile(
                directory: directory, options: CheckOptions(destinations: TelemetryDestination.all))
            if !diagnostics.isEmpty {
                StandardStreams.writeError((DiagnosticRenderer(files: files).render(diagnostics) + "\n"))
            }
            guard policy != nil else {
                StandardStreams.writeError("gatehouse rules reload: \(directory) does not check; nothing sent\n")
                throw ExitCode(1)
            }
            let status = try ConfigOption.openState(config).readStatus()
            guard let status, Status.isRunning(status) else {
                throw ValidationError(
                    "gatehoused is not running with \(options.config); the rules load at its next start")
            }
            guard kill(status.pid, SIGHUP) == 0 else {
                throw ValidationError(
                    "cannot signal gatehoused (pid \(status.pid)): \(String(cString: strerror(errno)))")
            }
            print(
                "\(directory) checks; asked gatehoused (pid \(status.pid)) to load it — its log says \"rules reloaded\""
            )
        }
    }
}
