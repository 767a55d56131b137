// MQTT 3.1.1 (OASIS Standard, protocol level 4) control packets.
//
// How this module is laid out:
// - `MQTTPacket.swift` (this file): the packet enum, `QoS` and the control packet types.
// - `Connect.swift`, `Publish.swift`, `Subscribe.swift`: the packets that carry fields.
// - `MQTTDecoder.swift`: framing, i.e. turning a byte stream into whole packets.
// - `MQTTPacket+Decoding.swift` + `ByteReader.swift`: parsing and checking one packet's body.
// - `MQTTPacket+Encoding.swift` + `RemainingLength.swift`: writing packets back to bytes.
// - `MQTTProtocolError.swift`: the stable error codes the decoder throws.
// - `TopicFilter.swift`: topic name / topic filter validation and wildcard matching.

/// Quality of service of a message delivery, MQTT 3.1.1 §4.3.
public enum QoS: UInt8, Sendable, CaseIterable, Comparable {
    /// §4.3.1 "At most once": fire and forget, no acknowledgement.
    case atMostOnce = 0
    /// §4.3.2 "At least once": acknowledged with PUBACK, may be duplicated.
    case atLeastOnce = 1
    /// §4.3.3 "Exactly once": the PUBREC / PUBREL / PUBCOMP handshake.
    case exactlyOnce = 2

    public static func < (lhs: QoS, rhs: QoS) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One MQTT 3.1.1 control packet, in either direction (MQTT 3.1.1 §2 and §3).
///
/// Decode packets with ``MQTTDecoder``; encode them with ``encode(into:)`` or ``encoded``.
/// The acknowledgement packets that only carry a packet identifier (§2.3.1) hold it directly.
public enum MQTTPacket: Equatable, Sendable {
    /// §3.1 CONNECT: Client requests a connection to a Server.
    case connect(Connect)
    /// §3.2 CONNACK: acknowledges a CONNECT.
    case connack(ConnAck)
    /// §3.3 PUBLISH: an application message, in either direction.
    case publish(Publish)
    /// §3.4 PUBACK: acknowledges a QoS 1 PUBLISH.
    case puback(UInt16)
    /// §3.5 PUBREC: first acknowledgement of a QoS 2 PUBLISH.
    case pubrec(UInt16)
    /// §3.6 PUBREL: answer to PUBREC.
    case pubrel(UInt16)
    /// §3.7 PUBCOMP: answer to PUBREL, completes the QoS 2 handshake.
    case pubcomp(UInt16)
    /// §3.8 SUBSCRIBE: Client asks for subscriptions.
    case subscribe(Subscribe)
    /// §3.9 SUBACK: acknowledges a SUBSCRIBE, one return code per topic filter.
    case suback(SubAck)
    /// §3.10 UNSUBSCRIBE: Client removes subscriptions.
    case unsubscribe(Unsubscribe)
    /// §3.11 UNSUBACK: acknowledges an UNSUBSCRIBE.
    case unsuback(UInt16)
    /// §3.12 PINGREQ: keep-alive probe from the Client.
    case pingreq
    /// §3.13 PINGRESP: answer to PINGREQ.
    case pingresp
    /// §3.14 DISCONNECT: the Client is disconnecting cleanly.
    case disconnect

    /// The packet's name as the specification writes it ("PUBLISH", "SUBACK", …), for logs.
    public var name: String { packetType.name }

    /// The control packet type of this packet (§2.2.1).
    var packetType: PacketType {
        switch self {
        case .connect: .connect
        case .connack: .connack
        case .publish: .publish
        case .puback: .puback
        case .pubrec: .pubrec
        case .pubrel: .pubrel
        case .pubcomp: .pubcomp
        case .subscribe: .subscribe
        case .suback: .suback
        case .unsubscribe: .unsubscribe
        case .unsuback: .unsuback
        case .pingreq: .pingreq
        case .pingresp: .pingresp
        case .disconnect: .disconnect
        }
    }
}

/// The 4-bit control packet type in the high nibble of the first byte, MQTT 3.1.1 §2.2.1.
///
/// Values 0 and 15 are reserved and have no case: the decoder rejects them.
enum PacketType: UInt8, CaseIterable {
    case connect = 1
    case connack = 2
    case publish = 3
    case puback = 4
    case pubrec = 5
    case pubrel = 6
    case pubcomp = 7
    case subscribe = 8
    case suback = 9
    case unsubscribe = 10
    case unsuback = 11
    case pingreq = 12
    case pingresp = 13
    case disconnect = 14

    /// The low-nibble flags that §2.2.2 (Table 2.2) fixes for this type.
    ///
    /// PUBLISH is the only type whose flags carry information (DUP, QoS, RETAIN; §3.3.1); for it
    /// this is the value ``MQTTPacket`` uses when no flag is set.
    var fixedFlags: UInt8 {
        switch self {
        case .pubrel, .subscribe, .unsubscribe: 0b0010
        default: 0b0000
        }
    }

    var name: String {
        switch self {
        case .connect: "CONNECT"
        case .connack: "CONNACK"
        case .publish: "PUBLISH"
        case .puback: "PUBACK"
        case .pubrec: "PUBREC"
        case .pubrel: "PUBREL"
        case .pubcomp: "PUBCOMP"
        case .subscribe: "SUBSCRIBE"
        case .suback: "SUBACK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsuback: "UNSUBACK"
        case .pingreq: "PINGREQ"
        case .pingresp: "PINGRESP"
        case .disconnect: "DISCONNECT"
        }
    }
}
