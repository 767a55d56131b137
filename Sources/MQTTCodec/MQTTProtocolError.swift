/// A violation of MQTT 3.1.1 found while decoding, MQTT 3.1.1 §4.8: the receiver must close
/// the Network Connection.
///
/// ``code`` is a stable identifier for logs and tests; ``message`` is a human-readable
/// explanation naming the packet, the field and the spec section.
public struct MQTTProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "MQTT protocol error [\(code.rawValue)]: \(message)" }

    /// The CONNACK return code a Server should send before closing the connection, if the
    /// specification asks for one (§3.1.2.2 for the protocol level, §3.1.3.1 for the client
    /// identifier). nil means: just close the connection.
    public var connAckReturnCode: ConnAck.ReturnCode? {
        switch code {
        case .unsupportedProtocolLevel: .unacceptableProtocolVersion
        case .identifierRejected: .identifierRejected
        default: nil
        }
    }

    /// A stable error identifier. The raw value equals the constant's name.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String

        public init(rawValue: String) { self.rawValue = rawValue }

        public var description: String { rawValue }

        // MARK: Framing (§2.2)

        /// §2.2.1: packet type 0 or 15, both reserved.
        public static let unknownPacketType = Code(rawValue: "unknownPacketType")
        /// §2.2.2: fixed-header flag bits differ from what Table 2.2 requires.
        public static let reservedFlags = Code(rawValue: "reservedFlags")
        /// §2.2.3: the Remaining Length field has a continuation bit in its fourth byte.
        public static let malformedRemainingLength = Code(rawValue: "malformedRemainingLength")
        /// The packet's total size exceeds the decoder's `maxPacketSize`.
        public static let packetTooLarge = Code(rawValue: "packetTooLarge")
        /// A field runs past the end of the packet given by its Remaining Length (§2.2.3).
        public static let truncated = Code(rawValue: "truncated")
        /// The packet's fields end before its Remaining Length does (§2.2.3).
        public static let trailingBytes = Code(rawValue: "trailingBytes")

        // MARK: Field encodings (§1.5, §2.3, §4.7)

        /// §1.5.3: a string is not well-formed UTF-8 or contains U+0000.
        public static let invalidUTF8 = Code(rawValue: "invalidUTF8")
        /// A QoS value of 3 (§3.3.1.2 PUBLISH, §3.1.2.6 Will QoS, §3.8.3 requested QoS).
        public static let invalidQoS = Code(rawValue: "invalidQoS")
        /// §3.3.1.1: DUP set on a QoS 0 PUBLISH.
        public static let dupWithQoS0 = Code(rawValue: "dupWithQoS0")
        /// §2.3.1: a Packet Identifier of 0.
        public static let zeroPacketID = Code(rawValue: "zeroPacketID")
        /// §4.7, §3.3.2.1: a topic name is empty or contains a wildcard.
        public static let invalidTopic = Code(rawValue: "invalidTopic")
        /// §4.7.1: a topic filter is empty or misuses `+` / `#`.
        public static let invalidTopicFilter = Code(rawValue: "invalidTopicFilter")

        // MARK: CONNECT (§3.1)

        /// §3.1.2.1: the protocol name is not "MQTT".
        public static let invalidProtocol = Code(rawValue: "invalidProtocol")
        /// §3.1.2.2: the protocol level is not 4. A Server answers CONNACK 0x01 first.
        public static let unsupportedProtocolLevel = Code(rawValue: "unsupportedProtocolLevel")
        /// §3.1.2.3: the reserved bit 0 of the Connect Flags is set.
        public static let reservedConnectFlag = Code(rawValue: "reservedConnectFlag")
        /// §3.1.2.5–§3.1.2.7: Will QoS or Will Retain set without the Will Flag.
        public static let inconsistentWillFlags = Code(rawValue: "inconsistentWillFlags")
        /// §3.1.2.9: Password Flag set without the User Name Flag.
        public static let passwordWithoutUsername = Code(rawValue: "passwordWithoutUsername")
        /// §3.1.3.1: an empty Client Identifier with Clean Session 0. A Server answers
        /// CONNACK 0x02 first.
        public static let identifierRejected = Code(rawValue: "identifierRejected")

        // MARK: CONNACK (§3.2)

        /// §3.2.2.1: bits 7–1 of the Connect Acknowledge Flags are set.
        public static let reservedConnAckFlags = Code(rawValue: "reservedConnAckFlags")
        /// §3.2.2.2: Session Present set with a non-zero return code.
        public static let sessionPresentWithError = Code(rawValue: "sessionPresentWithError")
        /// A reserved return code: CONNACK 6–255 (§3.2.2.3) or a SUBACK code other than
        /// 0x00, 0x01, 0x02, 0x80 (§3.9.3).
        // swift-format-ignore: DontRepeatTypeInStaticProperties
        public static let invalidReturnCode = Code(rawValue: "invalidReturnCode")

        // MARK: SUBSCRIBE, SUBACK, UNSUBSCRIBE (§3.8–§3.10)

        /// §3.8.3: a SUBSCRIBE without any topic filter.
        public static let emptySubscribe = Code(rawValue: "emptySubscribe")
        /// §3.8.3: bits 7–2 of a requested-QoS byte are set.
        public static let reservedSubscriptionOptions = Code(rawValue: "reservedSubscriptionOptions")
        /// §3.9.3: a SUBACK without any return code.
        public static let emptySubAck = Code(rawValue: "emptySubAck")
        /// §3.10.3: an UNSUBSCRIBE without any topic filter.
        public static let emptyUnsubscribe = Code(rawValue: "emptyUnsubscribe")
    }
}
