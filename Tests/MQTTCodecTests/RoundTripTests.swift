import MQTTCodec
import Testing

@Suite("Round trip: encode then decode")
struct RoundTripTests {
    @Test("every packet type survives encode → decode", arguments: samplePackets)
    func roundTrip(packet: MQTTPacket) throws {
        let bytes = packet.encoded
        #expect(bytes.count == packet.encodedSize)
        #expect(try decodeOne(bytes) == packet)
    }

    @Test("encode(into:) appends after existing bytes")
    func encodeIntoAppends() throws {
        var buffer: [UInt8] = [0xAA]
        MQTTPacket.pingreq.encode(into: &buffer)
        MQTTPacket.puback(5).encode(into: &buffer)
        #expect(buffer == [0xAA, 0xC0, 0x00, 0x40, 0x02, 0x00, 0x05])
    }

    @Test("all sample packets concatenated decode in order")
    func concatenated() throws {
        var bytes: [UInt8] = []
        for packet in samplePackets { packet.encode(into: &bytes) }
        #expect(try decodeAll(bytes) == samplePackets)
    }

    @Test("a 65,535-byte topic and password are the largest strings allowed")
    func largestStrings() throws {
        let topic = String(repeating: "t", count: 65_535)
        let packets: [MQTTPacket] = [
            .publish(Publish(topic: topic, payload: [1])),
            .connect(
                Connect(
                    clientID: "c", username: topic, password: Array(repeating: 7, count: 65_535),
                    will: Connect.Will(topic: topic, payload: Array(repeating: 9, count: 65_535)))),
        ]
        for packet in packets {
            #expect(try decodeOne(packet.encoded) == packet)
        }
    }
}
