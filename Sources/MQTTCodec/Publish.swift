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
