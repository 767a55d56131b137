import FoundationEssentials
import GatehouseBasics
import IoTHubWire

// AMQP 1.0 messages as DevHub's IoT Hub endpoint reads and writes them (docs/protocols.md §3),
// in plain Swift: `ProtonCodec.swift` converts them to and from proton's encoding.

/// A message-id or correlation-id: AMQP allows four types, and the SDKs care which one comes
/// back (the C SDK's CBS wants its ulong, its methods a uuid; docs/protocols.md §3.4).
enum AMQPMessageID: Hashable, Sendable, CustomStringConvertible {
    case ulong(UInt64)
    case uuid(UUID)
    case binary([UInt8])
    case string(String)

    /// The text IoT Hub shows for it: decimal, lowercase uuid, hex, or the string.
    var description: String {
        switch self {
        case .ulong(let value): String(value)
        case .uuid(let value): value.uuidString.lowercased()
        case .binary(let bytes): Hex.string(bytes)
        case .string(let text): text
        }
    }
}

/// An AMQP value in the maps DevHub reads (application properties, message annotations). Types
/// DevHub never needs to tell apart (lists, maps, decimals…) become `.other` with proton's
/// rendering, so a hostile peer's nesting is not walked.
enum AMQPValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// Any signed or unsigned integer type up to 64 bits, except ulong values above Int64.max.
    case int(Int64)
    /// An AMQP int (int32): what `status-code` and `IoThub-status` must be on the wire.
    case int32(Int32)
    case double(Double)
    /// Milliseconds since 1970.
    case timestamp(Int64)
    case uuid(UUID)
    case string(String)
    case symbol(String)
    case binary([UInt8])
    case other(String)

    /// The value as property-bag text, the form DevHub stores (nil for null).
    var text: String? {
        switch self {
        case .null: nil
        case .bool(let value): value ? "true" : "false"
        case .int(let value): String(value)
        case .int32(let value): String(value)
        case .double(let value): String(value)
        case .timestamp(let value): DevHubTime.iso8601(Date(timeIntervalSince1970: Double(value) / 1000))
        case .uuid(let value): value.uuidString.lowercased()
        case .string(let text), .symbol(let text), .other(let text): text
        case .binary(let bytes): String(validating: bytes, as: UTF8.self) ?? Data(bytes).base64EncodedString()
        }
    }

    var stringValue: String? {
        switch self {
        case .string(let text), .symbol(let text): text
        default: nil
        }
    }

    var intValue: Int64? {
        switch self {
        case .int(let value): value
        case .int32(let value): Int64(value)
        default: nil
        }
    }
}

/// One AMQP message: the properties section, application properties, message annotations and
/// the body (docs/protocols.md §3.2). Fields DevHub never reads or writes are left out.
struct AMQPMessage: Equatable, Sendable {
    enum Body: Equatable, Sendable {
        case none
        /// One or more data sections, concatenated.
        case data([UInt8])
        /// An amqp-value section.
        case value(AMQPValue)
    }

    var messageID: AMQPMessageID?
    var correlationID: AMQPMessageID?
    var userID: [UInt8]?
    var to: String?
    var subject: String?
    var replyTo: String?
    var contentType: String?
    var contentEncoding: String?
    /// Milliseconds since 1970; nil when absent.
    var absoluteExpiryTime: Int64?
    var creationTime: Int64?
    /// In the sender's order; names are strings (IoT Hub's application properties).
    var applicationProperties: [(String, AMQPValue)] = []
    /// Keys are symbols.
    var messageAnnotations: [(String, AMQPValue)] = []
    var body: Body = .none

    init() {}

    static func == (lhs: AMQPMessage, rhs: AMQPMessage) -> Bool {
        lhs.messageID == rhs.messageID && lhs.correlationID == rhs.correlationID && lhs.userID == rhs.userID
            && lhs.to == rhs.to && lhs.subject == rhs.subject && lhs.replyTo == rhs.replyTo
            && lhs.contentType == rhs.contentType && lhs.contentEncoding == rhs.contentEncoding
            && lhs.absoluteExpiryTime == rhs.absoluteExpiryTime && lhs.creationTime == rhs.creationTime
            && lhs.applicationProperties.elementsEqual(rhs.applicationProperties, by: { $0 == $1 })
            && lhs.messageAnnotations.elementsEqual(rhs.messageAnnotations, by: { $0 == $1 })
            && lhs.body == rhs.body
    }

    func applicationProperty(_ name: String) -> AMQPValue? {
        applicationProperties.first { $0.0 == name }?.1
    }

    func annotation(_ name: String) -> AMQPValue? {
        messageAnnotations.first { $0.0 == name }?.1
    }

    /// The body's bytes: the data sections, or a string or binary amqp-value.
    var bodyBytes: [UInt8] {
        switch body {
        case .none: []
        case .data(let bytes): bytes
        case .value(.string(let text)): Array(text.utf8)
        case .value(.binary(let bytes)): bytes
        case .value(let other): Array((other.text ?? "").utf8)
        }
    }
}

// MARK: - IoT Hub's mapping of message properties

extension AMQPMessage {
    /// The property bag IoT Hub shows for a device-to-cloud message received over AMQP, the same
    /// names as over MQTT (docs/protocols.md §2.2, §3.2): the AMQP properties as `$.mid`, `$.cid`,
    /// `$.uid`, `$.ct`, `$.ce`, `$.exp`, `$.ctime`, the annotation `dt-subject` as `$.sub`, then
    /// the application properties in the device's order.
    var telemetryProperties: [MessageProperty] {
        var properties: [MessageProperty] = []
        if let messageID { properties.append(MessageProperty("$.mid", messageID.description)) }
        if let correlationID { properties.append(MessageProperty("$.cid", correlationID.description)) }
        if let userID { properties.append(MessageProperty("$.uid", AMQPValue.binary(userID).text)) }
        if let contentType { properties.append(MessageProperty("$.ct", contentType)) }
        if let contentEncoding { properties.append(MessageProperty("$.ce", contentEncoding)) }
        if let absoluteExpiryTime {
            properties.append(MessageProperty("$.exp", AMQPValue.timestamp(absoluteExpiryTime).text))
        }
        if let creationTime { properties.append(MessageProperty("$.ctime", AMQPValue.timestamp(creationTime).text)) }
        if let subject = annotation("dt-subject")?.text { properties.append(MessageProperty("$.sub", subject)) }
        if let schema = annotation("dt-dataschema")?.text { properties.append(MessageProperty("$.schema", schema)) }
        for (name, value) in applicationProperties { properties.append(MessageProperty(name, value.text)) }
        return properties
    }

    /// A cloud-to-device message as IoT Hub delivers it over AMQP (docs/protocols.md §3.2, §3.4):
    /// message-id, `to`, the system properties of the control API's request in their AMQP
    /// fields, the others as string application properties (a null value as the empty string:
    /// the C SDK takes only strings), the lock token and counters as annotations, the payload as
    /// one data section.
    static func cloudToDevice(_ message: C2DMessage, lockToken: UUID, deliveryCount: Int) -> AMQPMessage {
        var amqp = AMQPMessage()
        amqp.messageID = .string(message.messageID)
        amqp.to = "/devices/\(message.deviceID)/messages/deviceBound"
        for property in message.properties {
            let value = property.value ?? ""
            switch property.name {
            case "$.mid": amqp.messageID = .string(value)
            case "$.cid": amqp.correlationID = .string(value)
            case "$.uid": amqp.userID = Array(value.utf8)
            case "$.ct": amqp.contentType = value
            case "$.ce": amqp.contentEncoding = value
            case "$.to": amqp.to = value
            default: amqp.applicationProperties.append((property.name, .string(value)))
            }
        }
        amqp.messageAnnotations = [
            ("x-opt-lock-token", .uuid(lockToken)),
            ("x-opt-sequence-number", .int(message.sequence)),
            ("iothub-enqueuedtime", .timestamp(Int64(message.createdAt.timeIntervalSince1970 * 1000))),
            ("iothub-deliverycount", .int32(Int32(clamping: deliveryCount))),
        ]
        amqp.body = .data(message.payload)
        return amqp
    }
}
