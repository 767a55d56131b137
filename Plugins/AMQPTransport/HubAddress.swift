/// IoT Hub's AMQP node addresses for one device identity (docs/protocols.md §3.2), in the form
/// Azure's C SDK uses: `amqps://{hub}/devices/{deviceId}/…`, the device id as it is (the SDK does
/// not percent-encode it; gatehouse's device ids are letters, digits and `-._:` anyway).
struct HubAddress: Sendable, Equatable {
    /// The hub's host name: the TLS name, `open.hostname`, the CBS audience's first segment.
    var hostname: String
    var deviceID: String

    /// The CBS audience and the SAS token's resource: `{hub}/devices/{deviceId}`.
    var audience: String { "\(hostname)/devices/\(deviceID)" }

    /// Telemetry: the target of the device's sender link.
    var telemetry: String { "amqps://\(audience)/messages/events" }

    /// Cloud-to-device messages: the source of the device's receiver link.
    var cloudToDevice: String { "amqps://\(audience)/messages/devicebound" }

    /// Direct methods: the source of the requests receiver and the target of the responses
    /// sender.
    var methods: String { "amqps://\(audience)/methods/devicebound" }

    /// Link names, unique on a connection (one identity a connection at most once).
    var telemetryLinkName: String { "events-\(deviceID)" }
    var cloudToDeviceLinkName: String { "c2d-\(deviceID)" }
    var methodRequestsLinkName: String { "methods_requests_link-\(deviceID)" }
    var methodResponsesLinkName: String { "methods_responses_link-\(deviceID)" }

    /// `com.microsoft:channel-correlation-id` of the two method links: the same value on both,
    /// the device id, as the C SDK sends it (docs/protocols.md §3.4).
    var methodsChannelCorrelationID: String { deviceID }
}

/// The claims-based-security node (docs/protocols.md §3.1).
enum CBS {
    static let node = "$cbs"
    static let senderLinkName = "$cbs-sender"
    static let receiverLinkName = "$cbs-receiver"
    /// The token type Azure's C SDK sends.
    static let tokenType = "servicebus.windows.net:sastoken"
}
