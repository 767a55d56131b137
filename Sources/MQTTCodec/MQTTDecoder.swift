/// Turns a byte stream into MQTT 3.1.1 packets, rejecting anything the specification forbids.
///
/// Feed it whatever the socket delivered with `append(_:)` and call ``next()`` until it
/// returns nil:
///
/// ```swift
/// var decoder = MQTTDecoder(maxPacketSize: 1 << 20)
/// decoder.append(bytesFromSocket)
/// while let packet = try decoder.next() { handle(packet) }
/// ```
///
/// Framing (MQTT 3.1.1 §2.2): the first byte (packet type and flags) is checked as soon as it
/// arrives; the packet size is checked against `maxPacketSize` as soon as the Remaining
/// Length (§2.2.3) is complete, before any of the body is needed. The body is then parsed and
/// checked by the per-packet `decode` functions in `MQTTPacket+Decoding.swift`.
///
/// Errors are final: once ``next()`` has thrown, the stream position is lost, so the decoder
/// keeps throwing the same error and discards further input (§4.8: close the connection).
///
/// Oversized PUBLISH packets: by default (``OversizedPublishes/reject``) a PUBLISH over
/// `maxPacketSize` is an error like any other packet over it. With
/// ``OversizedPublishes/skip(keepingHead:)`` the decoder instead reads its topic and packet
/// identifier (checked as strictly as always), keeps the payload's first bytes, and discards the
/// rest as it streams in — the packet is never buffered whole — then ``nextEvent()`` reports it
/// as a ``SkippedPublish``, in stream order, and decoding goes on with the next packet. A
/// subscriber can so acknowledge a message it will never process, and its broker stops
/// redelivering it, without closing the connection.
///
/// Buffering: bytes are kept in one array with a read index. Consumed bytes are dropped
/// only when that is cheap relative to the work already done (see `compactIfWorthwhile`),
/// so the cost per byte stays constant however the input is split.
public struct MQTTDecoder: Sendable {
    /// The largest total packet size accepted, fixed header included.
    public let maxPacketSize: Int
    /// What happens to a PUBLISH over `maxPacketSize`.
    public let oversizedPublishes: OversizedPublishes

    /// What the decoder does with a PUBLISH over `maxPacketSize`.
    public enum OversizedPublishes: Sendable, Equatable {
        /// Throw ``MQTTProtocolError/Code/packetTooLarge``, as for any packet over the limit.
        case reject
        /// Read its topic and packet identifier, keep at most `keepingHead` bytes of its payload
        /// and discard the rest as it arrives; ``nextEvent()`` reports a ``SkippedPublish``.
        case skip(keepingHead: Int)
    }

    /// What ``nextEvent()`` found next in the stream.
    public enum Event: Equatable, Sendable {
        /// A complete packet, decoded and checked.
        case packet(MQTTPacket)
        /// A PUBLISH over `maxPacketSize`, consumed without buffering its payload
        /// (``OversizedPublishes/skip(keepingHead:)`` only).
        case skippedPublish(SkippedPublish)
    }

    /// An oversized PUBLISH being consumed: what is known of it, and how much payload is left.
    private struct Skip: Sendable {
        var publish: SkippedPublish
        var headLimit: Int
        var remaining: Int
    }

    private var skip: Skip?

    /// Received bytes; those before `readIndex` are already decoded.
    private var buffer: [UInt8] = []
    private var readIndex = 0
    /// The error that poisoned the decoder, if any.
    public private(set) var failure: MQTTProtocolError?

    /// Consumed bytes are moved out of the buffer only once at least this many accumulate.
    private static let compactionThreshold = 4_096
    /// An emptied buffer keeps its capacity for reuse up to this size; above it (after a large
    /// packet) the memory is released.
    private static let retainedCapacity = 65_536

    /// - Parameter maxPacketSize: the largest total packet size in bytes, fixed header
    ///   included. The default is the protocol maximum (a 268,435,455-byte Remaining Length,
    ///   §2.2.3), which a server exposed to untrusted peers should lower.
    /// - Parameter oversizedPublishes: what happens to a PUBLISH over `maxPacketSize`: an error
    ///   (the default), or skipped and reported by ``nextEvent()``.
    /// - Precondition: `maxPacketSize >= 2` (the smallest packet, e.g. PINGREQ), and a kept head
    ///   is not negative.
    public init(maxPacketSize: Int = 268_435_455, oversizedPublishes: OversizedPublishes = .reject) {
        precondition(maxPacketSize >= 2, "maxPacketSize must allow the 2-byte fixed header")
        if case .skip(let head) = oversizedPublishes {
            precondition(head >= 0, "the head kept of a skipped PUBLISH cannot be negative")
        }
        self.maxPacketSize = maxPacketSize
        self.oversizedPublishes = oversizedPublishes
    }

    /// The number of received bytes not yet decoded.
    public var bufferedByteCount: Int { buffer.count - readIndex }

    /// Whether an oversized PUBLISH is being skipped: the bytes that arrive next are its payload.
    public var isSkipping: Bool { skip != nil }

    /// Adds received bytes. Ignored once the decoder has failed.
    public mutating func append(_ bytes: some Collection<UInt8>) {
        guard failure == nil, !bytes.isEmpty else { return }
        compactIfWorthwhile()
        buffer.append(contentsOf: bytes)
    }

    /// Adds received bytes straight from a socket read buffer, copying them once.
    /// Ignored once the decoder has failed.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil, !bytes.isEmpty else { return }
        compactIfWorthwhile()
        buffer.append(contentsOf: bytes)
    }

    /// Decodes the next complete packet.
    ///
    /// - Returns: the packet, or nil if more bytes are needed.
    /// - Throws: ``MQTTProtocolError`` if the input violates MQTT 3.1.1 or exceeds
    ///   ``maxPacketSize``. After that every call throws the same error. A decoder that skips
    ///   oversized PUBLISH packets reports them only through ``nextEvent()``: here one is a
    ///   ``MQTTProtocolError/Code/packetTooLarge`` error, once it has been consumed.
    public mutating func next() throws(MQTTProtocolError) -> MQTTPacket? {
        switch try nextEvent() {
        case nil: return nil
        case .packet(let packet): return packet
        case .skippedPublish(let skipped):
            let error = MQTTProtocolError(
                .packetTooLarge,
                "PUBLISH of \(skipped.packetSize) bytes exceeds the limit of \(maxPacketSize) bytes")
            poison(error)
            throw error
        }
    }

    /// Decodes the next complete packet, or finishes skipping an oversized PUBLISH.
    ///
    /// - Returns: the next event, or nil if more bytes are needed. Call it after every `append`
    ///   until it returns nil: that is also what consumes (and frees) a skipped payload.
    /// - Throws: ``MQTTProtocolError`` if the input violates MQTT 3.1.1 or exceeds
    ///   ``maxPacketSize`` (a PUBLISH only under ``OversizedPublishes/reject``). After that
    ///   every call throws the same error.
    public mutating func nextEvent() throws(MQTTProtocolError) -> Event? {
        if let failure { throw failure }
        do throws(MQTTProtocolError) {
            if skip != nil { return consumeSkipped() }
            return try decodeNextPacket()
        } catch {
            poison(error)
            throw error
        }
    }

    private mutating func poison(_ error: MQTTProtocolError) {
        failure = error
        buffer = []
        readIndex = 0
        skip = nil
    }

    /// Consumes as much of a skipped payload as has arrived: the head is kept, the rest dropped.
    private mutating func consumeSkipped() -> Event? {
        guard var current = skip else { return nil }
        let take = min(buffer.count - readIndex, current.remaining)
        let keep = min(take, current.headLimit - current.publish.head.count)
        if keep > 0 { current.publish.head.append(contentsOf: buffer[readIndex..<readIndex + keep]) }
        readIndex += take
        current.remaining -= take
        guard current.remaining == 0 else {
            skip = current
            return nil
        }
        skip = nil
        return .skippedPublish(current.publish)
    }

    private mutating func decodeNextPacket() throws(MQTTProtocolError) -> Event? {
        let start = readIndex
        let end = buffer.count
        guard start < end else { return nil }

        // §2.2.1–§2.2.2 packet type and flags, validated before waiting for more.
        let header = try FixedHeader(firstByte: buffer[start])

        // §2.2.3 Remaining Length.
        let remainingLength: Int
        let lengthByteCount: Int
        switch try RemainingLength.decode(buffer, from: start + 1, end: end) {
        case .incomplete:
            return nil
        case .complete(let value, let byteCount):
            remainingLength = value
            lengthByteCount = byteCount
        }

        // Both terms are bounded (4 + 268,435,455), so this cannot overflow.
        let packetSize = 1 + lengthByteCount + remainingLength
        let bodyStart = start + 1 + lengthByteCount
        guard packetSize <= maxPacketSize else {
            guard header.type == .publish, case .skip(let headLimit) = oversizedPublishes else {
                throw MQTTProtocolError(
                    .packetTooLarge,
                    "\(header.type.name) of \(packetSize) bytes exceeds the limit of \(maxPacketSize) bytes")
            }
            return try beginSkipping(
                header, bodyStart: bodyStart, remainingLength: remainingLength, packetSize: packetSize,
                headLimit: headLimit)
        }
        guard end - start >= packetSize else { return nil }

        var reader = ByteReader(
            buffer, range: bodyStart..<start + packetSize, packetName: header.type.name)
        let packet = try MQTTPacket.decode(header, body: &reader)
        readIndex = start + packetSize
        return .packet(packet)
    }

    /// Starts skipping an oversized PUBLISH once its variable header (topic, packet identifier:
    /// at most 65,539 bytes) has arrived, checked as strictly as in a PUBLISH that fits.
    private mutating func beginSkipping(
        _ header: FixedHeader, bodyStart: Int, remainingLength: Int, packetSize: Int, headLimit: Int
    ) throws(MQTTProtocolError) -> Event? {
        let available = buffer.count - bodyStart
        guard available >= 2 else { return nil }
        let qosBits = (header.flags >> 1) & 0b11
        let topicLength = Int(buffer[bodyStart]) << 8 | Int(buffer[bodyStart + 1])
        // Within the body: a topic running past the Remaining Length is `truncated`, as always.
        let variableHeaderLength = min(2 + topicLength + (qosBits == 0 ? 0 : 2), remainingLength)
        guard available >= variableHeaderLength else { return nil }
        var reader = ByteReader(
            buffer, range: bodyStart..<bodyStart + variableHeaderLength, packetName: header.type.name)
        let fields = try Publish.decodeVariableHeader(flags: header.flags, &reader)
        readIndex = bodyStart + variableHeaderLength
        let payloadSize = remainingLength - variableHeaderLength
        skip = Skip(
            publish: SkippedPublish(
                topic: fields.topic, qos: fields.qos, retain: header.flags & 0b0001 != 0,
                dup: header.flags & 0b1000 != 0, packetID: fields.packetID, head: [],
                payloadSize: payloadSize, packetSize: packetSize),
            headLimit: headLimit, remaining: payloadSize)
        return consumeSkipped()
    }

    /// Drops consumed bytes from the front of the buffer when that is cheap: always when
    /// everything is consumed, otherwise only when the consumed prefix is large and at least
    /// as long as what has to be moved. Moving k bytes then follows at least k consumed bytes,
    /// so compaction costs O(1) per byte received.
    private mutating func compactIfWorthwhile() {
        guard readIndex > 0 else { return }
        if readIndex == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= Self.retainedCapacity)
            readIndex = 0
        } else if readIndex >= Self.compactionThreshold, readIndex >= buffer.count - readIndex {
            buffer.removeSubrange(..<readIndex)
            readIndex = 0
        }
    }
}
