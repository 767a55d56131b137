import MQTTCodec
import Testing

/// Exact byte layouts from the MQTT 3.1.1 specification (§2.2.3, §3).
@Suite("Known byte vectors")
struct SpecVectorTests {
    struct Vector: Sendable, CustomTestStringConvertible {
        var packet: MQTTPacket
        var bytes: [UInt8]
        var testDescription: String { packet.name }
    }

    static let vectors: [Vector] = [
        // §3.1: CONNECT "MQTT" level 4, Clean Session, keep alive 60, client id "client".
        Vector(
            packet: .connect(Connect(clientID: "client", cleanSession: true, keepAlive: 60)),
            bytes: [
                0x10, 0x12, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3C,
                0x00, 0x06, 0x63, 0x6C, 0x69, 0x65, 0x6E, 0x74,
            ]),
        // §3.1.2.3: every flag set: user name, password, will retain, will QoS 1, will, clean.
        Vector(
            packet: .connect(
                Connect(
                    clientID: "id", cleanSession: true, keepAlive: 10, username: "u", password: [0x70],
                    will: Connect.Will(topic: "w", payload: [0x01], qos: .atLeastOnce, retain: true))),
            bytes: [
                0x10, 0x1A, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0xEE, 0x00, 0x0A,
                0x00, 0x02, 0x69, 0x64,  // client id "id"
                0x00, 0x01, 0x77,  // will topic "w"
                0x00, 0x01, 0x01,  // will message
                0x00, 0x01, 0x75,  // user name "u"
                0x00, 0x01, 0x70,  // password
            ]),
        Vector(packet: .connack(ConnAck(sessionPresent: true)), bytes: [0x20, 0x02, 0x01, 0x00]),
        Vector(
            packet: .connack(ConnAck(returnCode: .notAuthorized)), bytes: [0x20, 0x02, 0x00, 0x05]),
        // §3.3: QoS 1 PUBLISH to "a/b", packet id 10, payload "hi".
        Vector(
            packet: .publish(
                Publish(topic: "a/b", payload: Array("hi".utf8), qos: .atLeastOnce, packetID: 10)),
            bytes: [0x32, 0x09, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x0A, 0x68, 0x69]),
        Vector(
            packet: .publish(
                Publish(topic: "t", payload: [], qos: .exactlyOnce, retain: true, dup: true, packetID: 1)
            ),
            bytes: [0x3D, 0x05, 0x00, 0x01, 0x74, 0x00, 0x01]),
        Vector(packet: .puback(0x1234), bytes: [0x40, 0x02, 0x12, 0x34]),
        Vector(packet: .pubrec(1), bytes: [0x50, 0x02, 0x00, 0x01]),
        Vector(packet: .pubrel(1), bytes: [0x62, 0x02, 0x00, 0x01]),
        Vector(packet: .pubcomp(1), bytes: [0x70, 0x02, 0x00, 0x01]),
        // §3.8.3 example: "a/b" QoS 1 and "c/d" QoS 2.
        Vector(
            packet: .subscribe(
                Subscribe(
                    packetID: 10,
                    topics: [
                        TopicSubscription(filter: "a/b", qos: .atLeastOnce),
                        TopicSubscription(filter: "c/d", qos: .exactlyOnce),
                    ])),
            bytes: [
                0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x01, 0x00, 0x03, 0x63, 0x2F,
                0x64, 0x02,
            ]),
        // §3.9.3 example: granted QoS 0, failure, granted QoS 2.
        Vector(
            packet: .suback(SubAck(packetID: 10, returnCodes: [0x00, 0x80, 0x02])),
            bytes: [0x90, 0x05, 0x00, 0x0A, 0x00, 0x80, 0x02]),
        Vector(
            packet: .unsubscribe(Unsubscribe(packetID: 10, filters: ["a/b", "c/d"])),
            bytes: [
                0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, 0x61, 0x2F, 0x62, 0x00, 0x03, 0x63, 0x2F, 0x64,
            ]),
        Vector(packet: .unsuback(10), bytes: [0xB0, 0x02, 0x00, 0x0A]),
        Vector(packet: .pingreq, bytes: [0xC0, 0x00]),
        Vector(packet: .pingresp, bytes: [0xD0, 0x00]),
        Vector(packet: .disconnect, bytes: [0xE0, 0x00]),
    ]

    @Test("encodes to the exact bytes", arguments: vectors)
    func encodes(vector: Vector) {
        #expect(vector.packet.encoded == vector.bytes)
    }

    @Test("decodes from the exact bytes", arguments: vectors)
    func decodes(vector: Vector) throws {
        #expect(try decodeOne(vector.bytes) == vector.packet)
    }

    /// §2.2.3 Table 2.4: the boundaries of the 1- to 4-byte Remaining Length encodings.
    static let remainingLengths: [(length: Int, encoding: [UInt8])] = [
        (0, [0x00]),
        (127, [0x7F]),
        (128, [0x80, 0x01]),
        (16_383, [0xFF, 0x7F]),
        (16_384, [0x80, 0x80, 0x01]),
        (2_097_151, [0xFF, 0xFF, 0x7F]),
        (2_097_152, [0x80, 0x80, 0x80, 0x01]),
        (268_435_455, [0xFF, 0xFF, 0xFF, 0x7F]),
    ]

    @Test(
        "Remaining Length encodes as in §2.2.3",
        arguments: remainingLengths.filter { $0.length >= 3 && $0.length <= 2_097_152 })
    func encodesRemainingLength(length: Int, encoding: [UInt8]) {
        // A QoS 0 PUBLISH to "a" has 3 bytes of variable header; the payload fills the rest.
        let packet = MQTTPacket.publish(
            Publish(topic: "a", payload: Array(repeating: 0x5A, count: length - 3)))
        let bytes = packet.encoded
        #expect(bytes.count == 1 + encoding.count + length)
        #expect(Array(bytes[1..<1 + encoding.count]) == encoding)
    }

    @Test(
        "Remaining Length decodes as in §2.2.3", arguments: remainingLengths.filter { $0.length > 0 })
    func decodesRemainingLength(length: Int, encoding: [UInt8]) throws {
        // The decoder's size limit reveals the length it read: a packet of exactly the limit is
        // awaited (nil), one byte less of limit is rejected, without any body bytes.
        let total = 1 + encoding.count + length
        var atLimit = MQTTDecoder(maxPacketSize: total)
        atLimit.append([0x30] + encoding)
        #expect(try atLimit.next() == nil)
        var belowLimit = MQTTDecoder(maxPacketSize: total - 1)
        belowLimit.append([0x30] + encoding)
        let error = #expect(throws: MQTTProtocolError.self) { try belowLimit.next() }
        #expect(error?.code == .packetTooLarge)
    }

    @Test("non-minimal Remaining Length encodings are accepted, up to four bytes")
    func nonMinimalRemainingLength() throws {
        #expect(try decodeOne([0xC0, 0x80, 0x00]) == .pingreq)
        #expect(try decodeOne([0xE0, 0x80, 0x80, 0x80, 0x00]) == .disconnect)
        #expect(try decodeOne([0x40, 0x82, 0x00, 0x00, 0x07]) == .puback(7))
    }
}
