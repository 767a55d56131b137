import FoundationEssentials
import GatehouseBasics
import GatehousePluginKit
import GatehouseStore
import StrictJSON
import TOMLReader

extension GatewayConfig {
    /// Reads and validates the configuration: `path`, or the package's defaults in its place, then
    /// the drop-ins in `gatehouse.d/` beside it (`sources(path:packagedDefaults:)`). Every problem
    /// is a `ConfigError` naming the file, line and key it comes from.
    public static func load(
        path: String, packagedDefaults: String = packagedDefaultsPath
    ) throws(ConfigError) -> GatewayConfig {
        var texts: [(path: String, text: String)] = []
        for file in try sources(path: path, packagedDefaults: packagedDefaults) {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ConfigError(file: file, message: "cannot read the configuration file")
            }
            guard let text = String(data: data, encoding: .utf8) else {
                throw ConfigError(file: file, message: "the configuration file is not UTF-8")
            }
            texts.append((file, text))
        }
        return try read(texts, path: path)
    }

    /// One file's text, on its own (no defaults, no drop-ins).
    public static func parse(_ text: String, path: String) throws(ConfigError) -> GatewayConfig {
        try read([(path, text)], path: path)
    }

    static func read(_ texts: [(path: String, text: String)], path: String) throws(ConfigError) -> GatewayConfig {
        let (root, origins) = try merge(files: texts)
        var reader = ConfigReader(root: root, origins: origins, path: path)
        return try reader.read()
    }
}

/// Walks the parsed TOML, checking every key against what the section allows.
private struct ConfigReader {
    let root: TOMLTable
    let origins: ConfigOrigins
    /// The file named with `-c` (for what no single file holds, such as a missing section).
    let path: String

    func error(_ section: String?, _ key: String?, _ message: String) -> ConfigError {
        // A top-level name is a `[section]` header or a bare key before the first header.
        let place = origins.place(section, key) ?? ConfigPlace(file: path)
        let name = [section.map { "[\($0)]" }, key].compactMap { $0 }.joined(separator: " ")
        return ConfigError(file: place.file, line: place.line, key: name.isEmpty ? nil : name, message: message)
    }

    mutating func read() throws(ConfigError) -> GatewayConfig {
        let known: Set<String> = [
            "gateway", "outbox", "archive", "dead_letters", "identity", "provisioning", "auth", "site_broker", "site",
            "hub", "firewall", "metrics", "twin",
        ]
        for key in root.keys where !known.contains(key) {
            throw error(nil, key, "unknown section\(hint(key, known))")
        }
        for required in ["site", "hub"] where root[required]?.table == nil {
            throw ConfigError(
                file: path, key: "[\(required)]",
                message:
                    "missing section; it names the \(required == "site" ? "site-broker (downstream)" : "hub (upstream)") transport plugin"
            )
        }
        let identity = try identity()
        let provisioning = try provisioning()
        if provisioning?.gatewayRegistrationID != nil, identity.tpm == nil {
            throw error(
                "provisioning", "gateway_registration_id",
                "needs [identity] tpm: the gateway's own identity is attested by, and its key kept in, the TPM")
        }
        let siteBroker = try siteBroker()
        let site = try transport("site")
        var firewall: GatewayConfig.TransportSection?
        if try table("firewall") != nil {
            var section = try transport("firewall")
            section.pluginConfigJSON = Self.addDerivedPorts(section.pluginConfigJSON, site: site)
            firewall = section
        }
        var config = GatewayConfig(
            gateway: try gateway(), outbox: try outbox(), deadLetters: try deadLetters(), identity: identity,
            provisioning: provisioning,
            auth: try auth(), siteBroker: siteBroker, site: site, hub: try transport("hub"), firewall: firewall,
            sourcePath: path)
        config.origins = origins
        config.archive = try archive()
        config.metrics = try metrics()
        config.twin = try twin()
        return config
    }

    /// The ports gatehouse itself needs open, handed to the firewall plugin as `derived_allow`:
    /// the site broker's port when the broker runs on this gateway (leaf devices connect to it).
    /// Outbound connections (the hub, DPS) need nothing: their replies are established traffic.
    /// The sections' JSON is TOMLReader's rendering of the TOML tables; the result is written with
    /// sorted keys.
    static func addDerivedPorts(_ json: [UInt8], site: GatewayConfig.TransportSection) -> [UInt8] {
        guard case .object(var object)? = try? JSONValue(parsing: json) else { return json }
        let siteObject = (try? JSONValue(parsing: site.pluginConfigJSON))?.objectValue ?? [:]
        let host = siteObject["host"]?.stringValue ?? "127.0.0.1"
        let port = siteObject["port"]?.intValue ?? 1883
        var derived: [JSONValue] = []
        if ["127.0.0.1", "localhost", "::1", "0.0.0.0", "::"].contains(host) {
            derived.append(["port": .int(port), "proto": "tcp", "comment": "site broker ([site] port)"])
        }
        object["derived_allow"] = .array(derived)
        return Array(JSONValue.object(object).formatted(JSONFormat(sortsKeys: true)).utf8)
    }

    func table(_ name: String) throws(ConfigError) -> TOMLTable? {
        guard let value = root[name] else { return nil }
        guard let table = value.table else { throw error(nil, name, "must be a table ([\(name)])") }
        return table
    }

    func checkKeys(_ table: TOMLTable, _ section: String, _ known: Set<String>) throws(ConfigError) {
        for key in table.keys where !known.contains(key) {
            throw error(section, key, "unknown key\(hint(key, known))")
        }
    }

    func gateway() throws(ConfigError) -> GatewayConfig.Gateway {
        var result = GatewayConfig.Gateway()
        guard let table = try table("gateway") else { return result }
        try checkKeys(
            table, "gateway",
            [
                "state_db", "plugin_dir", "rules_dir", "log_level", "drain_timeout", "id", "tenant", "site",
                "audit_max_age", "audit_max_rows",
            ])
        if let value = try duration(table, "gateway", "audit_max_age") {
            guard value >= .seconds(3600) else { throw error("gateway", "audit_max_age", "must be at least 1h") }
            result.auditRetention.maxAgeMS = Int64(value.components.seconds) * 1000
        }
        if let value = table["audit_max_rows"] {
            guard let rows = value.int, rows >= 1000 else {
                throw error("gateway", "audit_max_rows", "must be a whole number of at least 1000")
            }
            result.auditRetention.maxRows = rows
        }
        if let value = try string(table, "gateway", "id") { result.id = value }
        if let value = try string(table, "gateway", "tenant") { result.tenant = value }
        if let value = try string(table, "gateway", "site") { result.site = value }
        result.rulesDir = try string(table, "gateway", "rules_dir")
        if let value = try string(table, "gateway", "state_db") { result.stateDB = value }
        if let value = try string(table, "gateway", "plugin_dir") { result.pluginDir = value }
        if let value = try string(table, "gateway", "log_level") {
            guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(value) else {
                throw error(
                    "gateway", "log_level", "must be one of trace, debug, info, notice, warning, error, critical")
            }
            result.logLevel = value
        }
        if let value = try duration(table, "gateway", "drain_timeout") { result.drainTimeout = value }
        return result
    }

    func outbox() throws(ConfigError) -> OutboxPolicy {
        var result = OutboxPolicy()
        guard let table = try table("outbox") else { return result }
        try checkKeys(table, "outbox", ["max_bytes", "max_age", "drop", "durability", "inflight_per_device"])
        if let value = try size(table, "outbox", "max_bytes") {
            guard value >= 64 * 1024 else { throw error("outbox", "max_bytes", "must be at least 64 KiB") }
            result.maxBytes = value
        }
        if let value = try duration(table, "outbox", "max_age") { result.maxAge = value }
        if let value = try string(table, "outbox", "drop") {
            guard let policy = OutboxPolicy.DropPolicy(rawValue: value) else {
                throw error("outbox", "drop", "must be \"oldest\" or \"newest\", not \"\(value)\"")
            }
            result.drop = policy
        }
        if let value = try string(table, "outbox", "durability") {
            guard let durability = StateStore.Durability(rawValue: value) else {
                throw error(
                    "outbox", "durability",
                    "must be \"full\" (survives power loss) or \"normal\" (survives a crash of gatehoused), not \"\(value)\""
                )
            }
            result.durability = durability
        }
        if let value = table["inflight_per_device"] {
            guard let number = value.int, (1...1000).contains(number) else {
                throw error("outbox", "inflight_per_device", "must be a whole number from 1 to 1000")
            }
            result.inflightPerDevice = number
        }
        return result
    }

    /// `[metrics]`: the Prometheus endpoint (docs/operations.md). Without the section, none.
    func metrics() throws(ConfigError) -> GatewayConfig.Metrics? {
        guard let table = try table("metrics") else { return nil }
        try checkKeys(table, "metrics", ["enabled", "listen"])
        var result = GatewayConfig.Metrics()
        if let value = table["enabled"] {
            guard let enabled = value.bool else { throw error("metrics", "enabled", "must be true or false") }
            guard enabled else { return nil }
        }
        if let value = try string(table, "metrics", "listen") {
            guard let address = GatewayConfig.Metrics.parse(listen: value) else {
                throw error(
                    "metrics", "listen",
                    "must be an IP address and a port, such as \"127.0.0.1:9600\" or \"[::1]:9600\", not \"\(value)\"")
            }
            (result.host, result.port) = address
        }
        return result
    }

    /// `[twin]`: the gateway's own reported properties (docs/operations.md).
    func twin() throws(ConfigError) -> GatewayConfig.Twin {
        var result = GatewayConfig.Twin()
        guard let table = try table("twin") else { return result }
        try checkKeys(table, "twin", ["report", "min_interval", "health_telemetry"])
        if let value = table["report"] {
            guard let report = value.bool else { throw error("twin", "report", "must be true or false") }
            result.report = report
        }
        if let value = try duration(table, "twin", "min_interval") {
            guard value >= .seconds(1) else { throw error("twin", "min_interval", "must be at least 1s") }
            result.minInterval = value
        }
        if let value = try duration(table, "twin", "health_telemetry") {
            guard value >= .seconds(10) else { throw error("twin", "health_telemetry", "must be at least 10s") }
            result.healthTelemetry = value
        }
        return result
    }

    func deadLetters() throws(ConfigError) -> DeadLetterRetention {
        var result = DeadLetterRetention()
        guard let table = try table("dead_letters") else { return result }
        try checkKeys(table, "dead_letters", ["max_bytes", "max_age"])
        if let value = try size(table, "dead_letters", "max_bytes") {
            guard value >= 64 * 1024 else { throw error("dead_letters", "max_bytes", "must be at least 64 KiB") }
            result.maxBytes = value
        }
        if let value = try duration(table, "dead_letters", "max_age") {
            guard value >= .seconds(3600) else { throw error("dead_letters", "max_age", "must be at least 1h") }
            result.maxAgeMS = Int64(value.components.seconds) * 1000
        }
        return result
    }

    /// `[archive]`: what `route telemetry … to archive` may keep on the gateway.
    func archive() throws(ConfigError) -> ArchivePolicy {
        var result = ArchivePolicy()
        guard let table = try table("archive") else { return result }
        try checkKeys(table, "archive", ["max_bytes", "max_age"])
        if let value = try size(table, "archive", "max_bytes") {
            guard value >= 64 * 1024 else { throw error("archive", "max_bytes", "must be at least 64 KiB") }
            result.maxBytes = value
        }
        if let value = try duration(table, "archive", "max_age") {
            guard value >= .seconds(60) else { throw error("archive", "max_age", "must be at least 1m") }
            result.maxAge = value
        }
        return result
    }

    func identity() throws(ConfigError) -> GatewayConfig.Identity {
        var result = GatewayConfig.Identity()
        guard let table = try table("identity") else { return result }
        try checkKeys(table, "identity", ["group_key_file", "tpm", "group_key_blob", "sas_ttl"])
        result.groupKeyFile = try string(table, "identity", "group_key_file")
        result.tpm = try string(table, "identity", "tpm")
        if let blob = try string(table, "identity", "group_key_blob") { result.groupKeyBlob = blob }
        if result.tpm != nil, result.groupKeyFile != nil {
            throw error(
                "identity", "group_key_file",
                "set either `tpm` (the group key inside the TPM) or `group_key_file`, not both")
        }
        if let value = try duration(table, "identity", "sas_ttl") {
            guard value >= .seconds(60), value <= .seconds(365 * 24 * 3600) else {
                throw error("identity", "sas_ttl", "must be between 1m and 365d")
            }
            result.sasTTL = value
        }
        return result
    }

    func provisioning() throws(ConfigError) -> GatewayConfig.Provisioning? {
        guard let table = try table("provisioning") else { return nil }
        try checkKeys(
            table, "provisioning",
            [
                "id_scope", "endpoint", "port", "ca_file", "allow", "concurrency", "https_port",
                "gateway_registration_id", "gateway_attestation",
            ])
        guard let scope = try string(table, "provisioning", "id_scope"), !scope.isEmpty else {
            throw error("provisioning", "id_scope", "missing: the DPS ID scope, e.g. \"0ne00ABC123\"")
        }
        let gatewayRegistrationID = try string(table, "provisioning", "gateway_registration_id")
        if let id = gatewayRegistrationID, !GatewayConfig.Provisioning.isValidRegistrationID(id) {
            throw error(
                "provisioning", "gateway_registration_id",
                "must be 1–128 letters, digits or -._: ending in a letter, digit or -")
        }
        if let attestation = try string(table, "provisioning", "gateway_attestation"), attestation != "tpm" {
            throw error("provisioning", "gateway_attestation", "only \"tpm\" is supported, not \"\(attestation)\"")
        }
        // Leaf registration is on when `allow` is given; the gateway's own identity alone needs none.
        let list: [TOMLValue]
        if let given = table["allow"]?.array {
            list = given
        } else if gatewayRegistrationID != nil {
            list = []
        } else {
            throw error(
                "provisioning", "allow",
                "missing: a list of device-id patterns gatehouse may register, e.g. [\"pump-*\"] (\"*\" for all)")
        }
        var allow: [String] = []
        for index in 0..<list.count {
            guard let pattern = list[index].string, !pattern.isEmpty else {
                throw error("provisioning", "allow", "must be a list of non-empty strings")
            }
            allow.append(pattern)
        }
        var result = GatewayConfig.Provisioning(idScope: scope, allow: allow)
        result.registersLeaves = table["allow"] != nil
        result.gatewayRegistrationID = gatewayRegistrationID
        if let value = table["https_port"] {
            guard let port = value.int, (1...65535).contains(port) else {
                throw error("provisioning", "https_port", "must be a port number")
            }
            result.httpsPort = port
        }
        if let endpoint = try string(table, "provisioning", "endpoint") { result.endpoint = endpoint }
        result.caFile = try string(table, "provisioning", "ca_file")
        if let value = table["port"] {
            guard let port = value.int, (1...65535).contains(port) else {
                throw error("provisioning", "port", "must be a port number")
            }
            result.port = port
        }
        if let value = table["concurrency"] {
            guard let count = value.int, (1...64).contains(count) else {
                throw error("provisioning", "concurrency", "must be a whole number from 1 to 64")
            }
            result.concurrency = count
        }
        return result
    }

    func auth() throws(ConfigError) -> GatewayConfig.Auth? {
        guard let table = try table("auth") else { return nil }
        try checkKeys(
            table, "auth",
            [
                "audiences", "tenants", "issuers", "accept_v1_issuer", "required_claims", "algorithms", "clock_skew",
                "max_token_bytes", "jwks_file", "jwks_url", "jwks_cache", "jwks_refresh", "jwks_max_stale",
                "c2d_token_property", "c2d_name_property",
                "c2d_id_property", "method_token_field", "method_id_field", "require_command_id",
                "replay_max_per_caller",
            ])
        let audiences = try strings(table, "auth", "audiences") ?? []
        guard !audiences.isEmpty else {
            throw error("auth", "audiences", "missing: the accepted token audiences, e.g. [\"api://gatehouse\"]")
        }
        var result = GatewayConfig.Auth(audiences: audiences)
        result.tenants = try strings(table, "auth", "tenants") ?? []
        result.issuers = try strings(table, "auth", "issuers") ?? []
        if result.tenants.isEmpty, result.issuers.isEmpty {
            throw error("auth", "tenants", "set `tenants` (Entra ID tenant ids), `issuers`, or both")
        }
        if let value = table["accept_v1_issuer"] {
            guard let flag = value.bool else { throw error("auth", "accept_v1_issuer", "must be true or false") }
            guard !flag || !result.tenants.isEmpty else {
                throw error("auth", "accept_v1_issuer", "needs `tenants` (the v1 issuer names the tenant)")
            }
            result.acceptV1Issuer = flag
        }
        if let claims = try strings(table, "auth", "required_claims") {
            guard claims.contains("exp") else {
                throw error(
                    "auth", "required_claims",
                    "must include \"exp\" (a command id is remembered against replays while its token lives)")
            }
            result.requiredClaims = claims
        }
        if let algorithms = try strings(table, "auth", "algorithms") {
            let allowed: Set<String> = [
                "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            ]
            for algorithm in algorithms where !allowed.contains(algorithm) {
                throw error(
                    "auth", "algorithms",
                    "\(algorithm) is not allowed; choose from \(allowed.sorted().joined(separator: ", ")) (`none` and HMAC are never accepted with a JWKS)"
                )
            }
            guard !algorithms.isEmpty else { throw error("auth", "algorithms", "must name at least one algorithm") }
            result.algorithms = algorithms
        }
        if let value = try duration(table, "auth", "clock_skew") {
            guard value <= .seconds(600) else { throw error("auth", "clock_skew", "must be at most 10m") }
            result.clockSkew = value
        }
        if let value = try size(table, "auth", "max_token_bytes") {
            guard (256...65536).contains(value) else {
                throw error("auth", "max_token_bytes", "must be between 256 and 65536 bytes")
            }
            result.maxTokenBytes = value
        }
        result.jwksFile = try string(table, "auth", "jwks_file")
        result.jwksURL = try string(table, "auth", "jwks_url")
        if let url = result.jwksURL, !url.lowercased().hasPrefix("https://") {
            throw error("auth", "jwks_url", "must be an https:// URL")
        }
        guard result.jwksFile != nil || result.jwksURL != nil else {
            throw error(
                "auth", "jwks_file", "missing: set `jwks_file`, `jwks_url`, or both (where the signing keys are)")
        }
        if let value = try string(table, "auth", "jwks_cache") { result.jwksCache = value }
        if let value = try duration(table, "auth", "jwks_refresh") {
            guard value >= .seconds(300) else { throw error("auth", "jwks_refresh", "must be at least 5m") }
            result.jwksRefresh = value
        }
        if let value = try duration(table, "auth", "jwks_max_stale") { result.jwksMaxStale = value }
        guard result.jwksMaxStale >= result.jwksRefresh else {
            throw error(
                "auth", "jwks_max_stale",
                "must be at least jwks_refresh (\(result.jwksRefresh.components.seconds)s): keys would go out of date between two refreshes"
            )
        }
        for (key, path) in [
            ("c2d_token_property", \GatewayConfig.Auth.c2dTokenProperty),
            ("c2d_name_property", \GatewayConfig.Auth.c2dNameProperty),
            ("c2d_id_property", \GatewayConfig.Auth.c2dIDProperty),
            ("method_token_field", \GatewayConfig.Auth.methodTokenField),
            ("method_id_field", \GatewayConfig.Auth.methodIDField),
        ] {
            if let value = try string(table, "auth", key) {
                guard !value.isEmpty else { throw error("auth", key, "must not be empty") }
                result[keyPath: path] = value
            }
        }
        if let value = table["require_command_id"] {
            guard let flag = value.bool else { throw error("auth", "require_command_id", "must be true or false") }
            result.requireCommandID = flag
        }
        if let value = table["replay_max_per_caller"] {
            guard let count = value.int, (1...1_000_000).contains(count) else {
                throw error("auth", "replay_max_per_caller", "must be a whole number from 1 to 1000000")
            }
            result.replayMaxPerCaller = count
        }
        return result
    }

    func strings(_ table: TOMLTable, _ section: String, _ key: String) throws(ConfigError) -> [String]? {
        guard let value = table[key] else { return nil }
        if let single = value.string { return [single] }
        guard let list = value.array else { throw error(section, key, "must be a string or a list of strings") }
        var result: [String] = []
        for index in 0..<list.count {
            guard let item = list[index].string, !item.isEmpty else {
                throw error(section, key, "must be a list of non-empty strings")
            }
            result.append(item)
        }
        return result
    }

    func siteBroker() throws(ConfigError) -> GatewayConfig.SiteBroker? {
        guard let table = try table("site_broker") else { return nil }
        try checkKeys(
            table, "site_broker",
            ["host", "port", "ca_file", "admin_username", "admin_password_file", "telemetry_topics", "command_topics"])
        guard let admin = try string(table, "site_broker", "admin_username"), !admin.isEmpty else {
            throw error(
                "site_broker", "admin_username",
                "missing: the dynsec admin client (mosquitto_ctrl dynsec init FILE NAME)")
        }
        guard let passwordFile = try string(table, "site_broker", "admin_password_file"), !passwordFile.isEmpty else {
            throw error(
                "site_broker", "admin_password_file", "missing: a file holding the admin's password (mode 0600)")
        }
        var result = GatewayConfig.SiteBroker(adminUsername: admin, adminPasswordFile: passwordFile)
        // The mqtt site transport's own keys are the defaults: one broker, one set of topics.
        if let site = root["site"]?.table, site["plugin"]?.string == "mqtt" {
            if let host = site["host"]?.string { result.host = host }
            if let port = site["port"]?.int { result.port = port }
            if let topics = site["topics"]?.array {
                result.telemetryTopics = (0..<topics.count).compactMap { topics[$0].string }
            }
            if let username = site["username"]?.string { result.gatewayUsername = username }
            if let clientID = site["client_id"]?.string { result.gatewayClientID = clientID }
            result.gatewayPasswordFile = site["password_file"]?.string
        }
        if let host = try string(table, "site_broker", "host") { result.host = host }
        if let value = table["port"] {
            guard let port = value.int, (1...65535).contains(port) else {
                throw error("site_broker", "port", "must be a port number")
            }
            result.port = port
        }
        result.caFile = try string(table, "site_broker", "ca_file")
        for key in ["telemetry_topics", "command_topics"] {
            guard let value = table[key] else { continue }
            guard let list = value.array, list.count > 0,
                case let topics = (0..<list.count).compactMap({ list[$0].string }), topics.count == list.count
            else {
                throw error("site_broker", key, "must be a non-empty list of topic filters")
            }
            for topic in topics
            where topic.split(separator: "/", omittingEmptySubsequences: false).filter({ $0 == "+" }).count != 1 {
                throw error(
                    "site_broker", key, "`\(topic)` must have exactly one `+` level, for the device id")
            }
            if key == "telemetry_topics" { result.telemetryTopics = topics } else { result.commandTopics = topics }
        }
        return result
    }

    func transport(_ section: String) throws(ConfigError) -> GatewayConfig.TransportSection {
        var table = try table(section)!
        guard let plugin = try string(table, section, "plugin") else {
            throw error(section, "plugin", "missing: name the transport plugin, e.g. plugin = \"mqtt\"")
        }
        // Everything but `plugin` belongs to the plugin, which validates it itself.
        table["plugin"] = nil
        let json = Array(table.jsonText(sortedKeys: true).utf8)
        return GatewayConfig.TransportSection(
            section: section, plugin: plugin, pluginConfigJSON: json, keyPlaces: origins.keys[section] ?? [:],
            sectionPlace: origins.place(section, nil) ?? ConfigPlace(file: path))
    }

    // MARK: Typed values

    func string(_ table: TOMLTable, _ section: String, _ key: String) throws(ConfigError) -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else { throw error(section, key, "must be a string") }
        return string
    }

    func duration(_ table: TOMLTable, _ section: String, _ key: String) throws(ConfigError) -> Duration? {
        guard let value = table[key] else { return nil }
        if let seconds = value.int, seconds >= 0 { return .seconds(seconds) }
        guard let text = value.string, let parsed = Units.duration(text) else {
            throw error(section, key, "must be a duration such as \"30s\", \"5m\", \"1h\" or \"7d\"")
        }
        return parsed
    }

    func size(_ table: TOMLTable, _ section: String, _ key: String) throws(ConfigError) -> Int? {
        guard let value = table[key] else { return nil }
        if let bytes = value.int, bytes >= 0 { return bytes }
        guard let text = value.string, let parsed = Units.bytes(text) else {
            throw error(section, key, "must be a size such as \"64 MiB\", \"1 GiB\" or a number of bytes")
        }
        return parsed
    }
}

/// "; did you mean `x`?" when a known name is close to the unknown one.
func hint(_ key: String, _ known: Set<String>) -> String {
    guard let best = known.min(by: { levenshtein($0, key) < levenshtein($1, key) }), levenshtein(best, key) <= 2
    else { return "; known keys: \(known.sorted().joined(separator: ", "))" }
    return "; did you mean `\(best)`?"
}

func levenshtein(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for (i, ca) in a.enumerated() {
        var current = [i + 1]
        for (j, cb) in b.enumerated() {
            current.append(Swift.min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
        }
        previous = current
    }
    return previous[b.count]
}

/// Human units in config values.
public enum Units {
    /// "500ms", "30s", "5m", "1h", "7d" → Duration.
    public static func duration(_ text: String) -> Duration? {
        let trimmed = text.trimmingBlanks
        let digits = trimmed.prefix { $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).trimmingBlanks
        guard let value = Int64(digits) else { return nil }
        switch unit {
        case "ms": return .milliseconds(value)
        case "s", "": return .seconds(value)
        case "m", "min": return .seconds(value * 60)
        case "h": return .seconds(value * 3600)
        case "d": return .seconds(value * 86400)
        default: return nil
        }
    }

    /// "64 MiB", "1GiB", "512 KiB", "100 kB", "4096" → bytes; the plugin kit's parser, so the
    /// daemon's sizes and its plugins' read alike.
    public static func bytes(_ text: String) -> Int? { PluginConfig.bytes(text) }
}
