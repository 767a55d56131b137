import Foundation
import GateRules
import GatehouseAuth
import GatehousePluginKit
import GatehouseStore
import GatehouseTPM
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

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

/// The running gateway: state store, relay and transport plugins, as one `Service`.
public final class Gateway: Service {
    public let config: GatewayConfig
    public let relay: Relay
    let store: StateStore
    let site: PluginInstance
    let hub: PluginInstance
    let logger: Logger
    /// The live rule set (swapped atomically on reload), when `[gateway] rules_dir` is set.
    public let rules: PolicyHandle?
    /// The gateway's own hub identity (DPS TPM attestation), when
    /// `[provisioning] gateway_registration_id` is set.
    let gatewayIdentitySigner: GatewayIdentitySigner?

    /// Opens the state, loads and creates both transports. Nothing is started yet, so this is
    /// also the configuration check (`gatehoused --check`).
    public init(config: GatewayConfig, logger: Logger) throws(StartupError) {
        self.config = config
        self.logger = logger
        rules = try Self.loadRules(config)
        do {
            store = try StateStore(path: config.gateway.stateDB, durability: config.outbox.durability)
        } catch {
            // A database from a newer version will not become usable by restarting: 78 stops
            // systemd's restart loop (RestartPreventExitStatus=78).
            let exit = error.code == .newerSchema ? StartupError.configExit : StartupError.cantCreateExit
            throw StartupError("\(error)", exitCode: exit)
        }
        var signer: any DeviceSigner
        // The process's one TPM context: the leaves' signer and the gateway's own identity share it.
        var tpmContext: TPMContext?
        let registersItself = config.provisioning?.gatewayRegistrationID != nil
        if let tcti = config.identity.tpm {
            let context: TPMContext
            do {
                context = try TPMContext(tcti: tcti)
            } catch {
                throw StartupError(
                    "\(config.sourcePath): [identity] tpm = \"\(tcti)\": the TPM is not reachable: \(error)",
                    exitCode: StartupError.configExit)
            }
            tpmContext = context
            if registersItself, !FileManager.default.fileExists(atPath: config.identity.groupKeyBlob) {
                // The gateway's own identity only: leaf devices have no key to be signed with.
                logger.notice(
                    "no TPM-wrapped group key: only the gateway's own identity can reach the hub",
                    metadata: ["group_key_blob": "\(config.identity.groupKeyBlob)"])
                signer = NoSigner()
            } else {
                do {
                    signer = try TPMDeviceSigner(context: context, blobPath: config.identity.groupKeyBlob)
                } catch {
                    throw StartupError(
                        "\(config.sourcePath): [identity] tpm: \(error)", exitCode: StartupError.configExit)
                }
            }
        } else if let keyFile = config.identity.groupKeyFile {
            do {
                signer = try GroupKeySigner(keyFile: keyFile)
            } catch {
                throw StartupError(
                    "\(config.sourcePath): [identity] group_key_file: \(error)", exitCode: StartupError.configExit)
            }
        } else {
            signer = NoSigner()
        }
        if registersItself, let tpmContext {
            let own = GatewayIdentitySigner(context: tpmContext, leaves: signer)
            gatewayIdentitySigner = own
            signer = own
        } else {
            gatewayIdentitySigner = nil
        }
        do {
            relay = try Relay(
                store: store, policy: config.outbox, signer: signer, logger: logger,
                provisioning: config.provisioning.flatMap { $0.registersLeaves ? $0 : nil })
        } catch {
            throw StartupError("\(error)", exitCode: StartupError.cantCreateExit)
        }
        site = try Self.instantiate(config.site, role: .downstream, config: config, delegate: relay)
        hub = try Self.instantiate(config.hub, role: .upstream, config: config, delegate: relay)
        if let section = config.firewall {
            firewall = Mutex(try Self.instantiate(section, role: nil, config: config, delegate: relay))
        } else {
            firewall = Mutex(nil)
        }
    }

    /// The firewall plugin instance (replaced on reload), when `[firewall]` is configured.
    ///
    /// `Gateway` owns its lifecycle, in explicit calls: `run` starts it (apply); `reloadFirewall`
    /// starts a fresh instance and discards the replaced one without stopping it; only `shutdown`
    /// (SIGTERM, SIGINT) stops the current one, where `on_stop = "remove"` applies, then destroys
    /// it. Nothing happens when an instance is released (docs/firewall.md).
    let firewall: Mutex<PluginInstance?>

    /// Compiles the rule set; one that does not check stops the start (exit 78) with every
    /// diagnostic, as `gatehouse rules check` prints them.
    static func loadRules(_ config: GatewayConfig) throws(StartupError) -> PolicyHandle? {
        guard let directory = config.gateway.rulesDir else { return nil }
        let (policy, diagnostics, files) = Policy.compile(directory: directory)
        guard let policy else {
            let rendered = DiagnosticRenderer(files: files).render(diagnostics)
            throw StartupError(
                "\(config.sourcePath): [gateway] rules_dir: the rules in \(directory) do not check:\n\(rendered)",
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
                "\(config.sourcePath):\(section.sectionLine): [\(section.section)] plugin = \"\(section.plugin)\": \(error)",
                exitCode: StartupError.configExit)
        }
        do {
            return try PluginInstance(
                library: library, role: role, label: section.section, configJSON: section.pluginConfigJSON,
                delegate: delegate)
        } catch {
            var place = config.sourcePath
            if let key = error.configKey, let line = section.keyLines[key] {
                place += ":\(line): [\(section.section)] \(key)"
            } else {
                place += ":\(section.sectionLine): [\(section.section)]"
            }
            throw StartupError("\(place): \(error.message)", exitCode: StartupError.configExit)
        }
    }

    /// The verifier of callers' tokens, from `[auth]`; nil without that section.
    private let keys = Mutex<JWKSCache?>(nil)
    /// The JWKS sources were not read before the start (HTTPS only, keys from the disk cache).
    private let refreshAtStart = Mutex(false)

    /// Builds the token verifier from `[auth]` (reading the JWKS file, the disk cache, or both)
    /// and wires the command gate. Without `[auth]` or rules, every command is refused.
    public func prepareCommandGate() async throws(StartupError) {
        var verifier: TokenVerifier?
        if let auth = config.auth {
            var sources: [any JWKSSource] = []
            if let file = auth.jwksFile { sources.append(FileJWKSSource(path: file)) }
            do {
                if let url = auth.jwksURL, let parsed = URL(string: url) {
                    sources.append(try HTTPSJWKSSource(url: parsed))
                }
                var policy = JWKSCache.Policy()
                policy.refreshInterval = auth.jwksRefresh
                policy.maxStale = auth.jwksMaxStale
                let cache = try await JWKSCache(
                    sources: sources, cacheFile: auth.jwksCache, policy: policy, logger: logger)
                // Read the sources before the first command, so that a key removed from them is
                // refused at once. Only an HTTPS-only set with keys in the disk cache is read in the
                // background (`run()`), so an offline gateway does not wait out the fetch timeout.
                let warm = !(await cache.keyIDs.isEmpty)
                if auth.jwksFile != nil || !warm {
                    await cache.refresh()
                } else {
                    refreshAtStart.withLock { $0 = true }
                }
                var settings = TokenVerifier.Configuration(
                    audiences: Set(auth.audiences), tenants: Set(auth.tenants), issuers: Set(auth.issuers))
                settings.algorithms = Set(auth.algorithms.map(JWTAlgorithmName.init(rawValue:)))
                settings.clockSkew = auth.clockSkew
                settings.maxTokenBytes = auth.maxTokenBytes
                settings.acceptV1Issuer = auth.acceptV1Issuer
                settings.requiredClaims = Set(auth.requiredClaims)
                verifier = try await TokenVerifier(configuration: settings, keys: cache, logger: logger)
                keys.withLock { $0 = cache }
                let usable = await cache.keyIDs.count
                if usable == 0 {
                    logger.warning(
                        "no usable signing key (none read yet, the key set is empty, or the keys are older than jwks_max_stale): every command is refused until the JWKS can be read",
                        metadata: ["jwks": "\(sources.map(\.identifier).joined(separator: ", "))"])
                } else {
                    logger.info("token verification ready", metadata: ["keys": "\(usable)"])
                }
            } catch {
                throw StartupError("\(config.sourcePath): [auth]: \(error)", exitCode: StartupError.configExit)
            }
        } else {
            logger.notice("no [auth] section: every command is refused (callers cannot be verified)")
        }
        let gate = CommandGate(
            verifier: verifier, rules: rules, settings: config.auth, gateway: config.gateway, store: store,
            logger: logger)
        relay.commands.configure(gate: gate, site: site)
    }

    public func run() async throws {
        if !relay.commands.isConfigured { try await prepareCommandGate() }
        // The host's firewall first: render, check, apply, read back (the plugin logs the figures).
        if let firewall = firewall.withLock({ $0 }) {
            do {
                try firewall.start()
            } catch {
                logger.critical(
                    "cannot apply the firewall; the previous ruleset stays", metadata: ["error": "\(error)"])
                throw StartupError(
                    "\(config.sourcePath): [firewall]: \(error.message)", exitCode: StartupError.configExit)
            }
        }
        do {
            // The upstream side first, so that the first message ingested can leave at once.
            try hub.start()
            try relay.start(upstream: hub, ownIdentity: gatewayIdentitySigner?.deviceID)
            try site.start()
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            shutdown()
            throw error
        }
        if let rules {
            logger.info(
                "rules loaded",
                metadata: [
                    "dir": "\(config.gateway.rulesDir ?? "")", "command_rules": "\(rules.current.commandRuleCount)",
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
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [self] in
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    reload()
                    if let cache = keys.withLock({ $0 }) { await cache.refresh() }
                }
            }
            if let cache = keys.withLock({ $0 }) {
                let refreshFirst = refreshAtStart.withLock { $0 }
                group.addTask {
                    if refreshFirst { await cache.refresh() }
                    await cache.run()
                }
            }
            group.addTask { [self] in
                // Audit retention: once at start, then hourly.
                while !Task.isCancelled {
                    do {
                        let removed = try store.pruneAudit(config.gateway.auditRetention, nowMS: Relay.nowMS())
                        if removed > 0 { logger.info("audit log pruned", metadata: ["records": "\(removed)"]) }
                    } catch {
                        logger.error("cannot prune the audit log", metadata: ["error": "\(error)"])
                    }
                    try? await Task.sleep(for: .seconds(3600))
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        shutdown()
    }

    /// Stop order: no new input, let in-flight messages be acknowledged, close the hub side.
    func shutdown() {
        logger.info("stopping: draining in-flight messages", metadata: ["timeout": "\(config.gateway.drainTimeout)"])
        site.stop(drainMilliseconds: 0)
        relay.drain(timeout: config.gateway.drainTimeout)
        hub.stop(drainMilliseconds: 1000)
        site.destroy()
        hub.destroy()
        if let firewall = firewall.withLock({ $0 }) {
            firewall.stop(drainMilliseconds: 0)  // the daemon stops: keeps the rules unless on_stop = "remove"
            firewall.destroy()
        }
        relay.commands.auditLog.stop()
        logger.info("gatehoused stopped")
    }

    /// SIGHUP: re-read the configuration, the rules and the registry's removed devices (sent by
    /// `gatehouse devices remove`). What does not check changes nothing.
    func reload() {
        reloadRules()
        relay.applyRegistry()
        logger.info("reloading configuration", metadata: ["path": "\(config.sourcePath)"])
        do {
            let fresh = try GatewayConfig.load(path: config.sourcePath)
            relay.update(policy: fresh.outbox)
            if let level = Logger.Level(rawValue: fresh.gateway.logLevel) { LogfmtLogHandler.setLevel(level) }
            if fresh.site.pluginConfigJSON != config.site.pluginConfigJSON
                || fresh.hub.pluginConfigJSON != config.hub.pluginConfigJSON
                || fresh.gateway.stateDB != config.gateway.stateDB
            {
                logger.notice("changes to [site], [hub] or the state database take effect at the next start")
            }
            reloadFirewall(fresh)
            logger.info("configuration reloaded (outbox limits, log level, firewall)")
        } catch {
            logger.error("reload refused; the running configuration stays", metadata: ["error": "\(error)"])
        }
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
            let instance = try Self.instantiate(section, role: nil, config: fresh, delegate: relay)
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
        if result.accepted {
            logger.info(
                "rules reloaded",
                metadata: ["dir": "\(directory)", "command_rules": "\(rules.current.commandRuleCount)"])
        } else {
            logger.error(
                "rules reload refused; the running rules stay",
                metadata: ["dir": "\(directory)", "diagnostics": "\(result.rendered)"])
        }
    }
}
