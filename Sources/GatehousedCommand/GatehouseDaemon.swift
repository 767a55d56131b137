import ArgumentParser
import CMalloc
import CProcess
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehouseStore
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// gatehoused — the gateway daemon. Wiring only: the logic lives in GatehouseCore. Run by the
/// `gatehoused` executable, and by the package's one binary when it is called `gatehoused`
/// (Sources/gatehouse/main.swift).
public struct GatehouseDaemon: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "gatehoused",
        abstract: "The gatehouse edge gateway daemon.",
        version: GatehouseVersion.current)

    @Option(name: .shortAndLong, help: "The configuration file.")
    var config = "/etc/gatehouse/gatehouse.toml"

    @Flag(help: "Check the configuration and the plugins it names, then exit (0 = good, 78 = bad).")
    var check = false

    public init() {}

    /// Capabilities follow the configuration: the unit grants CAP_NET_ADMIN for the firewall
    /// plugin only, so without [firewall] gatehoused gives every capability up, for good. Linux
    /// keeps capabilities per thread and a new thread inherits its creator's, so this runs first,
    /// on the main thread, before any other thread exists: every thread after it has none. A
    /// command line or configuration that does not parse is left to `run()` to report. Adding
    /// [firewall] later takes a restart.
    static func giveUpCapabilities(arguments: [String]) {
        guard let command = try? Self.parse(arguments),
            let config = try? GatewayConfig.load(path: command.config), config.firewall == nil,
            gh_has_capabilities() != 0
        else { return }
        if gh_drop_all_capabilities() != 0 {
            let reason = String(cString: strerror(errno))
            StandardStreams.writeError(
                "gatehoused: no [firewall], but its capabilities cannot be given up: \(reason)\n")
            Glibc.exit(StartupError.softwareExit)
        }
    }

    /// How many of the process's threads hold a permitted capability (/proc/self/task).
    static func threadsHoldingCapabilities() -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.filter { task in
            guard let status = try? String(contentsOfFile: "/proc/self/task/\(task)/status", encoding: .utf8)
            else { return false }
            let line = status.split(separator: "\n").first { $0.hasPrefix("CapPrm:") } ?? ""
            return !line.hasSuffix("0000000000000000")
        }.count
    }

    /// Parses the command line and runs the daemon: the executables' entry point. (At the top
    /// level of a main.swift, `await GatehouseDaemon.main()` resolves to ParsableCommand's
    /// synchronous `main()`, which cannot run an async command; here the async one is chosen.)
    /// On the main actor, so that `giveUpCapabilities` runs on the main thread, before `main()`
    /// starts any other thread.
    @MainActor
    public static func runMain() async {
        giveUpCapabilities(arguments: Array(CommandLine.arguments.dropFirst()))
        await main()
    }

    public func run() async throws {
        Self.tuneProcess()
        LoggingSystem.bootstrap { LogfmtLogHandler(label: $0) }
        var logger = Logger(label: "gatehoused")
        let loaded: GatewayConfig
        do {
            loaded = try GatewayConfig.load(path: config)
        } catch {
            logger.critical("bad configuration", metadata: ["error": "\(error)"])
            printError("gatehoused: \(error)")
            throw ExitCode(StartupError.configExit)
        }
        if let level = Logger.Level(rawValue: loaded.gateway.logLevel) { LogfmtLogHandler.setLevel(level) }
        logger[metadataKey: "pid"] = "\(getpid())"
        // Capabilities follow the configuration (docs/packaging.md, "Capabilities"): without
        // [firewall], `giveUpCapabilities` gave them all up before the first thread started.
        if loaded.firewall == nil {
            guard Self.threadsHoldingCapabilities() == 0 else {
                logger.critical("capabilities held without [firewall]")
                printError(
                    "gatehoused: no [firewall], but some of its threads hold capabilities (was it started "
                        + "through GatehouseDaemon.runMain()?)")
                throw ExitCode(StartupError.softwareExit)
            }
            logger.info("no [firewall]: no capabilities held")
        }

        let gateway: Gateway
        do {
            gateway = try Gateway(config: loaded, logger: logger, checkOnly: check)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            printError("gatehoused: \(error)")
            throw ExitCode(error.exitCode)
        }
        do {
            try await gateway.prepareCommandGate()
        } catch {
            gateway.discardCheckState()
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            printError("gatehoused: \(error)")
            throw ExitCode(error.exitCode)
        }
        if check {
            gateway.discardCheckState()
            let files = loaded.origins.files.joined(separator: ", ")
            print("gatehoused: the configuration checks (\(files)); plugins load")
            if let schema = gateway.schema {
                print("gatehoused: \(Self.describe(schema, path: loaded.gateway.stateDB))")
            }
            return
        }
        do {
            try await gateway.provisionOwnIdentity()
        } catch {
            logger.critical("cannot establish the gateway's own identity", metadata: ["error": "\(error)"])
            printError("gatehoused: \(error)")
            throw ExitCode(error.exitCode)
        }
        // SIGHUP (reload) is trapped before anything starts, so one sent as soon as the daemon
        // says it started is handled, not fatal.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        do {
            try await gateway.start()
        } catch {
            printError("gatehoused: \(error)")
            throw ExitCode(error.exitCode)
        }
        let clock = ContinuousClock()
        var services = gateway.services(clock: clock, hangups: hangups)
        // Give freed heap back to the kernel now and then (TLS handshakes of many identities
        // leave megabytes of free but resident heap behind).
        services.append(PeriodicService("malloc trim", every: .seconds(30), clock: clock) { _ = gh_malloc_trim() })
        // Any service that ends on its own (or fails) stops the others in order, as SIGTERM does.
        let group = ServiceGroup(
            configuration: .init(
                services: services.map {
                    .init(
                        service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                        failureTerminationBehavior: .gracefullyShutdownGroup)
                },
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("stopped on an error", metadata: ["error": "\(error)"])
            throw ExitCode(StartupError.softwareExit)
        }
        logger.info("gatehoused stopped")
    }

    /// Process-wide settings, before any thread starts: two malloc arenas (see CMalloc), and the
    /// open-file limit raised to its hard maximum, since every upstream device identity is a socket.
    static func tuneProcess() {
        _ = gh_malloc_limit_arenas()
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        if getrlimit(resource, &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
        }
    }

    /// What the check found the state database to need, in one line.
    static func describe(_ schema: StateStore.SchemaReport, path: String) -> String {
        if !schema.exists {
            return "state database \(path): none yet; the first start creates it"
        }
        if schema.pending.isEmpty {
            return "state database \(path): up to date (\(schema.applied) migrations); nothing to migrate"
        }
        return "state database \(path): the next start migrates it: \(schema.pending.joined(separator: ", ")) "
            + "(not applied by --check)"
    }

    private func printError(_ text: String) {
        StandardStreams.writeError((text + "\n"))
    }
}
