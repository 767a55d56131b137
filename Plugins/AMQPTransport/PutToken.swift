import GatehouseBasics

/// A CBS put-token request (docs/protocols.md §3.1, §3.4): properties `message-id` (a ulong that
/// counts per connection) and `reply-to` `cbs`; application properties `operation` = `put-token`,
/// `type` and `name` (the audience); the body an AMQP value string, the SAS token itself.
///
/// The token is a secret: `description` leaves it out, so a request can be logged whole.
struct PutTokenRequest: Sendable, Equatable, CustomStringConvertible {
    var messageID: UInt64
    var audience: String
    var token: String
    var type: String = CBS.tokenType

    static let operation = "put-token"
    static let replyTo = "cbs"

    /// The application properties, in the order they are written.
    var applicationProperties: [(String, String)] {
        [("operation", Self.operation), ("type", type), ("name", audience)]
    }

    var description: String { "put-token #\(messageID) for \(audience)" }

    static func == (a: Self, b: Self) -> Bool {
        a.messageID == b.messageID && a.audience == b.audience && a.token == b.token && a.type == b.type
    }
}

/// The CBS node's answer to a put-token: `correlation-id` = the request's `message-id`,
/// `status-code` (an int, HTTP-like) and an optional `status-description`. uAMQP's generic
/// management client spells them `statusCode`/`statusDescription`: both are read.
struct PutTokenResponse: Sendable, Equatable {
    var correlationID: UInt64
    var statusCode: Int
    var statusDescription: String

    /// 200–299 is success (202 as well as 200, as the SDKs accept).
    var succeeded: Bool { (200...299).contains(statusCode) }

    /// The response in `properties` (application properties, any integer type for the status)
    /// and `correlationID`; nil when it is not a put-token response.
    init?(correlationID: UInt64?, properties: [String: AMQPScalar]) {
        guard let correlationID else { return nil }
        guard let status = (properties["status-code"] ?? properties["statusCode"])?.integer else { return nil }
        self.correlationID = correlationID
        self.statusCode = status
        self.statusDescription =
            (properties["status-description"] ?? properties["statusDescription"])?.text ?? ""
    }

    init(correlationID: UInt64, statusCode: Int, statusDescription: String) {
        self.correlationID = correlationID
        self.statusCode = statusCode
        self.statusDescription = statusDescription
    }
}

/// One AMQP value of the kinds gatehouse reads from property maps, ids and annotations.
enum AMQPScalar: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case symbol(String)
    case binary([UInt8])
    case uuid([UInt8])
    case timestamp(Int64)
    /// A map, list, array or described value: present, not read.
    case other

    /// An integer of any AMQP integer type that fits in `Int`.
    var integer: Int? {
        switch self {
        case .int(let value): Int(exactly: value)
        case .uint(let value): Int(exactly: value)
        default: nil
        }
    }

    /// The value as property text: strings and symbols as they are, numbers in decimal, a uuid
    /// in its 8-4-4-4-12 form, binary as UTF-8 (repaired), a timestamp in milliseconds.
    var text: String? {
        switch self {
        case .null, .other: nil
        case .bool(let value): value ? "true" : "false"
        case .int(let value): String(value)
        case .uint(let value): String(value)
        case .double(let value): String(value)
        case .string(let value), .symbol(let value): value
        case .binary(let bytes): String(decoding: bytes, as: UTF8.self)
        case .uuid(let bytes): Self.uuidText(bytes)
        case .timestamp(let ms): String(ms)
        }
    }

    static func uuidText(_ bytes: [UInt8]) -> String {
        guard bytes.count == 16 else { return Hex.string(bytes) }
        // 8-4-4-4-12 hex digits: the groups of 4, 2, 2, 2 and 6 bytes.
        return [bytes[0..<4], bytes[4..<6], bytes[6..<8], bytes[8..<10], bytes[10..<16]].map { Hex.string($0) }
            .joined(separator: "-")
    }
}
