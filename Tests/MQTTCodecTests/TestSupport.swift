import MQTTCodec

/// Decodes every packet in `bytes` with a fresh decoder; throws if the decoder throws.
func decodeAll(_ bytes: [UInt8], maxPacketSize: Int = 268_435_455) throws(MQTTProtocolError)
    -> [MQTTPacket]
{
    var decoder = MQTTDecoder(maxPacketSize: maxPacketSize)
    decoder.append(bytes)
    var packets: [MQTTPacket] = []
    while let packet = try decoder.next() { packets.append(packet) }
    return packets
}

/// The packet `bytes` hold, or nil unless they hold exactly one complete packet.
func decodeOne(_ bytes: [UInt8]) throws(MQTTProtocolError) -> MQTTPacket? {
    var decoder = MQTTDecoder()
    decoder.append(bytes)
    let packet = try decoder.next()
    return decoder.bufferedByteCount == 0 ? packet : nil
}

/// The error a fresh decoder throws for `bytes`, or nil if it throws none.
func decodeError(_ bytes: [UInt8], maxPacketSize: Int = 268_435_455) -> MQTTProtocolError? {
    do throws(MQTTProtocolError) {
        _ = try decodeAll(bytes, maxPacketSize: maxPacketSize)
        return nil
    } catch {
        return error
    }
}

/// A fixed header (first byte + minimal Remaining Length) followed by `body`.
func frame(_ firstByte: UInt8, _ body: [UInt8]) -> [UInt8] {
    var bytes = [firstByte]
    var rest = body.count
    repeat {
        var byte = UInt8(rest % 128)
        rest /= 128
        if rest > 0 { byte |= 0x80 }
        bytes.append(byte)
    } while rest > 0
    return bytes + body
}

/// A length-prefixed MQTT string (§1.5.3) from raw UTF-8 bytes.
func mqttString(_ utf8: [UInt8]) -> [UInt8] {
    [UInt8(utf8.count >> 8), UInt8(utf8.count & 0xFF)] + utf8
}

/// A length-prefixed MQTT string (§1.5.3).
func mqttString(_ string: String) -> [UInt8] { mqttString(Array(string.utf8)) }

/// A CONNECT body: protocol name, level, flags, keep alive 60, then `payload`.
func connectBody(
    name: String = "MQTT", level: UInt8 = 4, flags: UInt8, payload: [UInt8]
) -> [UInt8] {
    mqttString(name) + [level, flags, 0x00, 0x3C] + payload
}

/// One of each packet type, plus variants exercising every optional field.
let samplePackets: [MQTTPacket] = [
    .connect(Connect(clientID: "client-1")),
    .connect(Connect(clientID: "", cleanSession: true, keepAlive: 0)),
    .connect(
        Connect(
            clientID: "gatehouse-site-7", cleanSession: false, keepAlive: 65_535,
            username: "site7", password: [0x00, 0xFF, 0x10],
            will: Connect.Will(
                topic: "sites/7/status", payload: Array("offline".utf8), qos: .exactlyOnce, retain: true))),
    .connect(Connect(clientID: "u-only", username: "üser")),
    .connect(Connect(clientID: "w0", will: Connect.Will(topic: "w", payload: []))),
    .connack(ConnAck(sessionPresent: true, returnCode: .accepted)),
    .connack(ConnAck(sessionPresent: false, returnCode: .accepted)),
    .connack(ConnAck(returnCode: .unacceptableProtocolVersion)),
    .connack(ConnAck(returnCode: .identifierRejected)),
    .connack(ConnAck(returnCode: .serverUnavailable)),
    .connack(ConnAck(returnCode: .badUsernameOrPassword)),
    .connack(ConnAck(returnCode: .notAuthorized)),
    .publish(Publish(topic: "a", payload: [])),
    .publish(Publish(topic: "sensors/temp", payload: Array("21.5".utf8), retain: true)),
    .publish(Publish(topic: "q1", payload: [1, 2, 3], qos: .atLeastOnce, packetID: 1)),
    .publish(
        Publish(
            topic: "q2/ü/€", payload: [0], qos: .exactlyOnce, retain: true, dup: true, packetID: 65_535)),
    .publish(
        Publish(
            topic: "big", payload: Array(repeating: 0xAB, count: 300), qos: .atLeastOnce, packetID: 9)),
    .publish(Publish(topic: "/", payload: [], qos: .atLeastOnce, dup: true, packetID: 2)),
    .puback(1),
    .pubrec(0xFFFF),
    .pubrel(7),
    .pubcomp(7),
    .subscribe(
        Subscribe(packetID: 10, topics: [TopicSubscription(filter: "sport/#", qos: .atMostOnce)])),
    .subscribe(
        Subscribe(
            packetID: 11,
            topics: [
                TopicSubscription(filter: "+/tennis/+", qos: .atLeastOnce),
                TopicSubscription(filter: "#", qos: .exactlyOnce),
                TopicSubscription(filter: "$SYS/broker/+", qos: .atMostOnce),
            ])),
    .suback(SubAck(packetID: 10, returnCodes: [0])),
    .suback(SubAck(packetID: 11, returnCodes: [0, 1, 2, SubAck.failure])),
    .unsubscribe(Unsubscribe(packetID: 12, filters: ["sport/#"])),
    .unsubscribe(Unsubscribe(packetID: 13, filters: ["a/+", "b", "/"])),
    .unsuback(12),
    .pingreq,
    .pingresp,
    .disconnect,
]
