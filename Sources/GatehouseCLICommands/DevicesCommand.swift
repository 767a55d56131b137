import ArgumentParser
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehouseSiteBroker
import GatehouseStore
import StrictJSON

#if canImport(Glibc)
    import Glibc
#endif

/// `gatehouse devices …` and `gatehouse site init`: leaf devices' credentials on the site broker
/// (mosquitto's dynamic security plugin) and their state in the registry. Wiring only; the work
/// is in GatehouseSiteBroker (the plugin's protocol, the ACL plan) and GatehouseStore.
struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devices",
        abstract: "Leaf devices: site-broker credentials, provisioning, links.",
        discussion: """
            Exit status: 0 ok, 65 invalid device id, 67 unknown device, 69 site broker unreachable, \
            73 device already exists, 74 state database not writable, 76 the broker refused a command, \
            77 admin login refused, 78 configuration ([site_broker], the admin password file).
            """,
        subcommands: [List.self, Add.self, Remove.self, DeviceTag.self], defaultSubcommand: List.self)
}

/// Exit statuses (sysexits.h) of `gatehouse devices` and `gatehouse site`.
enum DeviceExit {
    static let dataError: Int32 = 65  // EX_DATAERR: invalid device id
    static let noUser: Int32 = 67  // EX_NOUSER: unknown device
    static let unavailable: Int32 = 69  // EX_UNAVAILABLE: broker unreachable
    static let cantCreate: Int32 = 73  // EX_CANTCREAT: device already exists
    static let ioError: Int32 = 74  // EX_IOERR: state database
    static let protocolError: Int32 = 76  // EX_PROTOCOL: the broker refused a command
    static let noPermission: Int32 = 77  // EX_NOPERM: admin login refused
    static let config: Int32 = 78  // EX_CONFIG

    static func code(_ error: SiteBrokerError) -> Int32 {
        switch error.code {
        case .unreachable, .timeout: unavailable
        case .authRefused, .notAdmin: noPermission
        case .alreadyExists: cantCreate
        case .notFound: noUser
        case .invalidDeviceID: dataError
        case .credentialFile: config
        default: protocolError
        }
    }
}

/// Prints `gatehouse <command>: message` on standard error and exits with `code`.
func fail(_ command: String, _ message: String, _ code: Int32) -> ExitCode {
    StandardStreams.writeError("gatehouse \(command): \(message)\n")
    return ExitCode(code)
}

extension ConfigOption {
    /// `[site_broker]`, or exit 78 naming what to add.
    func siteBroker(_ config: GatewayConfig, command: String) throws -> GatewayConfig.SiteBroker {
        guard let settings = config.siteBroker else {
            throw fail(
                command,
                "\(self.config): no [site_broker] section; add admin_username and admin_password_file "
                    + "(see docs/site-broker.md, \"Site-broker credentials\")", DeviceExit.config)
        }
        return settings
    }

    /// The state database for writing (created if the daemon has not run yet). Run as root, new
    /// files get the owner of the database's folder, so the daemon can still open them.
    static func openStateForWriting(_ config: GatewayConfig, command: String) throws -> StateStore {
        let path = config.gateway.stateDB
        do {
            let store = try StateStore(path: path, durability: .full)
            matchOwnership(of: [path, path + "-wal", path + "-shm"], to: PathText.directory(of: path))
            return store
        } catch {
            throw fail(command, "\(error)", DeviceExit.ioError)
        }
    }

    static func matchOwnership(of paths: [String], to directory: String) {
        var folder = stat()
        guard geteuid() == 0, stat(directory.isEmpty ? "." : directory, &folder) == 0, folder.st_uid != 0 else {
            return
        }
        for path in paths {
            var info = stat()
            if stat(path, &info) == 0, info.st_uid == 0 { _ = chown(path, folder.st_uid, folder.st_gid) }
        }
    }
}

/// Asks a running gatehoused to re-read the registry (SIGHUP); returns what to tell the user.
func notifyDaemon(_ config: GatewayConfig, about deviceID: String, added: Bool = false) -> String {
    let change = added ? "relay \(deviceID) again" : "drop \(deviceID)"
    guard let status = try? StateStore(readingFrom: config.gateway.stateDB).readStatus(),
        Status.isRunning(status)
    else {
        return "gatehoused is not running; it will \(change) when it starts"
    }
    guard kill(status.pid, SIGHUP) == 0 else {
        return "could not signal gatehoused (pid \(status.pid)): \(String(cString: strerror(errno))); "
            + "send it SIGHUP or restart it to \(change)"
    }
    let logLine = added ? "device added again" : "device removed"
    return "asked gatehoused (pid \(status.pid)) to \(change): its log says \"\(logLine)\""
}

extension Devices {
    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a leaf device's credential and ACL on the site broker; print its password once.",
            discussion: """
                The device logs in with username and client id ID and the printed password (192 random bits). \
                gatehouse keeps no copy; the broker keeps only a salted hash. The device may publish only to \
                its own telemetry topics and subscribe only to its own command topics.
                """)

        @OptionGroup var options: ConfigOption
        @Argument(help: "The device id (1–128 of: letters, digits, - . _ :), as its DPS registration id.")
        var id: String
        @Flag(help: "Print JSON (with the password) instead of text.") var json = false

        func run() throws {
            if let problem = DeviceIdentifier.problem(id) {
                throw fail("devices add", "invalid device id: \(problem)", DeviceExit.dataError)
            }
            let config = try options.loadConfig()
            let settings = try options.siteBroker(config, command: "devices add")
            let admin: SiteBrokerAdmin
            let password: String
            do {
                admin = try SiteCredentials.connect(settings)
                password = try admin.addDevice(id)
            } catch {
                throw fail("devices add", "\(error)", DeviceExit.code(error))
            }
            admin.client.close()
            let publish = admin.plan.telemetryTopics(of: id)
            let subscribe = admin.plan.commandTopics(of: id)
            if json {
                let report: JSONValue = [
                    "deviceId": .string(id), "username": .string(id), "clientId": .string(id),
                    "password": .string(password), "broker": .string("\(settings.host):\(settings.port)"),
                    "publish": .array(publish.map(JSONValue.string)),
                    "subscribe": .array(subscribe.map(JSONValue.string)),
                ]
                print(report.formatted(JSONFormat(indentation: "  ", sortsKeys: true)))
            } else {
                print("created the site-broker credential of \(id) on \(settings.host):\(settings.port)")
                print("  username and client id: \(id)")
                print("  password: \(password)")
                print(
                    "  (shown once: gatehouse keeps no copy and the broker only a salted hash — give it to the device now)"
                )
                print("  may publish to:   \(publish.joined(separator: ", "))")
                print("  may subscribe to: \(subscribe.joined(separator: ", "))")
            }
            do {
                let store = try ConfigOption.openStateForWriting(config, command: "devices add")
                let wasRemoved = try store.recordSiteCredential(
                    deviceID: id, atMS: Int64(Date().timeIntervalSince1970 * 1000))
                if wasRemoved {
                    print("\(id) was removed before; \(notifyDaemon(config, about: id, added: true))")
                }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                throw fail(
                    "devices add", "the credential exists, but the registry could not record it: \(error)",
                    DeviceExit.ioError)
            }
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Delete a leaf device's site-broker credential (its sessions are closed) and revoke it in gatehoused.",
            discussion: """
                The registry marks the device removed and a running gatehoused is told (SIGHUP): it closes the \
                device's hub identity, forgets its derived key, drops its waiting telemetry and relays nothing \
                of it any more. `gatehouse devices add ID` makes it a device again.
                """)

        @OptionGroup var options: ConfigOption
        @Argument(help: "The device id.") var id: String

        func run() throws {
            if let problem = DeviceIdentifier.problem(id) {
                throw fail("devices remove", "invalid device id: \(problem)", DeviceExit.dataError)
            }
            let config = try options.loadConfig()
            let settings = try options.siteBroker(config, command: "devices remove")
            let hadCredential: Bool
            do {
                let admin = try SiteCredentials.connect(settings)
                defer { admin.client.close() }
                hadCredential = try admin.removeDevice(id)
            } catch {
                throw fail("devices remove", "\(error)", DeviceExit.code(error))
            }
            let store = try ConfigOption.openStateForWriting(config, command: "devices remove")
            let known: Bool
            do {
                known = try store.markRemoved(deviceID: id, atMS: Int64(Date().timeIntervalSince1970 * 1000))
            } catch {
                throw fail("devices remove", "\(error)", DeviceExit.ioError)
            }
            guard hadCredential || known else {
                throw fail(
                    "devices remove",
                    "unknown device \(id): no credential on the site broker at \(settings.host):\(settings.port) "
                        + "and not in the registry", DeviceExit.noUser)
            }
            if hadCredential {
                print("deleted the site-broker credential of \(id) (its sessions were closed)")
            } else {
                print("\(id) had no credential on the site broker")
            }
            if known {
                print("marked \(id) removed in the registry; \(notifyDaemon(config, about: id))")
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "list",
            abstract: "Every device: site credential, provisioning (DPS), assigned hub, upstream link.")

        @OptionGroup var options: ConfigOption
        @Flag(help: "Print JSON instead of a table.") var json = false

        struct Row: Codable {
            var id: String
            /// Whether the site broker has the device's credential; nil when it could not be asked.
            var siteCredential: Bool?
            /// "pending", "assigning", "assigned", "failed" or "removed".
            var provisioning: String
            var provisioningReason: String
            var assignedHub: String
            var link: String
            var linkReason: String
            var removed: Bool
        }

        func run() throws {
            let config = try options.loadConfig()
            var records: [DeviceRecord] = []
            if FileManager.default.fileExists(atPath: config.gateway.stateDB) {
                records = try ConfigOption.openState(config).devices()
            }
            var onBroker: Set<String>? = nil
            var brokerNote = ""
            if let settings = config.siteBroker {
                do {
                    let admin = try SiteCredentials.connect(settings, timeout: .seconds(5))
                    defer { admin.client.close() }
                    onBroker = try admin.deviceClients()
                } catch {
                    brokerNote = "site credentials unknown: \(error)"
                }
            } else {
                brokerNote = "site credentials unknown: no [site_broker] section in \(options.config)"
            }
            var rows: [Row] = records.map { record in
                let (state, reason) = Self.provisioning(record)
                return Row(
                    id: record.id, siteCredential: onBroker.map { $0.contains(record.id) }, provisioning: state,
                    provisioningReason: reason, assignedHub: record.assignedHub,
                    link: record.isRemoved ? "removed" : record.linkState, linkReason: record.linkReason,
                    removed: record.isRemoved)
            }
            let known = Set(records.map(\.id))
            for id in (onBroker ?? []).subtracting(known).sorted() {
                rows.append(
                    Row(
                        id: id, siteCredential: true, provisioning: "pending", provisioningReason: "", assignedHub: "",
                        link: "down", linkReason: "", removed: false))
            }
            rows.sort { $0.id < $1.id }
            if !brokerNote.isEmpty { StandardStreams.writeError("gatehouse devices: \(brokerNote)\n") }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try encoder.encode(rows), as: UTF8.self))
                return
            }
            let header = ["DEVICE", "SITE CREDENTIAL", "DPS", "HUB", "LINK", "REASON"]
            var table = [header]
            for row in rows {
                let credential = row.siteCredential.map { $0 ? "yes" : "no" } ?? "?"
                let dps =
                    row.provisioningReason.isEmpty ? row.provisioning : "\(row.provisioning): \(row.provisioningReason)"
                table.append([
                    row.id, credential, dps, row.assignedHub.isEmpty ? "-" : row.assignedHub, row.link,
                    row.linkReason,
                ])
            }
            let widths = (0..<header.count).map { column in table.map { $0[column].count }.max() ?? 0 }
            for line in table {
                print(
                    zip(line, widths).map { $0.padded(to: $1) }
                        .joined(separator: "  ").trimmingBlanks)
            }
            if rows.isEmpty { print("(no devices yet: `gatehouse devices add ID`)") }
        }

        /// The registry's "", "assigning", "assigned", "failed: reason", "removed" as (state, reason).
        static func provisioning(_ record: DeviceRecord) -> (String, String) {
            if record.isRemoved { return ("removed", "") }
            let value = record.provisioning
            if value.isEmpty { return ("pending", "") }
            if value.hasPrefix("failed") {
                let reason = value.dropFirst("failed".count).drop { $0 == ":" || $0 == " " }
                return ("failed", String(reason))
            }
            return (value, "")
        }
    }
}

/// `gatehouse site init`: the site broker's side of the first run.
struct Site: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "site", abstract: "The site broker (mosquitto with its dynamic security plugin).",
        subcommands: [Init.self])

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Make the site broker deny by default and create the gateway's own client and role; print what it did.",
            discussion: """
                Idempotent. The gateway's client ([site] username, client_id) gets the role gatehouse-gateway: \
                subscribe to every device's telemetry, publish commands to devices. Its new password is written \
                to [site] password_file (mode 0600) and never printed when that key is set.
                """)

        @OptionGroup var options: ConfigOption
        @Flag(help: "Give the gateway's existing client a new password (written to [site] password_file).")
        var rotatePassword = false

        func run() throws {
            let config = try options.loadConfig()
            let settings = try options.siteBroker(config, command: "site init")
            let report: SiteBrokerAdmin.InitReport
            do {
                let admin = try SiteCredentials.connect(settings)
                defer { admin.client.close() }
                report = try admin.initialize(
                    gatewayUsername: settings.gatewayUsername, gatewayClientID: settings.gatewayClientID,
                    rotatePassword: rotatePassword)
            } catch {
                throw fail("site init", "\(error)", DeviceExit.code(error))
            }
            print("site broker \(settings.host):\(settings.port) (dynamic security, admin \(settings.adminUsername)):")
            for action in report.actions { print("  \(action)") }
            if let password = report.gatewayPassword {
                if let file = settings.gatewayPasswordFile {
                    do {
                        try SiteCredentials.writeSecretFile(file, password)
                    } catch {
                        throw fail("site init", "\(error)", DeviceExit.code(error))
                    }
                    print("  the gateway's password: written to \(file) (mode 0600; [site] password_file)")
                } else {
                    print("  the gateway's password (shown once; [site] has no password_file): \(password)")
                }
            }
            print(
                "next: `gatehouse devices add ID` for each leaf device; (re)start gatehoused to log in as \(settings.gatewayUsername)"
            )
        }
    }
}
