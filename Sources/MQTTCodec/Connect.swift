/// A CONNECT packet, MQTT 3.1.1 §3.1: the first packet a Client sends on a connection.
///
/// The protocol name ("MQTT") and level (4) are implied; the decoder rejects anything else.
public struct Connect: Equatable, Sendable {
    /// §3.1.3.1 Client Identifier. May be empty only when ``cleanSession`` is true.
    public var clientID: String
    /// §3.1.2.4 Clean Session flag.
    public var cleanSession: Bool
    /// §3.1.2.10 Keep Alive, in seconds; 0 turns the keep-alive mechanism off.
    public var keepAlive: UInt16
    /// §3.1.3.4 User Name, present when the User Name Flag (§3.1.2.8) is set.
    public var username: String?
    /// §3.1.3.5 Password: binary data, 0 to 65,535 bytes. MQTT 3.1.1 (§3.1.2.9) allows a
    /// password only together with a ``username``; the decoder enforces that, the encoder
    /// writes what it is given.
    public var password: [UInt8]?
    /// §3.1.2.5 Will Flag and §3.1.3.2–§3.1.3.3 Will Topic and Will Message.
    public var will: Will?

    public init(
        clientID: String,
        cleanSession: Bool = true,
        keepAlive: UInt16 = 60,
        username: String? = nil,
        password: [UInt8]? = nil,
        will: Will? = nil
    ) {
        self.clientID = clientID
        self.cleanSession = cleanSession
        self.keepAlive = keepAlive
        self.username = username
        self.password = password
        self.will = will
    }

    /// The Will Message the Server publishes if the connection ends without a DISCONNECT
    /// (MQTT 3.1.1 §3.1.2.5–§3.1.2.7, §3.1.3.2–§3.1.3.3).
    public struct Will: Equatable, Sendable {
        /// §3.1.3.2 Will Topic: a topic name, so no wildcards (§4.7).
        public var topic: String
        /// §3.1.3.3 Will Message: binary data, 0 to 65,535 bytes.
        public var payload: [UInt8]
        /// §3.1.2.6 Will QoS.
        public var qos: QoS
        /// §3.1.2.7 Will Retain.
        public var retain: Bool

        public init(topic: String, payload: [UInt8], qos: QoS = .atMostOnce, retain: Bool = false) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
        }
    }
}

/// A CONNACK packet, MQTT 3.1.1 §3.2: the Server's answer to CONNECT.
public struct ConnAck: Equatable, Sendable {
    /// §3.2.2.2 Session Present. Must be false when ``returnCode`` is not ``ReturnCode/accepted``.
    public var sessionPresent: Bool
    /// §3.2.2.3 Connect Return code.
    public var returnCode: ReturnCode

    public init(sessionPresent: Bool = false, returnCode: ReturnCode = .accepted) {
        self.sessionPresent = sessionPresent
        self.returnCode = returnCode
    }

    /// A Connect Return code, MQTT 3.1.1 §3.2.2.3 (Table 3.1). Values 6–255 are reserved;
    /// the decoder rejects them with ``MQTTProtocolError/Code/invalidReturnCode``.
    public struct ReturnCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: UInt8

        public init(rawValue: UInt8) { self.rawValue = rawValue }

        /// 0x00 Connection Accepted.
        public static let accepted = ReturnCode(rawValue: 0)
        /// 0x01 The Server does not support the level of the MQTT protocol requested.
        public static let unacceptableProtocolVersion = ReturnCode(rawValue: 1)
        /// 0x02 The Client identifier is correct UTF-8 but not allowed by the Server.
        public static let identifierRejected = ReturnCode(rawValue: 2)
        /// 0x03 The Network Connection has been made but the MQTT service is unavailable.
        public static let serverUnavailable = ReturnCode(rawValue: 3)
        /// 0x04 The data in the user name or password is malformed.
        public static let badUsernameOrPassword = ReturnCode(rawValue: 4)
        /// 0x05 The Client is not authorized to connect.
        public static let notAuthorized = ReturnCode(rawValue: 5)

        /// Whether the value is one Table 3.1 defines (0–5).
        public var isDefined: Bool { rawValue <= 5 }

        public var description: String {
            switch self {
            case .accepted: "accepted"
            case .unacceptableProtocolVersion: "unacceptableProtocolVersion"
            case .identifierRejected: "identifierRejected"
            case .serverUnavailable: "serverUnavailable"
            case .badUsernameOrPassword: "badUsernameOrPassword"
            case .notAuthorized: "notAuthorized"
            default: "reserved(\(rawValue))"
            }
        }
    }
}
