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
/// Buffering: bytes are kept in one array with a read index. Consumed bytes are dropped
/// only when that is cheap relative to the work already done (see `compactIfWorthwhile`),
/// so the cost per byte stays constant however the input is split.
public struct MQTTDecoder: Sendable {
    /// The largest total packet size accepted, fixed header included.
    public let maxPacketSize: Int

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
    /// - Precondition: `maxPacketSize >= 2` (the smallest packet, e.g. PINGREQ).
    public init(maxPacketSize: Int = 268_435_455) {
        precondition(maxPacketSize >= 2, "maxPacketSize must allow the 2-byte fixed header")
        self.maxPacketSize = maxPacketSize
    }

    /// The number of received bytes not yet decoded.
    public var bufferedByteCount: Int { buffer.count - readIndex }

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
    ///   ``maxPacketSize``. After that every call throws the same error.
    public mutating func next() throws(MQTTProtocolError) -> MQTTPacket? {
        if let failure { throw failure }
        do throws(MQTTProtocolError) {
            return try decodeNextPacket()
        } catch {
            failure = error
            buffer = []
            readIndex = 0
            throw error
        }
    }

    private mutating func decodeNextPacket() throws(MQTTProtocolError) -> MQTTPacket? {
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
        guard packetSize <= maxPacketSize else {
            throw MQTTProtocolError(
                .packetTooLarge,
                "\(header.type.name) of \(packetSize) bytes exceeds the limit of \(maxPacketSize) bytes")
        }
        guard end - start >= packetSize else { return nil }

        let bodyStart = start + 1 + lengthByteCount
        var reader = ByteReader(
            buffer, range: bodyStart..<start + packetSize, packetName: header.type.name)
        let packet = try MQTTPacket.decode(header, body: &reader)
        readIndex = start + packetSize
        return packet
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
