// Writing packets to bytes: fixed header (§2.2), then each packet's variable header and
// payload (§3).
//
// The encoder writes what it is given. It does not re-check the rules the decoder enforces
// (wildcards in a PUBLISH topic, packet identifier 0, DUP at QoS 0, …): the values the caller
// builds are its responsibility. It stops the program (precondition) only for values the
// wire format cannot represent:
// - a string or binary field longer than 65,535 bytes (§1.5.3);
// - a packet whose Remaining Length would exceed 268,435,455 (§2.2.3);
// - a PUBLISH whose `packetID` is nil at QoS 1/2 or present at QoS 0 (§3.3.2.2).

extension MQTTPacket {
    /// The packet's bytes, ready to write to the connection.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(encodedSize)
        encode(into: &bytes)
        return bytes
    }

    /// Appends the packet's bytes to `buffer`, e.g. to batch several packets in one write.
    public func encode(into buffer: inout [UInt8]) {
        let remainingLength = self.remainingLength
        // §2.2 fixed header: type and flags, then the Remaining Length.
        buffer.append(packetType.rawValue << 4 | fixedHeaderFlags)
        RemainingLength.encode(remainingLength, into: &buffer)
        let bodyStart = buffer.count
        encodeBody(into: &buffer)
        assert(buffer.count - bodyStart == remainingLength, "\(name) body length mismatch")
    }

    /// The number of bytes ``encode(into:)`` appends.
    public var encodedSize: Int {
        let remainingLength = self.remainingLength
        return 1 + RemainingLength.byteCount(of: remainingLength) + remainingLength
    }

    /// The low nibble of the first byte (§2.2.2).
    private var fixedHeaderFlags: UInt8 {
        guard case .publish(let publish) = self else { return packetType.fixedFlags }
        // §3.3.1: bit 3 DUP, bits 2–1 QoS, bit 0 RETAIN.
        return (publish.dup ? 0b1000 : 0) | publish.qos.rawValue << 1 | (publish.retain ? 0b0001 : 0)
    }

    /// The length of the variable header plus payload (§2.2.3).
    private var remainingLength: Int {
        switch self {
        case .connect(let connect): connect.encodedBodyLength
        case .connack: 2
        case .publish(let publish): publish.encodedBodyLength
        case .puback, .pubrec, .pubrel, .pubcomp, .unsuback: 2
        case .subscribe(let subscribe):
            subscribe.topics.reduce(2) { $0 + 2 + $1.filter.utf8.count + 1 }
        case .suback(let suback): 2 + suback.returnCodes.count
        case .unsubscribe(let unsubscribe):
            unsubscribe.filters.reduce(2) { $0 + 2 + $1.utf8.count }
        case .pingreq, .pingresp, .disconnect: 0
        }
    }

    private func encodeBody(into buffer: inout [UInt8]) {
        switch self {
        case .connect(let connect):
            connect.encodeBody(into: &buffer)
        case .connack(let connack):
            // §3.2.2: acknowledge flags (bit 0 Session Present), then the return code.
            buffer.append(connack.sessionPresent ? 1 : 0)
            buffer.append(connack.returnCode.rawValue)
        case .publish(let publish):
            // §3.3.2 topic name, packet identifier at QoS 1/2; §3.3.3 payload.
            buffer.appendMQTTString(publish.topic)
            if let packetID = publish.packetID { buffer.appendUInt16(packetID) }
            buffer.append(contentsOf: publish.payload)
        case .puback(let packetID), .pubrec(let packetID), .pubrel(let packetID),
            .pubcomp(let packetID), .unsuback(let packetID):
            buffer.appendUInt16(packetID)
        case .subscribe(let subscribe):
            // §3.8.2 packet identifier; §3.8.3 (filter, requested QoS) pairs.
            buffer.appendUInt16(subscribe.packetID)
            for topic in subscribe.topics {
                buffer.appendMQTTString(topic.filter)
                buffer.append(topic.qos.rawValue)
            }
        case .suback(let suback):
            // §3.9.2 packet identifier; §3.9.3 one return code per filter.
            buffer.appendUInt16(suback.packetID)
            buffer.append(contentsOf: suback.returnCodes)
        case .unsubscribe(let unsubscribe):
            // §3.10.2 packet identifier; §3.10.3 filters.
            buffer.appendUInt16(unsubscribe.packetID)
            for filter in unsubscribe.filters { buffer.appendMQTTString(filter) }
        case .pingreq, .pingresp, .disconnect:
            break
        }
    }
}

extension Connect {
    /// §3.1.2: protocol name (6) + level (1) + flags (1) + keep alive (2), then §3.1.3.
    fileprivate var encodedBodyLength: Int {
        var length = 10 + 2 + clientID.utf8.count
        if let will { length += 2 + will.topic.utf8.count + 2 + will.payload.count }
        if let username { length += 2 + username.utf8.count }
        if let password { length += 2 + password.count }
        return length
    }

    fileprivate func encodeBody(into buffer: inout [UInt8]) {
        // §3.1.2.1 Protocol Name "MQTT", §3.1.2.2 Protocol Level 4.
        buffer.append(contentsOf: [0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04])
        // §3.1.2.3 Connect Flags; bit 0 is reserved and stays 0.
        var flags: UInt8 = cleanSession ? 0b0000_0010 : 0
        if let will {
            flags |= 0b0000_0100 | will.qos.rawValue << 3 | (will.retain ? 0b0010_0000 : 0)
        }
        if password != nil { flags |= 0b0100_0000 }
        if username != nil { flags |= 0b1000_0000 }
        buffer.append(flags)
        buffer.appendUInt16(keepAlive)  // §3.1.2.10
        // §3.1.3 payload, in this order.
        buffer.appendMQTTString(clientID)
        if let will {
            buffer.appendMQTTString(will.topic)
            buffer.appendMQTTBinary(will.payload)
        }
        if let username { buffer.appendMQTTString(username) }
        if let password { buffer.appendMQTTBinary(password) }
    }
}

extension Publish {
    /// §3.3.2 topic name and optional packet identifier, then the §3.3.3 payload.
    fileprivate var encodedBodyLength: Int {
        precondition(
            (qos == .atMostOnce) == (packetID == nil),
            "a PUBLISH has a packet identifier exactly when its QoS is 1 or 2 (MQTT 3.1.1 §3.3.2.2)")
        return 2 + topic.utf8.count + (packetID == nil ? 0 : 2) + payload.count
    }
}

extension [UInt8] {
    /// Two-byte big-endian integer, MQTT 3.1.1 §1.5.2.
    fileprivate mutating func appendUInt16(_ value: UInt16) {
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    /// Length-prefixed UTF-8 string, MQTT 3.1.1 §1.5.3.
    fileprivate mutating func appendMQTTString(_ string: String) {
        let utf8 = string.utf8
        precondition(utf8.count <= 65_535, "MQTT strings are at most 65,535 bytes (§1.5.3)")
        appendUInt16(UInt16(truncatingIfNeeded: utf8.count))
        append(contentsOf: utf8)
    }

    /// Length-prefixed binary data (Will Message §3.1.3.3, Password §3.1.3.5).
    fileprivate mutating func appendMQTTBinary(_ bytes: [UInt8]) {
        precondition(bytes.count <= 65_535, "MQTT binary fields are at most 65,535 bytes")
        appendUInt16(UInt16(truncatingIfNeeded: bytes.count))
        append(contentsOf: bytes)
    }
}
