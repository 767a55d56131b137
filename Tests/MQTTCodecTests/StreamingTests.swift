import GatehouseTestSupport
import MQTTCodec
import Testing

@Suite("Streaming: packets split across reads")
struct StreamingTests {
    static var allSampleBytes: [UInt8] {
        var bytes: [UInt8] = []
        for packet in samplePackets { packet.encode(into: &bytes) }
        return bytes
    }

    @Test("byte-at-a-time feeding of concatenated packets")
    func byteAtATime() throws {
        var decoder = MQTTDecoder()
        var decoded: [MQTTPacket] = []
        for byte in Self.allSampleBytes {
            decoder.append([byte])
            while let packet = try decoder.next() { decoded.append(packet) }
        }
        #expect(decoded == samplePackets)
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test("nil until the last byte of a packet arrives")
    func nilUntilComplete() throws {
        let bytes = MQTTPacket.publish(
            Publish(topic: "a/b", payload: [1, 2, 3], qos: .atLeastOnce, packetID: 4)
        ).encoded
        var decoder = MQTTDecoder()
        for byte in bytes.dropLast() {
            decoder.append([byte])
            #expect(try decoder.next() == nil)
        }
        #expect(decoder.bufferedByteCount == bytes.count - 1)
        decoder.append([bytes[bytes.count - 1]])
        #expect(try decoder.next() != nil)
        #expect(try decoder.next() == nil)
    }

    @Test("random chunk sizes, seeded", arguments: [1, 2, 3, 42] as [UInt64])
    func randomChunks(seed: UInt64) throws {
        var generator = SplitMix64(seed: seed)
        let bytes = Self.allSampleBytes
        var decoder = MQTTDecoder()
        var decoded: [MQTTPacket] = []
        var offset = 0
        while offset < bytes.count {
            let count = min(Int.random(in: 1...97, using: &generator), bytes.count - offset)
            decoder.append(bytes[offset..<offset + count])
            offset += count
            while let packet = try decoder.next() { decoded.append(packet) }
        }
        #expect(decoded == samplePackets)
    }

    @Test("append from an UnsafeRawBufferPointer")
    func rawBufferPointer() throws {
        let bytes = Self.allSampleBytes
        var decoder = MQTTDecoder()
        bytes.withUnsafeBytes { raw in
            decoder.append(UnsafeRawBufferPointer(rebasing: raw[..<10]))
            decoder.append(UnsafeRawBufferPointer(rebasing: raw[10...]))
        }
        var decoded: [MQTTPacket] = []
        while let packet = try decoder.next() { decoded.append(packet) }
        #expect(decoded == samplePackets)
    }

    @Test("a long stream split at arbitrary points decodes in order, without backlog")
    func compaction() throws {
        var stream: [UInt8] = []
        for id in 1...5_000 {
            MQTTPacket.publish(
                Publish(
                    topic: "sensors/\(id % 10)", payload: Array(repeating: UInt8(id & 0xFF), count: id % 50),
                    qos: .atLeastOnce, packetID: UInt16(id))
            ).encode(into: &stream)
        }
        var decoder = MQTTDecoder()
        var count = 0
        var offset = 0
        var largestBacklog = 0
        while offset < stream.count {
            // Chunks that never line up with packet boundaries.
            let end = min(offset + 1_000, stream.count)
            decoder.append(stream[offset..<end])
            offset = end
            while let packet = try decoder.next() {
                count += 1
                guard case .publish(let publish) = packet else {
                    Issue.record("unexpected \(packet)")
                    return
                }
                #expect(publish.packetID == UInt16(count))
            }
            largestBacklog = max(largestBacklog, decoder.bufferedByteCount)
        }
        #expect(count == 5_000)
        #expect(decoder.bufferedByteCount == 0)
        #expect(largestBacklog < 100)
    }
}
