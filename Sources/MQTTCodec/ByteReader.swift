/// A bounds-checked cursor over one packet's body (the bytes its Remaining Length covers)
/// inside the decoder's buffer.
///
/// Every read first checks how many bytes remain and throws
/// ``MQTTProtocolError/Code/truncated`` if the field would run past the packet, so no input
/// can make a read trap. Reads return `ArraySlice`s of the shared buffer: nothing is copied
/// until a caller turns a slice into a `String` or an `[UInt8]`.
///
/// `field` arguments name the field being read, for error messages only.
struct ByteReader {
    /// A view of some of the packet's bytes, sharing the decoder's buffer.
    typealias Bytes = ArraySlice<UInt8>

    private let bytes: [UInt8]
    private var position: Int
    private let end: Int
    /// The packet being read, for error messages.
    let packetName: String

    /// A reader over `bytes[range]`. `range` must lie inside `bytes`.
    init(_ bytes: [UInt8], range: Range<Int>, packetName: String) {
        self.bytes = bytes
        self.position = range.lowerBound
        self.end = range.upperBound
        self.packetName = packetName
    }

    /// How many bytes of the packet are left to read.
    var remainingCount: Int { end - position }

    var isAtEnd: Bool { position >= end }

    /// Reads one byte.
    mutating func readByte(_ field: String) throws(MQTTProtocolError) -> UInt8 {
        try require(1, field)
        let byte = bytes[position]
        position += 1
        return byte
    }

    /// Reads a big-endian two-byte integer (MQTT 3.1.1 §1.5.2).
    mutating func readUInt16(_ field: String) throws(MQTTProtocolError) -> UInt16 {
        try require(2, field)
        let value = UInt16(bytes[position]) << 8 | UInt16(bytes[position + 1])
        position += 2
        return value
    }

    /// Reads a Packet Identifier, which must not be 0 (MQTT 3.1.1 §2.3.1).
    mutating func readPacketID() throws(MQTTProtocolError) -> UInt16 {
        let id = try readUInt16("packet identifier")
        guard id != 0 else {
            throw MQTTProtocolError(
                .zeroPacketID, "\(packetName) has packet identifier 0 (MQTT 3.1.1 §2.3.1)")
        }
        return id
    }

    /// Reads two-byte-length-prefixed bytes: the layout of strings (§1.5.3) and of the
    /// binary Will Message and Password fields (§3.1.3.3, §3.1.3.5).
    mutating func readLengthPrefixedBytes(_ field: String) throws(MQTTProtocolError) -> Bytes {
        // The field name is passed on unchanged: building "length of …" here would allocate a
        // String on every read, and this runs for every topic of every PUBLISH.
        let count = Int(try readUInt16(field))
        try require(count, field)
        let slice = bytes[position..<position + count]
        position += count
        return slice
    }

    /// Reads a UTF-8 encoded string, MQTT 3.1.1 §1.5.3: well-formed UTF-8 (so no surrogate
    /// code points and no overlong forms) and no U+0000.
    mutating func readString(_ field: String) throws(MQTTProtocolError) -> String {
        let utf8 = try readLengthPrefixedBytes(field)
        // In UTF-8 the byte 0x00 only ever encodes U+0000.
        guard !utf8.contains(0) else {
            throw MQTTProtocolError(
                .invalidUTF8, "\(packetName) \(field) contains U+0000 (MQTT 3.1.1 §1.5.3)")
        }
        guard let string = String(validating: utf8, as: UTF8.self) else {
            throw MQTTProtocolError(
                .invalidUTF8, "\(packetName) \(field) is not well-formed UTF-8 (MQTT 3.1.1 §1.5.3)")
        }
        return string
    }

    /// Reads everything up to the end of the packet (the PUBLISH payload, §3.3.3).
    mutating func readRest() -> Bytes {
        let slice = bytes[position..<end]
        position = end
        return slice
    }

    /// Throws ``MQTTProtocolError/Code/trailingBytes`` unless every byte has been read.
    func expectEnd() throws(MQTTProtocolError) {
        guard isAtEnd else {
            throw MQTTProtocolError(
                .trailingBytes,
                "\(packetName) has \(remainingCount) byte(s) after its last field, inside its "
                    + "Remaining Length (MQTT 3.1.1 §2.2.3)")
        }
    }

    private func require(_ count: Int, _ field: String) throws(MQTTProtocolError) {
        guard count <= remainingCount else {
            throw MQTTProtocolError(
                .truncated,
                "\(packetName) \(field) needs \(count) byte(s) but only \(remainingCount) remain "
                    + "in its Remaining Length (MQTT 3.1.1 §2.2.3)")
        }
    }
}
