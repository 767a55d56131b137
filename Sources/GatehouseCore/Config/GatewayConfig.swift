import FoundationEssentials
import GatehouseStore

#if canImport(Glibc)
    import Glibc
#endif

/// The daemon's configuration, read from `/etc/gatehouse/gatehouse.toml` and validated as a whole
/// before anything starts. See `packaging/gatehouse.toml` for every key with its default.
public struct GatewayConfig: Sendable {
    public var gateway: Gateway
    public var outbox: OutboxPolicy
    /// What the telemetry rules may keep on the gateway (section `[archive]`; `route telemetry …
    /// to archive`, `gatehouse archive export`).
    public var archive = ArchivePolicy()
    /// How many dead letters are kept (section `[dead_letters]`): messages that can never be
    /// delivered, kept instead of wedging their device (`gatehouse dead-letters`).
    public var deadLetters = DeadLetterRetention()
    public var identity: Identity
    /// DPS registration on the devices' behalf (section `[provisioning]`); nil: devices must
    /// already exist on the hub.
    public var provisioning: Provisioning?
    /// Verification of the callers' tokens on commands (section `[auth]`); nil: no command can be
    /// verified, so every command is refused.
    public var auth: Auth?
    /// The site broker's dynamic security plugin, managed by `gatehouse site init` and
    /// `gatehouse devices` (section `[site_broker]`); nil: gatehouse does not manage it.
    public var siteBroker: SiteBroker?
    /// The site-side transport that reads leaf devices' telemetry (section `[site]`).
    public var site: TransportSection
    /// The hub-side transport (section `[hub]`).
    public var hub: TransportSection
    /// The firewall plugin (section `[firewall]`); nil: gatehouse leaves the host's packet filter alone.
    public var firewall: TransportSection?
    /// The file named with `-c` (re-read on reload, with its drop-ins), for messages.
    public var sourcePath: String
    /// The files read and where each setting came from (`place(_:_:)`).
    public var origins = ConfigOrigins()

    /// `file:line` of `[section] key` (or of `[section]`), for messages; `sourcePath` when no
    /// file set it (a default).
    public func place(_ section: String, _ key: String? = nil) -> String {
        (origins.place(section, key) ?? ConfigPlace(file: sourcePath)).description
    }

    /// The Prometheus endpoint (section `[metrics]`); nil: none is served.
    public var metrics: Metrics? = nil
    /// The gateway's own reported properties (section `[twin]`).
    public var twin = Twin()

    /// Whether and how often the gateway reports its state in its own twin (docs/operations.md);
    /// it does only when it has its own identity (`[provisioning] gateway_registration_id`).
    public struct Twin: Sendable, Equatable {
        public var report = true
        /// At most one reported-properties patch this often.
        public var minInterval: Duration = .seconds(30)
        /// Health telemetry: the same document sent as a telemetry message of the gateway's own
        /// identity this often (any transport); nil (the default): none.
        public var healthTelemetry: Duration? = nil
        public init() {}
    }

    /// Where `/metrics` is served (docs/operations.md). Loopback by default: the endpoint has no
    /// authentication, so exposing it beyond the host is the operator's explicit choice.
    public struct Metrics: Sendable, Equatable {
        public var host: String = "127.0.0.1"
        public var port: Int = 9600

        public init() {}

        /// "127.0.0.1:9600" or "[::1]:9600": an IP address literal (no name to resolve) and a port.
        public static func parse(listen text: String) -> (host: String, port: Int)? {
            guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
                (1...65535).contains(port)
            else { return nil }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") {
                host = String(host.dropFirst().dropLast())
                var address = in6_addr()
                guard inet_pton(AF_INET6, host, &address) == 1 else { return nil }
            } else {
                var address = in_addr()
                guard inet_pton(AF_INET, host, &address) == 1 else { return nil }
            }
            return (host, port)
        }
    }

    public struct Gateway: Sendable {
        public var stateDB: String = "/var/lib/gatehouse/state.db"
        public var pluginDir: String = "/usr/lib/gatehouse/plugins"
        /// The rule set deciding commands (and telemetry routes). Unset: no rules are loaded and
        /// every command is refused.
        public var rulesDir: String?
        public var logLevel: String = "info"
        /// How long a graceful stop waits for in-flight messages.
        public var drainTimeout: Duration = .seconds(5)
        /// What rules see as `gateway.id`, `gateway.tenant` and `gateway.site`.
        public var id: String = ""
        public var tenant: String = ""
        public var site: String = ""
        /// How long and how many command decisions the audit log keeps (pruned hourly).
        public var auditRetention = AuditRetention()

        public init() {}
    }

    /// Where the caller's token travels and what it must be (docs/protocols.md §5; docs/command-gate.md).
    public struct Auth: Sendable {
        /// Accepted `aud` values; at least one.
        public var audiences: [String]
        /// Accepted `tid` values (Entra ID tenants); with no `issuers`, Entra's v2 issuer of these (and
        /// the v1 one with `acceptV1Issuer`).
        public var tenants: [String] = []
        public var issuers: [String] = []
        /// Also accept Entra ID's v1 issuer `https://sts.windows.net/{tid}/` (off: v2 only).
        public var acceptV1Issuer = false
        /// Claims every token must carry; `exp` always (see `TokenVerifier.Configuration`).
        public var requiredClaims: [String] = ["exp", "nbf", "iat"]
        public var algorithms: [String] = ["RS256", "ES256"]
        public var clockSkew: Duration = .seconds(120)
        public var maxTokenBytes: Int = 8 * 1024
        /// The JWKS: a file, an HTTPS URL, or both.
        public var jwksFile: String?
        public var jwksURL: String?
        /// The last good keys, so that the gate works offline after a restart.
        public var jwksCache: String = "/var/lib/gatehouse/jwks-cache.json"
        public var jwksRefresh: Duration = .seconds(3600)
        /// How long the last good keys stay usable while the JWKS cannot be read (counted from
        /// their fetch, across restarts); then every command is refused.
        public var jwksMaxStale: Duration = .seconds(24 * 3600)
        /// The C2D application property holding `Bearer <jwt>`.
        public var c2dTokenProperty: String = "authorization"
        /// The C2D application property naming the command (what rules see as `command.name`).
        public var c2dNameProperty: String = "command"
        /// The C2D property that identifies the message for replay protection (`$.mid`: IoT Hub's messageId).
        public var c2dIDProperty: String = "$.mid"
        /// The direct-method payload field holding `Bearer <jwt>`; removed before delivery.
        public var methodTokenField: String = "authorization"
        /// The direct-method payload field identifying the request for replay protection; removed before delivery.
        public var methodIDField: String = "command_id"
        /// Refuse commands without an id (they could be replayed while their token lives).
        public var requireCommandID: Bool = true
        /// How many command ids one caller may have live (accepted, token not yet expired) for
        /// replay protection; past it only that caller's commands are refused (`replay.caller-quota`).
        /// 50,000 within a token's lifetime (about an hour with Entra ID) is some 14 commands a
        /// second from one automation caller, and at most a few MB of memory per caller.
        public var replayMaxPerCaller: Int = 50_000

        public init(audiences: [String]) { self.audiences = audiences }
    }

    public struct Identity: Sendable {
        /// A file holding the base64 enrollment-group key; each device's key is derived from it
        /// (HMAC-SHA256 of the device id), as DPS derives it. For development: the key is on
        /// disk in plaintext. Production gateways use `tpm` and `group_key_blob` instead.
        public var groupKeyFile: String?
        /// The TPM's TCTI (`device:/dev/tpmrm0`, `swtpm:path=/run/swtpm.sock`, `tabrmd`). With it,
        /// device keys are derived inside the TPM from the wrapped group key.
        public var tpm: String?
        /// The TPM-wrapped group key written by `gatehouse tpm import-group-key`.
        public var groupKeyBlob: String = "/var/lib/gatehouse/tpm/group-key.blob"
        /// Lifetime of the SAS tokens signed for upstream connections.
        public var sasTTL: Duration = .seconds(3600)
    }

    public struct Provisioning: Sendable {
        public var idScope: String
        public var endpoint: String = "global.azure-devices-provisioning.net"
        public var port: Int = 8883
        public var caFile: String?
        /// Glob patterns (`*`, `?`) of the device ids gatehouse may register; others wait.
        public var allow: [String]
        /// Registrations running at once.
        public var concurrency: Int = 4
        /// Whether leaf devices are registered (an `allow` list was given).
        public var registersLeaves = true
        /// DPS's HTTPS port, for the gateway's own TPM attestation (TPM needs HTTPS).
        public var httpsPort: Int = 443
        /// The gateway's own DPS registration id: with it, gatehoused registers itself at start
        /// by TPM attestation (`[identity] tpm`) and opens its own hub identity, signed in the TPM.
        public var gatewayRegistrationID: String?

        /// DPS registration ids: 1–128 of letters, digits, `-._:`, ending in a letter, digit or `-`.
        static func isValidRegistrationID(_ id: String) -> Bool {
            guard (1...128).contains(id.utf8.count), let last = id.last else { return false }
            let allowed = Set("-._:")
            return id.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || allowed.contains($0) }
                && ((last.isASCII && (last.isLetter || last.isNumber)) || last == "-")
        }
    }

    /// How the CLI reaches the site broker as its dynsec admin, and the topics of the ACLs it
    /// writes. Where the site transport is the `mqtt` plugin, host, port, topics and the
    /// gateway's client (username, client id, password file) default to its `[site]` keys.
    public struct SiteBroker: Sendable {
        public var host: String = "127.0.0.1"
        public var port: Int = 1883
        /// Connect with TLS, trusting this CA; nil: plain MQTT (the broker's loopback listener).
        public var caFile: String?
        public var adminUsername: String
        /// Holds the admin's password; readable by the daemon's user only.
        public var adminPasswordFile: String
        /// Device → gateway; a `+` level is the device id (default: `[site] topics`).
        public var telemetryTopics: [String] = ["devices/+/messages/events/#"]
        /// Gateway → device.
        public var commandTopics: [String] = ["devices/+/messages/devicebound/#", "devices/+/methods/POST/#"]
        /// The gateway's own client on the site broker (`[site] username`, `client_id`,
        /// `password_file`).
        public var gatewayUsername: String = "gatehouse"
        public var gatewayClientID: String = "gatehouse"
        public var gatewayPasswordFile: String?
    }

    /// A transport plugin instance: the plugin's name and its own keys, handed to it as JSON.
    public struct TransportSection: Sendable {
        public var section: String
        public var plugin: String
        public var pluginConfigJSON: [UInt8]
        /// Where each of the section's keys was set (file and line), to place the plugin's own errors.
        public var keyPlaces: [String: ConfigPlace]
        /// Where the section was (last) declared.
        public var sectionPlace: ConfigPlace
    }
}

/// What the outbox may hold and what happens past it.
public struct OutboxPolicy: Sendable, Equatable {
    public enum DropPolicy: String, Sendable, CaseIterable {
        /// Make room by dropping the oldest waiting messages (fresh data matters most).
        case oldest
        /// Keep what is waiting; new messages past the limit are dropped (and still acknowledged
        /// to the site broker, which would otherwise redeliver them forever).
        case newest
    }

    public var maxBytes: Int = 256 * 1024 * 1024
    public var maxAge: Duration = .seconds(7 * 24 * 3600)
    public var drop: DropPolicy = .oldest
    public var durability: StateStore.Durability = .full
    /// Messages a device may have sent upstream and not yet had acknowledged.
    public var inflightPerDevice: Int = 64

    public init() {}
}

/// A configuration error, placed at a file and line, naming the key. Exit status 78 (EX_CONFIG).
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var key: String?
    public var message: String

    public init(file: String, line: Int? = nil, key: String? = nil, message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    public var description: String {
        var place = file
        if let line { place += ":\(line)" }
        if let key { return "\(place): \(key): \(message)" }
        return "\(place): \(message)"
    }
}
