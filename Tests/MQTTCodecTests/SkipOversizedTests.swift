import MQTTCodec
import Testing

/// `OversizedPublishes.skip`: a PUBLISH over the limit is consumed as it streams in — its topic
/// and packet id checked, the payload's head kept, the rest never buffered — and reported in
/// stream order; the packets around it decode as usual.
@Suite("Skipping oversized PUBLISH packets")
struct SkipOversizedTests {
    static let limit = 1024

    /// Every event a fresh skipping decoder yields for `bytes` fed in `chunk`-byte pieces, and
    /// the most bytes it held at once while skipping a payload.
    static func events(
        _ bytes: [UInt8], chunk: Int, head: Int = 16, limit: Int = limit
    ) throws(MQTTProtocolError) -> (events: [MQTTDecoder.Event], heldWhileSkipping: Int) {
        var decoder = MQTTDecoder(maxPacketSize: limit, oversizedPublishes: .skip(keepingHead: head))
        var events: [MQTTDecoder.Event] = []
        var held = 0
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + chunk, bytes.count)
            decoder.append(bytes[offset..<end])
            offset = end
            while let event = try decoder.nextEvent() { events.append(event) }
            if decoder.isSkipping { held = max(held, decoder.bufferedByteCount) }
        }
        #expect(decoder.bufferedByteCount == 0)
        #expect(!decoder.isSkipping)
        return (events, held)
    }

    static let payload: [UInt8] = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    static let big = Publish(
        topic: "devices/d1/messages/events/a=1", payload: payload, qos: .atLeastOnce, dup: true, packetID: 42)
    static let small = Publish(
        topic: "devices/d2/messages/events/", payload: [1, 2, 3], qos: .atLeastOnce, packetID: 7)
    static let stream =
        MQTTPacket.pingresp.encoded + MQTTPacket.publish(big).encoded + MQTTPacket.publish(small).encoded
        + MQTTPacket.puback(9).encoded

    static let expectedSkip = SkippedPublish(
        topic: big.topic, qos: .atLeastOnce, retain: false, dup: true, packetID: 42, head: Array(payload.prefix(16)),
        payloadSize: payload.count, packetSize: MQTTPacket.publish(big).encoded.count)

    @Test(
        "the oversized PUBLISH is reported in stream order and the packets around it decode",
        arguments: [1, 7, 100, 4096, 1 << 20])
    func inOrder(chunk: Int) throws {
        let (events, held) = try Self.events(Self.stream, chunk: chunk)
        #expect(
            events == [
                .packet(.pingresp), .skippedPublish(Self.expectedSkip), .packet(.publish(Self.small)),
                .packet(.puback(9)),
            ])
        // The payload is never buffered: at most one piece of input is held while skipping.
        #expect(held <= max(chunk, 64))
    }

    @Test("a 2 MB payload streamed in 64 KiB reads is never held whole")
    func largePayload() throws {
        let payload = [UInt8](repeating: 0x5A, count: 2 << 20)
        let publish = Publish(topic: "devices/big/messages/events/", payload: payload, qos: .atLeastOnce, packetID: 1)
        let bytes = MQTTPacket.publish(publish).encoded + MQTTPacket.pingresp.encoded
        let (events, held) = try Self.events(bytes, chunk: 64 * 1024, head: 4096, limit: 1 << 20)
        guard events.count == 2, case .skippedPublish(let skipped) = events[0] else {
            Issue.record("unexpected events \(events.count)")
            return
        }
        #expect(skipped.head == Array(payload.prefix(4096)))
        #expect(skipped.payloadSize == payload.count)
        #expect(skipped.packetID == 1)
        #expect(events[1] == .packet(.pingresp))
        #expect(held <= 64 * 1024)
    }

    @Test("QoS 0 has no packet id; a head larger than the payload keeps all of it; a zero head keeps none")
    func headsAndQoS() throws {
        let publish = Publish(topic: "t", payload: Array(repeating: 3, count: 50), retain: true)
        let (events, _) = try Self.events(MQTTPacket.publish(publish).encoded, chunk: 5, head: 100, limit: 20)
        #expect(
            events == [
                .skippedPublish(
                    SkippedPublish(
                        topic: "t", qos: .atMostOnce, retain: true, packetID: nil, head: publish.payload,
                        payloadSize: 50, packetSize: 55))
            ])
        let (none, _) = try Self.events(MQTTPacket.publish(publish).encoded, chunk: 9, head: 0, limit: 20)
        #expect(none.count == 1)
        if case .skippedPublish(let skipped)? = none.first { #expect(skipped.head.isEmpty) }
    }

    @Test("the skipped packet's variable header is checked as strictly as any PUBLISH's")
    func strict() {
        let limit = 16
        func error(_ bytes: [UInt8]) -> MQTTProtocolError? {
            do throws(MQTTProtocolError) {
                _ = try Self.events(bytes, chunk: 3, limit: limit)
                return nil
            } catch {
                return error
            }
        }
        let filler = [UInt8](repeating: 0, count: 40)
        // A wildcard in the topic name (§3.3.2.1).
        #expect(error(frame(0x32, mqttString("a/#") + [0x00, 0x01] + filler))?.code == .invalidTopic)
        // Packet identifier 0 (§2.3.1).
        #expect(error(frame(0x32, mqttString("a") + [0x00, 0x00] + filler))?.code == .zeroPacketID)
        // Not UTF-8.
        #expect(error(frame(0x30, mqttString([0xC3, 0x28]) + filler))?.code == .invalidUTF8)
        // A topic longer than the packet.
        #expect(error(frame(0x30, [0x00, 0x40] + Array(repeating: 0x61, count: 20)))?.code == .truncated)
    }

    @Test("other packets over the limit are still errors, as under .reject")
    func otherPacketsRejected() {
        var decoder = MQTTDecoder(maxPacketSize: 8, oversizedPublishes: .skip(keepingHead: 4))
        decoder.append(
            MQTTPacket.subscribe(Subscribe(packetID: 1, topics: [.init(filter: "abcdefgh", qos: .atLeastOnce)])).encoded
        )
        let error = #expect(throws: MQTTProtocolError.self) { try decoder.nextEvent() }
        #expect(error?.code == .packetTooLarge)
        #expect(decoder.failure == error)
    }

    @Test("next() reports a skipped PUBLISH as too large, once it is consumed, and stays failed")
    func nextRejects() throws {
        var decoder = MQTTDecoder(maxPacketSize: Self.limit, oversizedPublishes: .skip(keepingHead: 8))
        decoder.append(Self.stream)
        #expect(try decoder.next() == .pingresp)
        let error = #expect(throws: MQTTProtocolError.self) { try decoder.next() }
        #expect(error?.code == .packetTooLarge)
        #expect(throws: MQTTProtocolError.self) { try decoder.next() }
    }

    @Test("under .reject (the default) nothing changed: the first bytes of the length decide")
    func rejectIsDefault() {
        var decoder = MQTTDecoder(maxPacketSize: Self.limit)
        #expect(decoder.oversizedPublishes == .reject)
        decoder.append(Array(MQTTPacket.publish(Self.big).encoded.prefix(4)))
        let error = #expect(throws: MQTTProtocolError.self) { try decoder.nextEvent() }
        #expect(error?.code == .packetTooLarge)
    }
}
