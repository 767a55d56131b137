import FoundationEssentials
import GateRules
import GatehouseAuth
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import GatehouseTPM
import Logging
import ServiceLifecycle
import StrictJSON
import Synchronization
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

/// Why the gateway could not start, with the sysexits code the daemon exits with, so that
/// systemd's `RestartPreventExitStatus=78` stops a restart loop on a bad configuration.
public struct StartupError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var exitCode: Int32

    public static let configExit: Int32 = 78  // EX_CONFIG
    public static let cantCreateExit: Int32 = 73  // EX_CANTCREAT
    public static let softwareExit: Int32 = 70  // EX_SOFTWARE

    public init(_ message: String, exitCode: Int32) {
        self.message = message
        self.exitCode = exitCode
    }

    public var description: String { message }
}

/// The wiring root: opens the state, makes the signers, the three owners of the core
/// (`HostRouter`) and the plugin instances, starts them in order, and lists the services that
/// run and stop them (docs/architecture.md, "The core" and "Services").
public final class Gateway: Sendable {
    public let config: GatewayConfig
    /// Where every plugin callback lands: telemetry, identities, commands.
    public let router: HostRouter
    let store: StateStore
    let site: PluginInstance
    let hub: PluginInstance
    let logger: Logger
    /// The live rule set (swapped atomically on reload), when `[gateway] rules_dir` is set.
    public let rules: PolicyHandle?
    /// The gateway's own hub identity (DPS TPM attestation), when
    /// `[provisioning] gateway_registration_id` is set.
    let gatewayIdentitySigner: GatewayIdentitySigner?
    let heartbeat: StatusHeartbeat
    /// `[dead_letters]`: what "dead-letter pruning" keeps; SIGHUP applies a changed one.
    let deadLetterRetention: Mutex<DeadLetterRetention>
    /// The gateway's Prometheus metrics (docs/operations.md), served when `[metrics]` is set.
    public let metrics = GatewayMetrics()

    /// What the state database would undergo at a real start (`checkOnly`), read without
    /// writing to it; nil for a real start, which migrates it.
    public let schema: StateStore.SchemaReport?
    /// `checkOnly`: the throwaway database the check's router runs on (`discardCheckState`).
    let scratchDirectory: String?

    /// Opens the state, loads and creates both transports. Nothing is started yet.
    ///
    /// With `checkOnly` (`gatehoused --check`) this is the configuration check, and it has no side
    /// effect on the state: the state database is only read (a newer version's is refused, as at
    /// a real start; the migrations a start would apply are in `schema`), and the router works on
    /// a throwaway database in a temporary directory. Only a real start creates or migrates the
    /// state database, so a check that fails later (TPM, plugins, JWKS) has changed nothing and
    /// the previous version still runs on it (docs/packaging.md, "Upgrades").
    public init(config: GatewayConfig, logger: Logger, checkOnly: Bool = false) throws(StartupError) {
        self.config = config
        self.logger = logger
        deadLetterRetention = Mutex(config.deadLetters)
        rules = try Self.loadRules(config)
        do {
            if checkOnly {
                schema = try StateStore.inspect(path: config.gateway.stateDB)
                let directory = FileManager.default.temporaryDirectory
                    .appendingPathComponent("gatehoused-check-\(getpid())-\(UInt64.random(in: 0...UInt64.max))").path
                scratchDirectory = directory
                store = try StateStore(path: directory + "/state.db", durability: .normal)
            } else {
                schema = nil
                scratchDirectory = nil
                store = try StateStore(path: config.gateway.stateDB, durability: config.outbox.durability)
            }
        } catch {
            // A database from a newer version will not become usable by restarting: 78 stops
            // systemd's restart loop (RestartPreventExitStatus=78).
            let exit = error.code == .newerSchema ? StartupError.configExit : StartupError.cantCreateExit
            throw StartupError("\(error)", exitCode: exit)
        }
        let signers = try SignerSetup(config: config, logger: logger)
        gatewayIdentitySigner = signers.gatewayIdentity
        do {
            router = try HostRouter(
                store: store, policy: config.outbox, signer: signers.signer, logger: logger,
                provisioning: config.provisioning.flatMap { $0.registersLeaves ? $0 : nil }, metrics: metrics)
        } catch {
            throw StartupError("\(error)", exitCode: StartupError.cantCreateExit)
        }
        heartbeat = StatusHeartbeat(
            store: store, telemetry: router.telemetry, commands: router.commands, logger: logger)
        // Telemetry rules apply on ingest from the first message on.
        router.telemetry.configure(rules: rules, gateway: config.gateway, archive: config.archive)
        site = try Self.instantiate(config.site, role: .downstream, config: config, delegate: router)
        hub = try Self.instantiate(config.hub, role: .upstream, config: config, delegate: router)
        if let section = config.firewall {
            firewall = Mutex(try Self.instantiate(section, role: nil, config: config, delegate: router))
        } else {
            firewall = Mutex(nil)
        }
        metrics.configure(
            siteTransport: config.site.plugin, hubTransport: config.hub.plugin,
            sources: GatewayMetrics.Sources(
                telemetry: router.telemetry, store: store, rules: rulesSummary, firewall: firewallReader))
    }

    /// What the metrics and the twin report of the live rule set; nil without rules.
    var rulesSummary: (@Sendable () -> GatewayMetrics.RulesSummary?)? {
        guard let handle = rules else { return nil }
        return { RuleSetIdentity(handle).summary }
    }

    /// What the metrics and the twin report of the firewall; nil without `[firewall]`.
    var firewallReader: (@Sendable () -> GatewayMetrics.FirewallCounters?)? {
        guard config.firewall != nil else { return nil }
        return { [weak self] in self?.firewallCounters() }
    }

    /// The firewall plugin's counters by reason (its `status` action), read under the lock that
    /// guards the instance, so a reload's swap and discard never meet a status call.
    func firewallCounters() -> GatewayMetrics.FirewallCounters? {
        firewall.withLock { instance -> GatewayMetrics.FirewallCounters? in
            guard let instance, case .success(let text) = instance.control(.status),
                case .object(let root)? = try? JSONValue(parsing: text)
            else { return nil }
            // The plugin's named counters are `drop_<reason>` and `accept_<rule>`: the drops
            // become the metric's `reason` label (`xmas`, `syn_flood`, …, docs/operations.md),
            // short and fixed in number; what was accepted is not a drop.
            var drops: [String: (packets: Int, bytes: Int)] = [:]
            for (name, counter) in root["counters"]?.objectValue ?? [:] where name.hasPrefix("drop_") {
                drops[String(name.dropFirst("drop_".count)), default: (0, 0)] = (
                    counter["packets"]?.intValue ?? 0, counter["bytes"]?.intValue ?? 0
                )
            }
            let applied = (root["present"]?.boolValue ?? false) && (root["matches_applied"]?.boolValue ?? false)
            return GatewayMetrics.FirewallCounters(dropsByReason: drops, applied: applied)
        }
    }

    /// Removes the check's throwaway database (`checkOnly`); nothing for a real start.
    public func discardCheckState() {
        guard let scratchDirectory else { return }
        try? FileManager.default.removeItem(atPath: scratchDirectory)
    }

    /// The firewall plugin instance (replaced on reload), when `[firewall]` is configured.
    ///
    /// `Gateway` owns its lifecycle, in explicit calls: `start` starts it (apply); `reloadFirewall`
    /// starts a fresh instance and discards the replaced one without stopping it; only the
    /// "firewall" shutdown step (SIGTERM, SIGINT) stops the current one, where
    /// `on_stop = "remove"` applies, then destroys it. Nothing happens when an instance is
    /// released (docs/firewall.md).
    let firewall: Mutex<PluginInstance?>

    /// Compiles the rule set; one that does not check stops the start (exit 78) with every
    /// diagnostic, as `gatehouse rules check` prints them. Telemetry routes are checked against
    /// the destinations the daemon knows (`upstream`, `archive`); reloads keep that check.
    static func loadRules(_ config: GatewayConfig) throws(StartupError) -> PolicyHandle? {
        guard let directory = config.gateway.rulesDir else { return nil }
        let (policy, diagnostics, files) = Policy.compile(
            directory: directory, options: CheckOptions(destinations: TelemetryDestination.all))
        guard let policy else {
            let rendered = DiagnosticRenderer(files: files).render(diagnostics)
            throw StartupError(
                "\(config.place("gateway", "rules_dir")): [gateway] rules_dir: the rules in \(directory) do not check:\n\(rendered)",
                exitCode: StartupError.configExit)
        }
        return PolicyHandle(policy)
    }

    /// Loads and creates a plugin instance: a transport in `role`, or the firewall (`role` nil).
    public static func instantiate(
        _ section: GatewayConfig.TransportSection, role: TransportRole?, config: GatewayConfig,
        delegate: any PluginHostDelegate
    ) throws(StartupError) -> PluginInstance {
        let path = PluginLibrary.resolve(name: section.plugin, in: config.gateway.pluginDir)
        let library: PluginLibrary
        do {
            library = try PluginLibrary(path: path)
            if let role { try library.requireTransport(role: role) } else { try library.requireFirewall() }
        } catch {
            throw StartupError(
                "\(section.keyPlaces["plugin"] ?? section.sectionPlace): [\(section.section)] plugin = \"\(section.plugin)\": \(error)",
                exitCode: StartupError.configExit)
        }
        do {
            return try PluginInstance(
                library: library, role: role, label: section.section, configJSON: section.pluginConfigJSON,
                delegate: delegate)
        } catch {
            let place: String
            if let key = error.configKey, let keyPlace = section.keyPlaces[key] {
                place = "\(keyPlace): [\(section.section)] \(key)"
            } else {
                place = "\(section.sectionPlace): [\(section.section)]"
            }
            throw StartupError("\(place): \(error.message)", exitCode: StartupError.configExit)
        }
    }

    /// The verifier of callers' tokens, from `[auth]`; nil without that section.
    private let verification = Mutex<TokenVerifierSetup?>(nil)

    /// Builds the token verifier from `[auth]` (reading the JWKS file, the disk cache, or both)
    /// and wires the command gate. Without `[auth]` or rules, every command is refused.
    public func prepareCommandGate() async throws(StartupError) {
        var verifier: TokenVerifier?
        if let auth = config.auth {
            let setup = try await TokenVerifierSetup(auth: auth, config: config, logger: logger)
            verification.withLock { $0 = setup }
            verifier = setup.verifier
        } else {
            logger.notice("no [auth] section: every command is refused (callers cannot be verified)")
        }
        let gate = CommandGate(
            verifier: verifier, rules: rules, settings: config.auth, gateway: config.gateway, store: store,
            logger: logger)
        router.commands.configure(gate: gate, site: site)
    }

    /// Applies the firewall, then starts the hub side, the relay and the identities, and the site
    /// side last, so that the first message ingested can leave at once. On failure what started
    /// is stopped again.
    public func start() async throws(StartupError) {
        if !router.commands.isConfigured { try await prepareCommandGate() }
        if config.metrics != nil { metrics.bootstrapMetricsSystem() }
        // The host's firewall first: render, check, apply, read back (the plugin logs the figures).
        if let firewall = firewall.withLock({ $0 }) {
            do {
                try firewall.start()
            } catch {
                logger.critical(
                    "cannot apply the firewall; the previous ruleset stays", metadata: ["error": "\(error)"])
                throw StartupError(
                    "\(config.place("firewall")): [firewall]: \(error.message)", exitCode: StartupError.configExit)
            }
        }
        var relayStarted = false
        do {
            try hub.start()
            relayStarted = true  // the dispatcher runs from here on, even if what follows fails
            try router.start(upstream: hub, ownIdentity: gatewayIdentitySigner?.deviceID)
            try site.start()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            stopTransports(relayStarted: relayStarted)
            throw StartupError("cannot start: \(error)", exitCode: StartupError.softwareExit)
        }
        if let rules {
            logger.info(
                "rules loaded",
                metadata: [
                    "dir": "\(config.gateway.rulesDir ?? "")", "command_rules": "\(rules.current.commandRuleCount)",
                    "telemetry_rules": "\(rules.current.telemetryRuleCount)",
                ])
        } else {
            logger.notice("no rules_dir configured: every command is refused")
        }
        logger.info(
            "gatehoused started",
            metadata: [
                "version": "\(GatehouseVersion.current)", "site_plugin": "\(site.library.name)",
                "hub_plugin": "\(hub.library.name)", "state_db": "\(config.gateway.stateDB)",
            ])
    }

    /// Every long-running part of the started gateway, as services for one `ServiceGroup`.
    /// The group shuts services down in reverse order, one after the other, so the list reads
    /// bottom-up as the stop order: housekeeping ends; the site side stops taking input; the
    /// relay lets in-flight messages be acknowledged; the links are recorded as down; the hub
    /// side closes; the last status is written; the firewall stops (`on_stop`); the audit
    /// writer ends. `hangups`: SIGHUP, trapped before `start` (a reload).
    public func services<C: Clock>(clock: C, hangups: UnixSignalsSequence) -> [any Service]
    where C.Duration == Duration {
        let router = router
        let store = store
        let logger = logger
        let retention = config.gateway.auditRetention
        var services: [any Service] = [
            ShutdownStep("audit writer") { router.commands.auditLog.stop() },
            ShutdownStep("firewall") { [self] in
                if let firewall = firewall.withLock({ $0 }) {
                    firewall.stop(drainMilliseconds: 0)  // keeps the rules unless on_stop = "remove"
                    firewall.destroy()
                }
            },
            ShutdownStep("status") { [heartbeat] in heartbeat.beat(stopped: true) },
            ShutdownStep("hub transport") { [hub] in
                hub.stop(drainMilliseconds: 1000)
                hub.destroy()
            },
            ShutdownStep("link states") { router.identities.stop() },
            ShutdownStep("relay") { [config, logger] in
                logger.info(
                    "stopping: draining in-flight messages", metadata: ["timeout": "\(config.gateway.drainTimeout)"])
                router.telemetry.drain(timeout: config.gateway.drainTimeout)
            },
            ShutdownStep("site transport") { [site] in
                site.stop(drainMilliseconds: 0)
                site.destroy()
            },
            PeriodicService("outbox expiry", every: .seconds(1), clock: clock) { router.telemetry.requestExpiry() },
            PeriodicService("status heartbeat", every: .seconds(1), clock: clock, atStart: true) { [heartbeat] in
                heartbeat.beat()
            },
            PeriodicService("archive pruning", every: .seconds(30), clock: clock, atStart: true) {
                router.telemetry.pruneArchive()
            },
            PeriodicService("device tags for telemetry rules", every: .seconds(10), clock: clock) {
                router.telemetry.refreshDeviceFacts()
            },
            PeriodicService("audit pruning", every: .seconds(3600), clock: clock, atStart: true) {
                do {
                    let removed = try store.pruneAudit(retention, nowMS: TelemetryRelay.nowMS())
                    if removed > 0 { logger.info("audit log pruned", metadata: ["records": "\(removed)"]) }
                } catch {
                    logger.error("cannot prune the audit log", metadata: ["error": "\(error)"])
                }
            },
            PeriodicService("dead-letter pruning", every: .seconds(60), clock: clock, atStart: true) { [self] in
                let retention = deadLetterRetention.withLock { $0 }
                do {
                    let removed = try store.pruneDeadLetters(retention, nowMS: TelemetryRelay.nowMS())
                    if removed > 0 {
                        logger.info(
                            "dead letters pruned ([dead_letters] max_bytes, max_age)",
                            metadata: ["dead_letters": "\(removed)"])
                    }
                } catch {
                    logger.error("cannot prune the dead letters", metadata: ["error": "\(error)"])
                }
            },
            SignalService(hangups) { [self] in await reload() },
        ]
        if let settings = config.metrics {
            services.append(MetricsEndpoint(metrics: metrics, settings: settings, logger: logger))
        }
        if config.twin.report || config.twin.healthTelemetry != nil, let ownID = gatewayIdentitySigner?.deviceID {
            let twin = GatewayTwin(
                deviceID: ownID, hub: hub, store: store, telemetry: router.telemetry, metrics: metrics,
                rules: rulesSummary, firewall: firewallReader, firewallConfigured: config.firewall != nil,
                settings: config.twin, logger: logger)
            services.append(PeriodicService("gateway twin", every: .seconds(1), clock: clock) { twin.tick() })
        }
        // Last in the list, so the first to stop: systemd hears STOPPING=1 before anything else.
        // The outbox is open and the command gate configured before `services` is called.
        services.append(
            SystemdService(
                notifier: SystemdNotifier(), liveness: metrics.liveness,
                siteLinkUp: { [metrics] in metrics.isSiteLinkUp },
                logger: logger))
        if let setup = verification.withLock({ $0 }) {
            let first = Mutex(setup.refreshFirst)
            services.append(
                PeriodicService("jwks refresh", every: .seconds(60), clock: clock, atStart: true) {
                    if first.withLock({ value in
                        defer { value = false }; return value
                    }) {
                        await setup.keys.refresh()
                    } else {
                        await setup.keys.refreshIfDue()
                    }
                })
        }
        return services
    }

    /// Stops and destroys both transports (a start that failed half-way).
    private func stopTransports(relayStarted: Bool) {
        site.stop(drainMilliseconds: 0)
        if relayStarted { router.drain(timeout: .zero) }
        hub.stop(drainMilliseconds: 0)
        site.destroy()
        hub.destroy()
    }

    /// SIGHUP: re-read the configuration, the rules and the registry's removed devices (sent by
    /// `gatehouse devices remove`). What does not check changes nothing.
    func reload() async {
        reloadRules()
        router.applyRegistry()
        router.telemetry.refreshDeviceFacts()
        logger.info("reloading configuration", metadata: ["path": "\(config.sourcePath)"])
        do {
            let fresh = try GatewayConfig.load(path: config.sourcePath)
            router.telemetry.update(policy: fresh.outbox)
            router.telemetry.update(archive: fresh.archive)
            deadLetterRetention.withLock { $0 = fresh.deadLetters }
            if let level = Logger.Level(rawValue: fresh.gateway.logLevel) { LogfmtLogHandler.setLevel(level) }
            if fresh.site.pluginConfigJSON != config.site.pluginConfigJSON
                || fresh.hub.pluginConfigJSON != config.hub.pluginConfigJSON
                || fresh.gateway.stateDB != config.gateway.stateDB
            {
                logger.notice("changes to [site], [hub] or the state database take effect at the next start")
            }
            reloadFirewall(fresh)
            logger.info("configuration reloaded (outbox limits, dead-letter retention, log level, firewall)")
        } catch {
            logger.error("reload refused; the running configuration stays", metadata: ["error": "\(error)"])
        }
        // A key revoked at the identity provider is refused from this moment on.
        if let keys = verification.withLock({ $0?.keys }) { await keys.refresh() }
    }

    /// Applies the reloaded `[firewall]` with a fresh plugin instance; if it does not apply, the
    /// running ruleset stays (the plugin changes nothing on failure) and the error is logged.
    /// The replaced instance is discarded, not stopped: its stop would undo what the fresh one
    /// applied when `on_stop = "remove"`.
    func reloadFirewall(_ fresh: GatewayConfig) {
        guard let section = fresh.firewall else {
            if firewall.withLock({ $0 }) != nil {
                logger.notice(
                    "[firewall] was removed from the configuration; the applied rules stay until the next start")
            }
            return
        }
        do {
            let instance = try Self.instantiate(section, role: nil, config: fresh, delegate: router)
            do {
                try instance.start()  // apply; the plugin logs the figures
            } catch {
                instance.discard()
                logger.error("firewall reload refused; the running ruleset stays", metadata: ["error": "\(error)"])
                return
            }
            let replaced = firewall.withLock { current in
                let replaced = current
                current = instance
                return replaced
            }
            replaced?.discard()
        } catch {
            logger.error("firewall reload refused; the running ruleset stays", metadata: ["error": "\(error)"])
        }
    }

    /// Compiles the rule directory off the hot path and swaps it in atomically; a rule set that
    /// does not check is refused, logged with its diagnostics, and the running one stays.
    func reloadRules() {
        guard let rules, let directory = config.gateway.rulesDir else { return }
        let result = rules.reload(directory: directory)
        metrics.rulesReload(accepted: result.accepted)
        if result.accepted {
            logger.info(
                "rules reloaded",
                metadata: [
                    "dir": "\(directory)", "command_rules": "\(rules.current.commandRuleCount)",
                    "telemetry_rules": "\(rules.current.telemetryRuleCount)",
                ])
        } else {
            logger.error(
                "rules reload refused; the running rules stay",
                metadata: ["dir": "\(directory)", "diagnostics": "\(result.rendered)"])
        }
    }
}
