// Parsing and checking of single packets, once ``MQTTDecoder`` has framed them.
//
// Each packet type gets a `decode` function that reads its variable header and payload with
// a ``ByteReader`` and checks every rule the specification states for it. The caller,
// ``MQTTPacket/decode(_:body:)``, then checks that nothing is left over.

/// The first byte of the fixed header, MQTT 3.1.1 §2.2: packet type and flags, checked.
struct FixedHeader: Equatable {
    var type: PacketType
    /// The low nibble of the first byte (§2.2.2).
    var flags: UInt8

    /// Validates the first byte of a packet. This runs as soon as that byte arrives, so a peer
    /// sending garbage is rejected before the decoder waits for (or buffers) anything else.
    init(firstByte: UInt8) throws(MQTTProtocolError) {
        let typeBits = firstByte >> 4
        let flags = firstByte & 0x0F
        guard let type = PacketType(rawValue: typeBits) else {
            throw MQTTProtocolError(
                .unknownPacketType,
                "control packet type \(typeBits) is reserved (MQTT 3.1.1 §2.2.1)")
        }
        if type == .publish {
            // §3.3.1: bit 3 DUP, bits 2–1 QoS, bit 0 RETAIN.
            let qosBits = (flags >> 1) & 0b11
            guard qosBits != 3 else {
                throw MQTTProtocolError(
                    .invalidQoS, "PUBLISH has both QoS bits set (QoS 3) (MQTT 3.1.1 §3.3.1.2)")
            }
            guard !(qosBits == 0 && flags & 0b1000 != 0) else {
                throw MQTTProtocolError(
                    .dupWithQoS0, "PUBLISH at QoS 0 has the DUP flag set (MQTT 3.1.1 §3.3.1.1)")
            }
        } else {
            guard flags == type.fixedFlags else {
                throw MQTTProtocolError(
                    .reservedFlags,
                    "\(type.name) has fixed-header flags \(binary(flags)), the specification requires "
                        + "\(binary(type.fixedFlags)) (MQTT 3.1.1 §2.2.2)")
            }
        }
        self.type = type
        self.flags = flags
    }
}

/// "0b0010"-style rendering of a nibble, for messages.
private func binary(_ nibble: UInt8) -> String {
    let digits = String(nibble, radix: 2)
    return "0b" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}

extension MQTTPacket {
    /// Decodes the body of one packet whose fixed header has been validated, and checks that
    /// its fields use exactly the Remaining Length (§2.2.3).
    static func decode(
        _ header: FixedHeader, body reader: inout ByteReader
    ) throws(MQTTProtocolError) -> MQTTPacket {
        let packet: MQTTPacket
        switch header.type {
        case .connect: packet = .connect(try Connect.decode(&reader))
        case .connack: packet = .connack(try ConnAck.decode(&reader))
        case .publish: packet = .publish(try Publish.decode(flags: header.flags, &reader))
        // §3.4–§3.7, §3.11: the variable header is just the packet identifier.
        case .puback: packet = .puback(try reader.readPacketID())
        case .pubrec: packet = .pubrec(try reader.readPacketID())
        case .pubrel: packet = .pubrel(try reader.readPacketID())
        case .pubcomp: packet = .pubcomp(try reader.readPacketID())
        case .unsuback: packet = .unsuback(try reader.readPacketID())
        case .subscribe: packet = .subscribe(try Subscribe.decode(&reader))
        case .suback: packet = .suback(try SubAck.decode(&reader))
        case .unsubscribe: packet = .unsubscribe(try Unsubscribe.decode(&reader))
        // §3.12–§3.14: no variable header, no payload.
        case .pingreq: packet = .pingreq
        case .pingresp: packet = .pingresp
        case .disconnect: packet = .disconnect
        }
        try reader.expectEnd()
        return packet
    }
}

extension Connect {
    /// CONNECT variable header (§3.1.2) and payload (§3.1.3).
    static func decode(_ reader: inout ByteReader) throws(MQTTProtocolError) -> Connect {
        // §3.1.2.1 Protocol Name: the UTF-8 string "MQTT", compared byte for byte.
        let protocolName = try reader.readLengthPrefixedBytes("protocol name")
        guard protocolName.elementsEqual("MQTT".utf8) else {
            throw MQTTProtocolError(
                .invalidProtocol, "CONNECT protocol name is not \"MQTT\" (MQTT 3.1.1 §3.1.2.1)")
        }
        // §3.1.2.2 Protocol Level: checked before the flags, so that a client speaking another
        // version (whose flags may mean something else) gets this error and CONNACK 0x01.
        let level = try reader.readByte("protocol level")
        guard level == 4 else {
            throw MQTTProtocolError(
                .unsupportedProtocolLevel,
                "CONNECT protocol level is \(level), only 4 (MQTT 3.1.1) is supported "
                    + "(MQTT 3.1.1 §3.1.2.2)")
        }

        // §3.1.2.3 Connect Flags.
        let flags = try reader.readByte("connect flags")
        guard flags & 0b0000_0001 == 0 else {
            throw MQTTProtocolError(
                .reservedConnectFlag, "CONNECT reserved flag (bit 0) is set (MQTT 3.1.1 §3.1.2.3)")
        }
        let cleanSession = flags & 0b0000_0010 != 0  // §3.1.2.4
        let willFlag = flags & 0b0000_0100 != 0  // §3.1.2.5
        let willQoSBits = (flags >> 3) & 0b11  // §3.1.2.6
        let willRetain = flags & 0b0010_0000 != 0  // §3.1.2.7
        let passwordFlag = flags & 0b0100_0000 != 0  // §3.1.2.9
        let usernameFlag = flags & 0b1000_0000 != 0  // §3.1.2.8
        guard let willQoS = QoS(rawValue: willQoSBits) else {
            throw MQTTProtocolError(.invalidQoS, "CONNECT Will QoS is 3 (MQTT 3.1.1 §3.1.2.6)")
        }
        guard willFlag || (willQoS == .atMostOnce && !willRetain) else {
            throw MQTTProtocolError(
                .inconsistentWillFlags,
                "CONNECT has Will QoS or Will Retain set without the Will Flag "
                    + "(MQTT 3.1.1 §3.1.2.6, §3.1.2.7)")
        }
        guard usernameFlag || !passwordFlag else {
            throw MQTTProtocolError(
                .passwordWithoutUsername,
                "CONNECT has the Password Flag set without the User Name Flag (MQTT 3.1.1 §3.1.2.9)")
        }

        // §3.1.2.10 Keep Alive.
        let keepAlive = try reader.readUInt16("keep alive")

        // §3.1.3 Payload: Client Identifier, [Will Topic, Will Message], [User Name], [Password].
        let clientID = try reader.readString("client identifier")
        guard !clientID.isEmpty || cleanSession else {
            throw MQTTProtocolError(
                .identifierRejected,
                "CONNECT has an empty client identifier with Clean Session 0 (MQTT 3.1.1 §3.1.3.1)")
        }
        var will: Will? = nil
        if willFlag {
            let topic = try reader.readString("will topic")
            try checkTopicName(topic, of: "CONNECT will topic")
            let payload = Array(try reader.readLengthPrefixedBytes("will message"))
            will = Will(topic: topic, payload: payload, qos: willQoS, retain: willRetain)
        }
        let username = usernameFlag ? try reader.readString("user name") : nil
        let password = passwordFlag ? Array(try reader.readLengthPrefixedBytes("password")) : nil

        return Connect(
            clientID: clientID, cleanSession: cleanSession, keepAlive: keepAlive,
            username: username, password: password, will: will)
    }
}

extension ConnAck {
    /// CONNACK variable header, §3.2.2. There is no payload.
    static func decode(_ reader: inout ByteReader) throws(MQTTProtocolError) -> ConnAck {
        let flags = try reader.readByte("connect acknowledge flags")
        guard flags & 0b1111_1110 == 0 else {
            throw MQTTProtocolError(
                .reservedConnAckFlags,
                "CONNACK acknowledge flags have reserved bits 7-1 set (MQTT 3.1.1 §3.2.2.1)")
        }
        let sessionPresent = flags & 0b1 != 0
        let returnCode = ReturnCode(rawValue: try reader.readByte("return code"))
        guard returnCode.isDefined else {
            throw MQTTProtocolError(
                .invalidReturnCode,
                "CONNACK return code \(returnCode.rawValue) is reserved (MQTT 3.1.1 §3.2.2.3)")
        }
        guard !sessionPresent || returnCode == .accepted else {
            throw MQTTProtocolError(
                .sessionPresentWithError,
                "CONNACK has Session Present set with return code \(returnCode.rawValue) "
                    + "(MQTT 3.1.1 §3.2.2.2)")
        }
        return ConnAck(sessionPresent: sessionPresent, returnCode: returnCode)
    }
}

extension Publish {
    /// PUBLISH variable header (§3.3.2) and payload (§3.3.3). `flags` were checked by
    /// ``FixedHeader``.
    static func decode(flags: UInt8, _ reader: inout ByteReader) throws(MQTTProtocolError)
        -> Publish
    {
        let fields = try decodeVariableHeader(flags: flags, &reader)
        return Publish(
            topic: fields.topic,
            payload: Array(reader.readRest()),
            qos: fields.qos,
            retain: flags & 0b0001 != 0,
            dup: flags & 0b1000 != 0,
            packetID: fields.packetID)
    }

    /// The variable header of a PUBLISH (§3.3.2): topic name and, at QoS 1 and 2, packet
    /// identifier. Also what ``MQTTDecoder`` reads of a PUBLISH it skips.
    static func decodeVariableHeader(flags: UInt8, _ reader: inout ByteReader) throws(MQTTProtocolError)
        -> (topic: String, qos: QoS, packetID: UInt16?)
    {
        guard let qos = QoS(rawValue: (flags >> 1) & 0b11) else {
            throw MQTTProtocolError(.invalidQoS, "PUBLISH QoS is 3 (MQTT 3.1.1 §3.3.1.2)")
        }
        let topic = try reader.readString("topic name")
        try checkTopicName(topic, of: "PUBLISH topic name")
        // §3.3.2.2: the packet identifier is only present at QoS 1 and 2.
        let packetID = qos == .atMostOnce ? nil : try reader.readPacketID()
        return (topic, qos, packetID)
    }
}

extension Subscribe {
    /// SUBSCRIBE variable header and payload, §3.8.2–§3.8.3.
    static func decode(_ reader: inout ByteReader) throws(MQTTProtocolError) -> Subscribe {
        let packetID = try reader.readPacketID()
        var topics: [TopicSubscription] = []
        while !reader.isAtEnd {
            let filter = try reader.readString("topic filter")
            try checkTopicFilter(filter, of: "SUBSCRIBE topic filter")
            let requested = try reader.readByte("requested QoS")
            guard requested & 0b1111_1100 == 0 else {
                throw MQTTProtocolError(
                    .reservedSubscriptionOptions,
                    "SUBSCRIBE requested-QoS byte 0x\(String(requested, radix: 16)) has reserved bits "
                        + "7-2 set (MQTT 3.1.1 §3.8.3)")
            }
            guard let qos = QoS(rawValue: requested) else {
                throw MQTTProtocolError(.invalidQoS, "SUBSCRIBE requests QoS 3 (MQTT 3.1.1 §3.8.3)")
            }
            topics.append(TopicSubscription(filter: filter, qos: qos))
        }
        guard !topics.isEmpty else {
            throw MQTTProtocolError(
                .emptySubscribe, "SUBSCRIBE has no topic filter (MQTT 3.1.1 §3.8.3)")
        }
        return Subscribe(packetID: packetID, topics: topics)
    }
}

extension SubAck {
    /// SUBACK variable header and payload, §3.9.2–§3.9.3.
    static func decode(_ reader: inout ByteReader) throws(MQTTProtocolError) -> SubAck {
        let packetID = try reader.readPacketID()
        let returnCodes = Array(reader.readRest())
        guard !returnCodes.isEmpty else {
            throw MQTTProtocolError(.emptySubAck, "SUBACK has no return code (MQTT 3.1.1 §3.9.3)")
        }
        for code in returnCodes where !isValidReturnCode(code) {
            throw MQTTProtocolError(
                .invalidReturnCode,
                "SUBACK return code 0x\(String(code, radix: 16)) is reserved (MQTT 3.1.1 §3.9.3)")
        }
        return SubAck(packetID: packetID, returnCodes: returnCodes)
    }
}

extension Unsubscribe {
    /// UNSUBSCRIBE variable header and payload, §3.10.2–§3.10.3.
    static func decode(_ reader: inout ByteReader) throws(MQTTProtocolError) -> Unsubscribe {
        let packetID = try reader.readPacketID()
        var filters: [String] = []
        while !reader.isAtEnd {
            let filter = try reader.readString("topic filter")
            try checkTopicFilter(filter, of: "UNSUBSCRIBE topic filter")
            filters.append(filter)
        }
        guard !filters.isEmpty else {
            throw MQTTProtocolError(
                .emptyUnsubscribe, "UNSUBSCRIBE has no topic filter (MQTT 3.1.1 §3.10.3)")
        }
        return Unsubscribe(packetID: packetID, filters: filters)
    }
}

/// Throws ``MQTTProtocolError/Code/invalidTopic`` unless `topic` is a valid topic name (§4.7).
/// UTF-8 validity and U+0000 were already checked by ``ByteReader/readString(_:)``.
private func checkTopicName(_ topic: String, of field: String) throws(MQTTProtocolError) {
    guard TopicFilter.validateTopicName(topic) else {
        throw MQTTProtocolError(
            .invalidTopic,
            "\(field) is empty or contains a wildcard '+' or '#' (MQTT 3.1.1 §4.7, §3.3.2.1)")
    }
}

/// Throws ``MQTTProtocolError/Code/invalidTopicFilter`` unless `filter` is a valid topic
/// filter (§4.7.1). The message leaves the filter out: it is peer-controlled text.
private func checkTopicFilter(_ filter: String, of field: String) throws(MQTTProtocolError) {
    guard TopicFilter.validateFilter(filter) else {
        throw MQTTProtocolError(
            .invalidTopicFilter,
            "\(field) is empty or misuses the '+' / '#' wildcards (MQTT 3.1.1 §4.7.1)")
    }
}
