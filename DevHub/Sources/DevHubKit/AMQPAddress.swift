import IoTHubWire

/// A device resource in IoT Hub's AMQP names (docs/protocols.md §3.1, §3.2): a link address
/// `amqps://{host}/devices/{deviceId}/messages/events` (or the bare path `/devices/…`), or a CBS
/// audience `{host}/devices/{deviceId}`. The device id may be percent-encoded (the C# SDK
/// encodes it, the C SDK does not); the host is optional in link addresses.
struct AMQPDeviceAddress: Equatable, Sendable {
    enum Endpoint: Equatable, Sendable {
        /// A CBS audience: the device itself.
        case device
        /// `…/messages/events`: device-to-cloud telemetry (the client sends).
        case telemetry
        /// `…/messages/devicebound`: cloud-to-device messages (the client receives).
        case cloudToDevice
        /// `…/methods/devicebound`: direct method requests (client receives) and responses (client sends).
        case methods
        /// `…/twin`: twin requests (client sends) and responses (client receives).
        case twin
    }

    var hostName: String?
    var deviceID: String
    var moduleID: String?
    var endpoint: Endpoint

    /// Parses a link address; nil if it is not one of a device's (§3.2).
    init?(linkAddress address: String) {
        self.init(address, hostRequired: false)
        guard endpoint != .device else { return nil }
    }

    /// Parses a CBS `name` (the token's audience); nil if it is not a device's.
    init?(audience: String) {
        self.init(audience, hostRequired: true)
        guard endpoint == .device else { return nil }
    }

    private init?(_ text: String, hostRequired: Bool) {
        var rest = Substring(text)
        if let query = rest.firstIndex(of: "?") { rest = rest[..<query] }
        for scheme in ["amqps://", "amqp://", "sb://"] where rest.lowercased().hasPrefix(scheme) {
            rest = rest.dropFirst(scheme.count)
            break
        }
        var segments = rest.split(separator: "/", omittingEmptySubsequences: false)
        if segments.last == "" { segments.removeLast() }  // a trailing slash
        guard let first = segments.first else { return nil }
        if first.isEmpty {
            guard !hostRequired else { return nil }
            hostName = nil
        } else {
            hostName = String(first)
        }
        segments.removeFirst()
        guard segments.count >= 2, segments[0].lowercased() == "devices" else { return nil }
        deviceID = PropertyBag.percentDecode(segments[1])
        guard Hub.isValidDeviceID(deviceID) else { return nil }
        var tail = segments.dropFirst(2).map { $0.lowercased() }
        if tail.first == "modules" {
            guard tail.count >= 2 else { return nil }
            moduleID = PropertyBag.percentDecode(segments[3])
            tail.removeFirst(2)
        } else {
            moduleID = nil
        }
        switch tail {
        case []: endpoint = .device
        case ["messages", "events"]: endpoint = .telemetry
        case ["messages", "devicebound"]: endpoint = .cloudToDevice
        case ["methods", "devicebound"]: endpoint = .methods
        case ["twin"]: endpoint = .twin
        default: return nil
        }
    }
}
