/// A PUBLISH packet, MQTT 3.1.1 §3.3: one application message, sent by a Client or a Server.
///
/// ``packetID`` is present exactly when ``qos`` is above ``QoS/atMostOnce`` (§2.3.1, §3.3.2.2).
/// The decoder guarantees that; the encoder requires it (see ``MQTTPacket/encode(into:)``).
public struct Publish: Equatable, Sendable {
    /// §3.3.2.1 Topic Name: at least one character, no wildcards (§4.7).
    public var topic: String
    /// §3.3.3 Payload: everything after the variable header, possibly empty.
    public var payload: [UInt8]
    /// §3.3.1.2 QoS level.
    public var qos: QoS
    /// §3.3.1.3 RETAIN flag.
    public var retain: Bool
    /// §3.3.1.1 DUP flag: this may be a re-delivery. Always false at QoS 0.
    public var dup: Bool
    /// §3.3.2.2 Packet Identifier, non-zero; nil at QoS 0.
    public var packetID: UInt16?

    public init(
        topic: String,
        payload: [UInt8],
        qos: QoS = .atMostOnce,
        retain: Bool = false,
        dup: Bool = false,
        packetID: UInt16? = nil
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packetID = packetID
    }
}

/// A PUBLISH that ``MQTTDecoder`` consumed without buffering it because it exceeds the decoder's
/// `maxPacketSize` (``MQTTDecoder/OversizedPublishes/skip(keepingHead:)``). Its variable header
/// was checked as strictly as any PUBLISH's; its payload was not kept beyond ``head``.
public struct SkippedPublish: Equatable, Sendable {
    /// §3.3.2.1 Topic Name.
    public var topic: String
    /// §3.3.1.2 QoS level.
    public var qos: QoS
    /// §3.3.1.3 RETAIN flag.
    public var retain: Bool
    /// §3.3.1.1 DUP flag.
    public var dup: Bool
    /// §3.3.2.2 Packet Identifier, non-zero; nil at QoS 0. What a PUBACK must name.
    public var packetID: UInt16?
    /// The payload's first bytes, at most the decoder's `keepingHead`.
    public var head: [UInt8]
    /// The payload's full size in bytes.
    public var payloadSize: Int
    /// The whole packet's size in bytes, fixed header included.
    public var packetSize: Int

    public init(
        topic: String, qos: QoS, retain: Bool = false, dup: Bool = false, packetID: UInt16? = nil,
        head: [UInt8] = [], payloadSize: Int, packetSize: Int
    ) {
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packetID = packetID
        self.head = head
        self.payloadSize = payloadSize
        self.packetSize = packetSize
    }
}
