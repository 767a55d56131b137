import MQTTCodec
import Testing

@Suite("Packet size limit")
struct PacketSizeLimitTests {
    @Test("a packet over maxPacketSize is rejected as soon as its length is known")
    func rejectedBeforeBody() throws {
        var decoder = MQTTDecoder(maxPacketSize: 100)
        // PUBLISH announcing 200 bytes; none of the body has arrived.
        decoder.append([0x30, 0xC8])
        #expect(try decoder.next() == nil)  // the length is not complete yet
        decoder.append([0x01])
        let error = #expect(throws: MQTTProtocolError.self) { try decoder.next() }
        #expect(error?.code == .packetTooLarge)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test("the limit counts the fixed header and is inclusive")
    func inclusiveLimit() throws {
        let packet = MQTTPacket.publish(Publish(topic: "t", payload: Array(repeating: 1, count: 95)))
        let bytes = packet.encoded
        #expect(bytes.count == 100)
        #expect(try decodeAll(bytes, maxPacketSize: 100) == [packet])
        #expect(decodeError(bytes, maxPacketSize: 99)?.code == .packetTooLarge)
    }

    @Test("the default limit rejects a 268,435,455-byte body plus header")
    func defaultLimit() {
        #expect(decodeError([0x30, 0xFF, 0xFF, 0xFF, 0x7F])?.code == .packetTooLarge)
    }
}

@Suite("Decoder poisoning")
struct PoisoningTests {
    @Test("after an error the decoder keeps throwing it and drops input")
    func poisoned() throws {
        var decoder = MQTTDecoder()
        decoder.append([0xC0, 0x00, 0x40, 0x02, 0x00, 0x00, 0xC0, 0x00])
        #expect(try decoder.next() == .pingreq)
        let first = #expect(throws: MQTTProtocolError.self) { try decoder.next() }
        #expect(first?.code == .zeroPacketID)
        #expect(decoder.failure == first)
        decoder.append([0xC0, 0x00])
        #expect(decoder.bufferedByteCount == 0)
        let second = #expect(throws: MQTTProtocolError.self) { try decoder.next() }
        #expect(second == first)
    }
}
