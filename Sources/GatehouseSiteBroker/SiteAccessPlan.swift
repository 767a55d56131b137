import StrictJSON

/// Which topics the site broker lets each party use, as dynamic-security roles.
///
/// Topic filters are written with a `+` level standing for the device id, as `[site] topics`
/// is (`devices/+/messages/events/#`). A device's role is the filters with that level replaced
/// by its own id; the gateway's role keeps the `+`:
///
/// | who | publishClientSend | subscribe, publishClientReceive, unsubscribe |
/// |---|---|---|
/// | device `ID` (role `gatehouse-device-ID`) | `devices/ID/messages/events/#`, `devices/ID/methods/res/#` | `devices/ID/messages/devicebound/#`, `devices/ID/methods/POST/#` |
/// | the gateway (role `gatehouse-gateway`) | `devices/+/messages/devicebound/#`, `devices/+/methods/POST/#` | `devices/+/messages/events/#`, `devices/+/methods/res/#` |
///
/// (The command topics are the ones the site transport publishes on; docs/site-broker.md, "Topics".)
///
/// Everything else is denied by the default ACL access that `gatehouse site init` sets (all four
/// kinds `false`). mosquitto 2.0.11's dynamic security plugin has no `%c`/`%u` substitution in
/// ACL topics (it matches them literally: plugins/dynamic-security/acl.c), hence a role a device.
public struct SiteAccessPlan: Sendable, Equatable {
    /// Device → gateway (telemetry): what the site transport subscribes to.
    public var telemetryFilters: [String]
    /// Gateway → device (C2D messages, direct methods).
    public var commandFilters: [String]
    /// Device → gateway: the answers to direct methods.
    public var responseFilters: [String]

    public static let defaultTelemetryFilters = ["devices/+/messages/events/#"]
    public static let defaultCommandFilters = ["devices/+/messages/devicebound/#", "devices/+/methods/POST/#"]
    public static let defaultResponseFilters = ["devices/+/methods/res/#"]
    public static let gatewayRole = "gatehouse-gateway"
    public static let deviceRolePrefix = "gatehouse-device-"

    public static func deviceRole(_ deviceID: String) -> String { deviceRolePrefix + deviceID }

    /// Every filter must have exactly one `+` level (the device id) and no empty level.
    public init(
        telemetryFilters: [String] = Self.defaultTelemetryFilters,
        commandFilters: [String] = Self.defaultCommandFilters,
        responseFilters: [String] = Self.defaultResponseFilters
    ) throws(SiteBrokerError) {
        for filter in telemetryFilters + commandFilters + responseFilters {
            let levels = filter.split(separator: "/", omittingEmptySubsequences: false)
            let hashIsLast = !levels.dropLast().contains("#")
            guard levels.filter({ $0 == "+" }).count == 1, hashIsLast, !levels.contains(where: \.isEmpty),
                !filter.hasPrefix("$")
            else {
                throw SiteBrokerError(
                    .protocolError,
                    "`\(filter)` is not a topic filter with exactly one `+` level for the device id "
                        + "(e.g. devices/+/messages/events/#)")
            }
        }
        guard !telemetryFilters.isEmpty else {
            throw SiteBrokerError(.protocolError, "no telemetry topic filter to derive the devices' ACLs from")
        }
        self.telemetryFilters = telemetryFilters
        self.commandFilters = commandFilters
        self.responseFilters = responseFilters
    }

    /// The filter with its `+` level replaced by the device id.
    public static func forDevice(_ filter: String, _ deviceID: String) -> String {
        filter.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0 == "+" ? deviceID : String($0) }
            .joined(separator: "/")
    }

    public func telemetryTopics(of deviceID: String) -> [String] {
        telemetryFilters.map { Self.forDevice($0, deviceID) }
    }

    public func commandTopics(of deviceID: String) -> [String] {
        commandFilters.map { Self.forDevice($0, deviceID) }
    }

    /// One allow entry of a dynsec role.
    public struct ACL: Sendable, Equatable {
        public var type: String
        public var topic: String

        /// The entry as the dynamic security plugin takes it.
        public var json: JSONValue {
            ["acltype": .string(type), "topic": .string(topic), "allow": true, "priority": 0]
        }
    }

    public func deviceACLs(_ deviceID: String) -> [ACL] {
        (telemetryTopics(of: deviceID) + responseFilters.map { Self.forDevice($0, deviceID) })
            .map { ACL(type: "publishClientSend", topic: $0) }
            + commandTopics(of: deviceID).flatMap(Self.receiving)
    }

    public var gatewayACLs: [ACL] {
        (telemetryFilters + responseFilters).flatMap(Self.receiving)
            + commandFilters.map { ACL(type: "publishClientSend", topic: $0) }
    }

    /// May subscribe to, receive from and unsubscribe from `topic`.
    static func receiving(_ topic: String) -> [ACL] {
        [
            ACL(type: "subscribePattern", topic: topic), ACL(type: "publishClientReceive", topic: topic),
            ACL(type: "unsubscribePattern", topic: topic),
        ]
    }
}

/// Leaf device ids: the rules of DPS registration ids (and IoT Hub device ids' common subset):
/// 1 to 128 characters, ASCII letters and digits and `-` `.` `_` `:`. None of them is an MQTT
/// wildcard or level separator, so an id can stand in a topic and an ACL as it is.
public enum DeviceIdentifier {
    public static let maxLength = 128

    /// Why `id` is not a valid device id, or nil when it is.
    public static func problem(_ id: String) -> String? {
        if id.isEmpty { return "a device id must not be empty" }
        if id.utf8.count > maxLength {
            return "a device id has at most \(maxLength) characters (this one has \(id.utf8.count))"
        }
        if let bad = id.unicodeScalars.first(where: { !allowed($0) }) {
            let shown =
                bad.isASCII && bad.value >= 0x21 && bad.value < 0x7f
                ? "`\(bad)`" : "U+\(String(bad.value, radix: 16, uppercase: true))"
            return "a device id may hold only letters, digits and - . _ : (found \(shown))"
        }
        return nil
    }

    static func allowed(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", "-", ".", "_", ":": true
        default: false
        }
    }
}

/// A fresh password for a site-broker client: 24 bytes from the system's CSPRNG (getrandom),
/// base64url without padding — 32 characters, 192 bits. Shown once; only the broker's salted
/// hash of it is ever stored.
public enum SitePassword {
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var output: [UInt8] = []
        output.reserveCapacity(32)
        for chunk in stride(from: 0, to: bytes.count, by: 3) {
            let value = UInt32(bytes[chunk]) << 16 | UInt32(bytes[chunk + 1]) << 8 | UInt32(bytes[chunk + 2])
            for shift in [18, 12, 6, 0] { output.append(alphabet[Int((value >> UInt32(shift)) & 0x3f)]) }
        }
        return String(decoding: output, as: UTF8.self)
    }
}
