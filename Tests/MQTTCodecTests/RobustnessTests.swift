import GatehouseTestSupport
import MQTTCodec
import Testing

/// A cheap, deterministic fuzzer: hostile input must never trap the decoder.
@Suite("Robustness against random input")
struct RobustnessTests {
    /// How each input ended.
    struct Outcomes {
        var packets = 0
        var needMoreBytes = 0
        var errors = 0
    }

    @Test("20,000 random and mutated inputs: each next() returns a packet, nil, or throws")
    func randomInputs() throws {
        var generator = SplitMix64(seed: 0x4D51_5454_0311)
        let seeds = samplePackets.map(\.encoded)
        var outcomes = Outcomes()
        for iteration in 0..<20_000 {
            let input =
                iteration % 2 == 0
                ? randomBytes(using: &generator)
                : mutate(seeds[Int.random(in: 0..<seeds.count, using: &generator)], using: &generator)
            let limits = [2, 16, 64, 1_024, 268_435_455]
            let maxPacketSize = limits[Int.random(in: 0..<limits.count, using: &generator)]
            try feed(input, maxPacketSize: maxPacketSize, using: &generator, into: &outcomes)
        }
        // The generator should reach all three outcomes; otherwise the test proves little.
        #expect(outcomes.packets > 1_000)
        #expect(outcomes.errors > 1_000)
        #expect(outcomes.needMoreBytes > 100)
    }

    /// Feeds `input` in random chunks. Every decoded packet must re-encode to bytes that decode
    /// to the same packet; an error must poison the decoder.
    private func feed(
        _ input: [UInt8], maxPacketSize: Int, using generator: inout SplitMix64,
        into outcomes: inout Outcomes
    ) throws {
        var decoder = MQTTDecoder(maxPacketSize: maxPacketSize)
        var offset = 0
        while offset < input.count {
            let count = min(Int.random(in: 1...16, using: &generator), input.count - offset)
            decoder.append(input[offset..<offset + count])
            offset += count
            do throws(MQTTProtocolError) {
                while let packet = try decoder.next() {
                    outcomes.packets += 1
                    #expect(try decodeOne(packet.encoded) == packet)
                }
            } catch {
                outcomes.errors += 1
                #expect(decoder.failure == error)
                #expect(throws: MQTTProtocolError.self) { try decoder.next() }
                return
            }
        }
        if decoder.bufferedByteCount > 0 { outcomes.needMoreBytes += 1 }
    }

    /// Random bytes, often starting with a plausible first byte so parsing gets further.
    private func randomBytes(using generator: inout SplitMix64) -> [UInt8] {
        let count = Int.random(in: 0...64, using: &generator)
        var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
        if !bytes.isEmpty, Bool.random(using: &generator) {
            let plausible: [UInt8] = [0x10, 0x20, 0x30, 0x32, 0x34, 0x40, 0x62, 0x82, 0x90, 0xA2, 0xC0]
            bytes[0] = plausible[Int.random(in: 0..<plausible.count, using: &generator)]
            if bytes.count > 1 { bytes[1] = UInt8(count - 2) }
        }
        return bytes
    }

    /// A valid packet (sometimes followed by another) with a few random edits.
    private func mutate(_ seed: [UInt8], using generator: inout SplitMix64) -> [UInt8] {
        var bytes = seed
        if Bool.random(using: &generator) { bytes += seed }
        for _ in 0..<Int.random(in: 0...3, using: &generator) {
            guard !bytes.isEmpty else { break }
            let index = Int.random(in: 0..<bytes.count, using: &generator)
            switch Int.random(in: 0..<6, using: &generator) {
            case 0: bytes[index] = UInt8.random(in: 0...255, using: &generator)
            case 1: bytes[index] ^= 1 << UInt8.random(in: 0...7, using: &generator)
            case 2: bytes.remove(at: index)
            case 3: bytes.insert(UInt8.random(in: 0...255, using: &generator), at: index)
            case 4: bytes.removeSubrange(index...)
            default: bytes[index] = [0x00, 0x7F, 0x80, 0xFF][Int.random(in: 0..<4, using: &generator)]
            }
        }
        return bytes
    }
}
