import ArgumentParser
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehousePluginKit
import GatehouseStore
import GatehouseTPM

#if canImport(Glibc)
    import Glibc
#endif

/// gatehouse — the operator's and integrator's command line. Wiring only. Run by the `gatehouse`
/// executable (Sources/gatehouse/main.swift).
public struct GatehouseCLI: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "gatehouse",
        abstract: "Inspect and manage a gatehouse edge gateway.",
        version: GatehouseVersion.current,
        subcommands: [
            Status.self, Config.self, Devices.self, Site.self, Firewall.self, Rules.self, Archive.self, Audit.self,
            DeadLetters.self, TPM.self,
        ])

    public init() {}
}

struct ConfigOption: ParsableArguments {
    @Option(name: .shortAndLong, help: "The daemon's configuration file.")
    var config = "/etc/gatehouse/gatehouse.toml"

    /// The configuration, or a usage error naming the file, line and key.
    func loadConfig() throws -> GatewayConfig {
        do {
            return try GatewayConfig.load(path: config)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    /// The daemon's state database, read-only.
    static func openState(_ config: GatewayConfig) throws -> StateStore {
        do {
            return try StateStore(readingFrom: config.gateway.stateDB)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "One screen: a verdict and a summary first, then the devices that need attention (docs/operations.md).")

    @OptionGroup var options: ConfigOption
    @Flag(help: "Print JSON instead of text (every device, and the summary).") var json = false
    @Flag(help: "List every device (by default, past 20 devices, only those that need attention).") var all = false

    /// What `gatehouse status` concludes, first on its screen and in `--json` as `summary`.
    struct Summary: Codable {
        /// "ok", "attention" or "stopped".
        var health: String
        /// Why not "ok", most important first.
        var attention: [String]
        var devicesByLink: [String: Int]
        var devicesProvisioningFailed: Int
        var devicesRemoved: Int
        /// Per priority lane: messages waiting and the oldest one's age in seconds.
        var outboxLanes: [String: Lane]

        struct Lane: Codable {
            var messages: Int
            var oldestAgeSeconds: Int?
        }
    }

    /// Up to this many devices, the screen lists them all; past it, those needing attention.
    static let screenDevices = 20

    /// The outbox's oldest message may be this old before it needs attention.
    static let outboxAgeAttention: Int64 = 300

    static func needsAttention(_ device: DeviceRecord) -> Bool {
        !device.isRemoved && (device.linkState != "up" || device.provisioning.hasPrefix("failed"))
    }

    static func summarize(
        status: DaemonStatus?, devices: [DeviceRecord],
        lanes: [OutboxPriority: (messages: Int, oldestEnqueuedMS: Int64?)],
        deadLetters: DeadLetterTotals, firewall: Result<FirewallStatus, PluginError>?, ownDevice: String?, nowMS: Int64
    ) -> Summary {
        var attention: [String] = []
        let running = status.map(isRunning) ?? false
        var byLink: [String: Int] = ["up": 0, "connecting": 0, "down": 0]
        var failed = 0
        var removed = 0
        for device in devices where device.id != ownDevice {
            if device.isRemoved {
                removed += 1
                continue
            }
            byLink[device.linkState, default: 0] += 1
            if device.provisioning.hasPrefix("failed") { failed += 1 }
        }
        var outbox: [String: Summary.Lane] = [:]
        var oldest: Int64 = 0
        for priority in OutboxPriority.descending {
            let lane = lanes[priority] ?? (0, nil)
            let age = lane.oldestEnqueuedMS.map { max(0, (nowMS - $0) / 1000) }
            outbox["\(priority)"] = Summary.Lane(messages: lane.messages, oldestAgeSeconds: age.map(Int.init))
            oldest = max(oldest, age ?? 0)
        }
        if !running { attention.append("gatehoused is not running") }
        if let own = ownDevice, let link = devices.first(where: { $0.id == own })?.linkState, link != "up" {
            attention.append("the gateway's own identity is \(link)")
        }
        let notUp = byLink.filter { $0.key != "up" }.values.reduce(0, +)
        if notUp > 0 { attention.append("\(notUp) device(s) not connected upstream") }
        if failed > 0 { attention.append("\(failed) device(s) failed DPS registration") }
        if oldest >= outboxAgeAttention {
            attention.append("outbox backing up: oldest message waiting \(formatAge(oldest))")
        }
        if deadLetters.sinceCount > 0 { attention.append("\(deadLetters.sinceCount) dead letter(s) since the start") }
        switch firewall {
        case .some(.success(let value)) where !value.present || !value.matchesApplied:
            attention.append("firewall not as applied")
        case .some(.failure): attention.append("firewall status unreadable")
        default: break
        }
        return Summary(
            health: !running ? "stopped" : attention.isEmpty ? "ok" : "attention", attention: attention,
            devicesByLink: byLink, devicesProvisioningFailed: failed, devicesRemoved: removed, outboxLanes: outbox)
    }

    static func formatAge(_ seconds: Int64) -> String {
        seconds >= 3600
            ? "\(seconds / 3600)h\(seconds % 3600 / 60)m"
            : seconds >= 60 ? "\(seconds / 60)m\(seconds % 60)s" : "\(seconds)s"
    }

    func run() throws {
        let config = try options.loadConfig()
        let store = try ConfigOption.openState(config)
        let status = try store.readStatus()
        let devices = try store.devices()
        let gatewayIdentity = try store.gatewayIdentity()
        let lanes = try store.outboxLanes()
        // Counted from the table: what is kept now, and what of it since the daemon's start.
        let deadLetters = try store.deadLetterTotals(sinceMS: status?.startedMS ?? 0)
        // The firewall and its host settings, live (docs/firewall.md).
        let firewall = FirewallStatus.read(config)
        let summary = Self.summarize(
            status: status, devices: devices, lanes: lanes, deadLetters: deadLetters, firewall: firewall,
            ownDevice: gatewayIdentity?.deviceID, nowMS: Int64(Date().timeIntervalSince1970 * 1000))
        if json {
            struct Report: Codable {
                var summary: Summary
                var daemon: DaemonStatus?
                var running: Bool
                var gatewayIdentity: GatewayIdentityRecord?
                var deadLetters: DeadLetterTotals
                var devices: [DeviceRecord]
                var firewall: FirewallStatus?
                var firewallError: String?
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            var report = Report(
                summary: summary, daemon: status, running: status.map(Self.isRunning) ?? false,
                gatewayIdentity: gatewayIdentity, deadLetters: deadLetters, devices: devices)
            switch firewall {
            case .some(.success(let value)): report.firewall = value
            case .some(.failure(let error)): report.firewallError = error.message
            case nil: break
            }
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        print(
            "gatehouse: \(summary.health.uppercased())"
                + (summary.attention.isEmpty ? "" : " — " + summary.attention.joined(separator: "; ")))
        guard let status else {
            print("gatehoused has not run with \(config.gateway.stateDB) yet")
            return
        }
        let state = Self.isRunning(status) ? "running (pid \(status.pid))" : "not running"
        print(
            "gatehoused \(status.version): \(state), started \(Self.format(status.startedMS)), last heartbeat \(Self.format(status.heartbeatMS))"
        )
        let laneText = OutboxPriority.descending.map { priority -> String in
            let lane = summary.outboxLanes["\(priority)"]
            let age = lane?.oldestAgeSeconds.map { ", oldest \(Self.formatAge(Int64($0)))" } ?? ""
            return "\(priority) \(lane?.messages ?? 0)\(age)"
        }.joined(separator: "; ")
        print("outbox: \(status.outboxMessages) message(s), \(status.outboxBytes) bytes waiting (\(laneText))")
        print(
            "devices: \(summary.devicesByLink["up"] ?? 0) up, \(summary.devicesByLink["connecting"] ?? 0) connecting, \(summary.devicesByLink["down"] ?? 0) down; \(summary.devicesProvisioningFailed) DPS failed, \(summary.devicesRemoved) removed"
        )
        print(
            "since start: \(status.ingestedTotal) ingested, \(status.deliveredTotal) delivered, \(status.droppedTotal) dropped, \(deadLetters.sinceCount) dead-lettered, \(status.commandsRefusedTotal) command(s) refused"
        )
        if deadLetters.count > 0 {
            let reasons = deadLetters.byReason.sorted { $0.key < $1.key }
                .map { "\(ControlEscaping.escape($0.key)) \($0.value)" }.joined(separator: ", ")
            print(
                "dead letters: \(deadLetters.count) kept (\(reasons); \(deadLetters.bytes) bytes), newest \(Self.format(deadLetters.newestMS)) — gatehouse dead-letters list"
            )
        }
        if let identity = gatewayIdentity {
            let link = devices.first { $0.id == identity.deviceID }?.linkState ?? "-"
            print(
                "gateway identity: device \(identity.deviceID) on \(identity.assignedHub) (DPS registration \(identity.registrationID), \(identity.attestation.uppercased()) attestation, since \(Self.format(identity.registeredMS))), link \(link)"
            )
        }
        switch firewall {
        case .some(.success(let value)): value.lines.forEach { print($0) }
        case .some(.failure(let error)): print("firewall: cannot read its status: \(error.message)")
        case nil: break
        }
        // A screen holds every device of a small site; past that, only those needing attention.
        let every = all || devices.count <= Self.screenDevices
        let listed = every ? devices : devices.filter(Self.needsAttention)
        print("")
        if devices.isEmpty {
            print("(no devices seen yet)")
            return
        }
        print(
            every
                ? "devices (\(devices.count)):"
                : listed.isEmpty
                    ? "no device needs attention (\(devices.count) in all; --all lists them)"
                    : "devices that need attention (\(listed.count) of \(devices.count); --all lists every one):")
        guard !listed.isEmpty else { return }
        let header = ["DEVICE", "DPS", "LINK", "SINCE", "IN", "OUT", "REASON"]
        var rows = [header]
        for device in listed {
            rows.append([
                device.id, device.provisioning.isEmpty ? "-" : device.provisioning, device.linkState,
                Self.format(device.linkChangedMS), "\(device.messagesIn)", "\(device.messagesOut)", device.linkReason,
            ])
        }
        let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            print(
                zip(row, widths).map { $0.padded(to: $1) }.joined(separator: "  "))
        }
    }

    /// The daemon is running if its pid is alive and its heartbeat is recent.
    static func isRunning(_ status: DaemonStatus) -> Bool {
        guard status.stoppedMS == nil, kill(status.pid, 0) == 0 || errno == EPERM else { return false }
        return Int64(Date().timeIntervalSince1970 * 1000) - status.heartbeatMS < 10_000
    }

    static func format(_ ms: Int64) -> String {
        guard ms > 0 else { return "-" }
        return Date.ISO8601FormatStyle().format(Date(timeIntervalSince1970: Double(ms) / 1000))
    }
}

struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Check a configuration file (every key and value).")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            _ = try GatewayConfig.load(path: options.config)
            print("\(options.config): ok")
        } catch {
            StandardStreams.writeError("\(error)\n")
            throw ExitCode(StartupError.configExit)
        }
    }
}

struct Audit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the command gate's decisions, newest first, from the audit log.")

    @OptionGroup var options: ConfigOption
    @Option(help: "Only decisions about this device.") var device: String?
    @Option(help: "Only decisions of the last DURATION (e.g. 1h, 7d).") var since: String?
    @Option(help: "Only the decision with this id (the `decision` field of gatehoused's log lines).")
    var decision: String?
    @Option(help: "At most this many decisions.") var limit = 50
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() throws {
        let config = try options.loadConfig()
        var sinceMS: Int64 = 0
        if let since {
            guard let window = Units.duration(since) else {
                throw ValidationError("--since \(since): expected a duration such as 30m, 1h or 7d")
            }
            sinceMS = Int64(Date().timeIntervalSince1970 * 1000) - window.components.seconds * 1000
        }
        let store = try ConfigOption.openState(config)
        let records = try store.auditRecords(
            deviceID: device, decisionID: decision, sinceMS: sinceMS, limit: limit)
        // What callers chose (command names, reasons quoting them, …) is never printed raw:
        // control and format characters are escaped (`ControlEscaping`), in the JSON as JSON
        // escapes (parsers read back the original), in the table as visible `\u{1B}`.
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(ControlEscaping.escapeJSON(String(decoding: try encoder.encode(records), as: UTF8.self)))
            return
        }
        guard !records.isEmpty else {
            print("(no decisions recorded)")
            return
        }
        for record in records { print(Self.line(record)) }
    }

    /// One decision as one line of the table.
    static func line(_ record: AuditRecord) -> String {
        func shown(_ text: String, empty: String = "") -> String {
            text.isEmpty ? empty : ControlEscaping.escape(text)
        }
        let rules = record.rules.isEmpty ? "" : " by \(shown(record.rules))"
        let reason = record.reason.isEmpty ? "" : " — \(shown(record.reason))"
        let decision = record.decisionID.isEmpty ? "" : " decision=\(shown(record.decisionID))"
        return
            "\(Status.format(record.timeMS))  \(shown(record.effect.uppercased()))  \(shown(record.commandKind)) "
            + "\(shown(record.commandName, empty: "-")) → \(shown(record.deviceID))  "
            + "caller=\(shown(record.caller, empty: "?")) tenant=\(shown(record.tenant, empty: "?"))\(decision)\(rules)\(reason)"
    }
}

struct TPM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tpm", abstract: "The gateway's TPM.", subcommands: [ImportGroupKey.self, EndorsementKey.self])

    struct EndorsementKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "endorsement-key",
            abstract:
                "Print the TPM's endorsement key (what a DPS TPM enrollment asks for) and the default registration id.",
            discussion: """
                The EK public is base64 of its marshalled TPM2B_PUBLIC, as the Azure portal and `az iot dps \
                enrollment create --attestation-type tpm --endorsement-key` take it. The registration id \
                printed is the Azure SDKs' default for a TPM (lowercase base32 of SHA-256 of the EK public); \
                any valid id works if the enrollment and [provisioning] gateway_registration_id agree. \
                Run it while gatehoused is stopped when the TPM is a software TPM (it serves one client).
                """)

        @OptionGroup var options: ConfigOption
        @Flag(help: "Print only the base64 EK public.") var keyOnly = false

        func run() throws {
            let config = try options.loadConfig()
            guard let tcti = config.identity.tpm else {
                throw ValidationError("\(options.config): [identity] tpm is not set; name the TPM there first")
            }
            let ek: Data
            do {
                let context = try TPMContext(tcti: tcti)
                defer { context.close() }
                ek = try context.endorsementKeyPublic()
            } catch {
                StandardStreams.writeError("gatehouse tpm endorsement-key: \(error)\n")
                throw ExitCode(1)
            }
            if keyOnly {
                print(ek.base64EncodedString())
                return
            }
            print("endorsement key: \(ek.base64EncodedString())")
            print("registration id: \(TPMRegistrationID.default(endorsementKey: ek))")
        }

    }

    struct ImportGroupKey: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-group-key",
            abstract: "Read an enrollment-group key (base64) from standard input, import it into the TPM named by "
                + "[identity] tpm, and keep only the TPM-wrapped blob at [identity] group_key_blob.",
            discussion: "Run it while gatehoused is stopped: a software TPM serves one client at a time.")

        @OptionGroup var options: ConfigOption

        func run() throws {
            let config = try options.loadConfig()
            guard let tcti = config.identity.tpm else {
                throw ValidationError("\(options.config): [identity] tpm is not set; name the TPM there first")
            }
            let input = String(decoding: StandardStreams.readInput(), as: UTF8.self)
            do {
                try GroupKeyImport.run(base64Key: input, tcti: tcti, blobPath: config.identity.groupKeyBlob)
            } catch {
                StandardStreams.writeError("gatehouse tpm import-group-key: \(error)\n")
                throw ExitCode(1)
            }
            print("imported into the TPM; the wrapped key is at \(config.identity.groupKeyBlob) (no plaintext kept)")
        }
    }
}
