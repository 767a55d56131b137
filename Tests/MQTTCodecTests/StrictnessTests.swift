import MQTTCodec
import Testing

/// Every rule the decoder enforces, each with the error code it must produce.
@Suite("Strictness: malformed packets are rejected with their named code")
struct StrictnessTests {
    struct Violation: Sendable, CustomTestStringConvertible {
        var rule: String
        var bytes: [UInt8]
        var code: MQTTProtocolError.Code
        var testDescription: String { "\(code): \(rule)" }
    }

    /// A valid CONNECT payload (client id "c").
    static let clientC = mqttString("c")

    static let violations: [Violation] = [
        // §2.2.1 packet types 0 and 15 are reserved.
        Violation(rule: "type 0", bytes: [0x00, 0x00], code: .unknownPacketType),
        Violation(rule: "type 15", bytes: [0xF0, 0x00], code: .unknownPacketType),
        // §2.2.2 fixed-header flags.
        Violation(
            rule: "CONNECT flags 0001",
            bytes: frame(0x11, connectBody(flags: 0x02, payload: clientC)), code: .reservedFlags),
        Violation(rule: "CONNACK flags 1000", bytes: [0x28, 0x02, 0x00, 0x00], code: .reservedFlags),
        Violation(rule: "PUBACK flags 0010", bytes: [0x42, 0x02, 0x00, 0x01], code: .reservedFlags),
        Violation(rule: "PUBREC flags 0010", bytes: [0x52, 0x02, 0x00, 0x01], code: .reservedFlags),
        Violation(rule: "PUBREL flags 0000", bytes: [0x60, 0x02, 0x00, 0x01], code: .reservedFlags),
        Violation(rule: "PUBCOMP flags 0001", bytes: [0x71, 0x02, 0x00, 0x01], code: .reservedFlags),
        Violation(
            rule: "SUBSCRIBE flags 0000", bytes: frame(0x80, [0x00, 0x01] + mqttString("a") + [0]),
            code: .reservedFlags),
        Violation(
            rule: "SUBSCRIBE flags 0011", bytes: frame(0x83, [0x00, 0x01] + mqttString("a") + [0]),
            code: .reservedFlags),
        Violation(
            rule: "SUBACK flags 0010", bytes: [0x92, 0x03, 0x00, 0x01, 0x00], code: .reservedFlags),
        Violation(
            rule: "UNSUBSCRIBE flags 0000", bytes: frame(0xA0, [0x00, 0x01] + mqttString("a")),
            code: .reservedFlags),
        Violation(rule: "UNSUBACK flags 0010", bytes: [0xB2, 0x02, 0x00, 0x01], code: .reservedFlags),
        Violation(rule: "PINGREQ flags 0001", bytes: [0xC1, 0x00], code: .reservedFlags),
        Violation(rule: "PINGRESP flags 0100", bytes: [0xD4, 0x00], code: .reservedFlags),
        Violation(rule: "DISCONNECT flags 1000", bytes: [0xE8, 0x00], code: .reservedFlags),
        // §3.3.1 PUBLISH flags.
        Violation(
            rule: "PUBLISH QoS 3", bytes: frame(0x36, mqttString("a") + [0x00, 0x01]), code: .invalidQoS),
        Violation(
            rule: "PUBLISH QoS 0 with DUP", bytes: frame(0x38, mqttString("a")), code: .dupWithQoS0),
        // §2.2.3 Remaining Length.
        Violation(
            rule: "five-byte remaining length", bytes: [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            code: .malformedRemainingLength),
        Violation(
            rule: "four continuation bytes", bytes: [0xC0, 0x80, 0x80, 0x80, 0x80],
            code: .malformedRemainingLength),
        // Fields versus Remaining Length.
        Violation(rule: "PUBACK with 1 byte", bytes: [0x40, 0x01, 0x00], code: .truncated),
        Violation(
            rule: "PUBACK with 3 bytes", bytes: [0x40, 0x03, 0x00, 0x01, 0x00], code: .trailingBytes),
        Violation(rule: "UNSUBACK with 0 bytes", bytes: [0xB0, 0x00], code: .truncated),
        Violation(rule: "PINGREQ with a body", bytes: [0xC0, 0x01, 0x00], code: .trailingBytes),
        Violation(rule: "PINGRESP with a body", bytes: [0xD0, 0x01, 0x00], code: .trailingBytes),
        Violation(rule: "DISCONNECT with a body", bytes: [0xE0, 0x01, 0x00], code: .trailingBytes),
        Violation(rule: "CONNACK with 1 byte", bytes: [0x20, 0x01, 0x00], code: .truncated),
        Violation(
            rule: "CONNACK with 3 bytes", bytes: [0x20, 0x03, 0x00, 0x00, 0x00], code: .trailingBytes),
        Violation(rule: "PUBLISH with no topic", bytes: [0x30, 0x00], code: .truncated),
        Violation(
            rule: "PUBLISH topic longer than the packet", bytes: [0x30, 0x03, 0x00, 0x05, 0x61],
            code: .truncated),
        Violation(
            rule: "QoS 1 PUBLISH without packet id", bytes: frame(0x32, mqttString("a") + [0x00]),
            code: .truncated),
        Violation(
            rule: "CONNECT without keep alive", bytes: frame(0x10, mqttString("MQTT") + [4, 2]),
            code: .truncated),
        Violation(
            rule: "CONNECT with username flag but no username",
            bytes: frame(0x10, connectBody(flags: 0x82, payload: clientC)), code: .truncated),
        Violation(
            rule: "CONNECT with a byte after its last field",
            bytes: frame(0x10, connectBody(flags: 0x02, payload: clientC + [0x00])), code: .trailingBytes),
        Violation(
            rule: "CONNECT with username but no flag",
            bytes: frame(0x10, connectBody(flags: 0x02, payload: clientC + mqttString("u"))),
            code: .trailingBytes),
        Violation(
            rule: "SUBSCRIBE filter without requested QoS",
            bytes: frame(0x82, [0x00, 0x01] + mqttString("a")), code: .truncated),
        // §1.5.3 UTF-8 strings.
        Violation(
            rule: "topic with byte 0xFF", bytes: frame(0x30, mqttString([0x61, 0xFF])), code: .invalidUTF8
        ),
        Violation(
            rule: "topic with U+0000", bytes: frame(0x30, mqttString([0x61, 0x00, 0x62])),
            code: .invalidUTF8),
        Violation(
            rule: "topic with overlong '/'", bytes: frame(0x30, mqttString([0xC0, 0xAF])),
            code: .invalidUTF8),
        Violation(
            rule: "topic with a surrogate (U+D800)", bytes: frame(0x30, mqttString([0xED, 0xA0, 0x80])),
            code: .invalidUTF8),
        Violation(
            rule: "topic with truncated sequence", bytes: frame(0x30, mqttString([0xE2, 0x82])),
            code: .invalidUTF8),
        Violation(
            rule: "client id with invalid UTF-8",
            bytes: frame(0x10, connectBody(flags: 0x02, payload: mqttString([0x80]))), code: .invalidUTF8),
        Violation(
            rule: "user name with U+0000",
            bytes: frame(0x10, connectBody(flags: 0x82, payload: clientC + mqttString([0x00]))),
            code: .invalidUTF8),
        Violation(
            rule: "SUBSCRIBE filter with invalid UTF-8",
            bytes: frame(0x82, [0x00, 0x01] + mqttString([0xFE]) + [0]), code: .invalidUTF8),
        Violation(
            rule: "UNSUBSCRIBE filter with U+0000",
            bytes: frame(0xA2, [0x00, 0x01] + mqttString([0x00])), code: .invalidUTF8),
        // §4.7 topic names.
        Violation(rule: "PUBLISH empty topic", bytes: frame(0x30, mqttString("")), code: .invalidTopic),
        Violation(
            rule: "PUBLISH topic with '+'", bytes: frame(0x30, mqttString("a/+")), code: .invalidTopic),
        Violation(
            rule: "PUBLISH topic with '#'", bytes: frame(0x30, mqttString("#")), code: .invalidTopic),
        Violation(
            rule: "will topic with '#'",
            bytes: frame(
                0x10, connectBody(flags: 0x06, payload: clientC + mqttString("a/#") + mqttString(""))),
            code: .invalidTopic),
        Violation(
            rule: "empty will topic",
            bytes: frame(
                0x10, connectBody(flags: 0x06, payload: clientC + mqttString("") + mqttString(""))),
            code: .invalidTopic),
        // §4.7.1 topic filters.
        Violation(
            rule: "SUBSCRIBE empty filter", bytes: frame(0x82, [0x00, 0x01] + mqttString("") + [0]),
            code: .invalidTopicFilter),
        Violation(
            rule: "SUBSCRIBE 'sport/tennis#'",
            bytes: frame(0x82, [0x00, 0x01] + mqttString("sport/tennis#") + [0]),
            code: .invalidTopicFilter),
        Violation(
            rule: "SUBSCRIBE 'sport/#/ranking'",
            bytes: frame(0x82, [0x00, 0x01] + mqttString("sport/#/ranking") + [0]),
            code: .invalidTopicFilter),
        Violation(
            rule: "SUBSCRIBE 'sport+'", bytes: frame(0x82, [0x00, 0x01] + mqttString("sport+") + [0]),
            code: .invalidTopicFilter),
        Violation(
            rule: "UNSUBSCRIBE 'a/b+'", bytes: frame(0xA2, [0x00, 0x01] + mqttString("a/b+")),
            code: .invalidTopicFilter),
        // §3.1.2 CONNECT variable header.
        Violation(
            rule: "protocol name MQIsdp (MQTT 3.1)",
            bytes: frame(0x10, connectBody(name: "MQIsdp", level: 3, flags: 0x02, payload: clientC)),
            code: .invalidProtocol),
        Violation(
            rule: "protocol name 'mqtt'",
            bytes: frame(0x10, connectBody(name: "mqtt", flags: 0x02, payload: clientC)),
            code: .invalidProtocol),
        Violation(
            rule: "protocol level 3",
            bytes: frame(0x10, connectBody(level: 3, flags: 0x02, payload: clientC)),
            code: .unsupportedProtocolLevel),
        Violation(
            rule: "protocol level 5 (MQTT 5)",
            bytes: frame(0x10, connectBody(level: 5, flags: 0x02, payload: [0x00] + clientC)),
            code: .unsupportedProtocolLevel),
        Violation(
            rule: "reserved connect flag",
            bytes: frame(0x10, connectBody(flags: 0x03, payload: clientC)), code: .reservedConnectFlag),
        Violation(
            rule: "will QoS 1 without will flag",
            bytes: frame(0x10, connectBody(flags: 0x0A, payload: clientC)), code: .inconsistentWillFlags),
        Violation(
            rule: "will retain without will flag",
            bytes: frame(0x10, connectBody(flags: 0x22, payload: clientC)), code: .inconsistentWillFlags),
        Violation(
            rule: "will QoS 3",
            bytes: frame(
                0x10, connectBody(flags: 0x1E, payload: clientC + mqttString("w") + mqttString(""))),
            code: .invalidQoS),
        Violation(
            rule: "password without user name",
            bytes: frame(0x10, connectBody(flags: 0x42, payload: clientC + mqttString("p"))),
            code: .passwordWithoutUsername),
        Violation(
            rule: "empty client id without clean session",
            bytes: frame(0x10, connectBody(flags: 0x00, payload: mqttString(""))),
            code: .identifierRejected),
        // §3.2.2 CONNACK.
        Violation(
            rule: "CONNACK reserved flag", bytes: [0x20, 0x02, 0x02, 0x00], code: .reservedConnAckFlags),
        Violation(
            rule: "CONNACK return code 6", bytes: [0x20, 0x02, 0x00, 0x06], code: .invalidReturnCode),
        Violation(
            rule: "CONNACK session present on refusal", bytes: [0x20, 0x02, 0x01, 0x05],
            code: .sessionPresentWithError),
        // §2.3.1 packet identifiers.
        Violation(
            rule: "QoS 1 PUBLISH with id 0", bytes: frame(0x32, mqttString("a") + [0x00, 0x00]),
            code: .zeroPacketID),
        Violation(
            rule: "QoS 2 PUBLISH with id 0", bytes: frame(0x34, mqttString("a") + [0x00, 0x00, 0x01]),
            code: .zeroPacketID),
        Violation(rule: "PUBACK id 0", bytes: [0x40, 0x02, 0x00, 0x00], code: .zeroPacketID),
        Violation(rule: "PUBREC id 0", bytes: [0x50, 0x02, 0x00, 0x00], code: .zeroPacketID),
        Violation(rule: "PUBREL id 0", bytes: [0x62, 0x02, 0x00, 0x00], code: .zeroPacketID),
        Violation(rule: "PUBCOMP id 0", bytes: [0x70, 0x02, 0x00, 0x00], code: .zeroPacketID),
        Violation(
            rule: "SUBSCRIBE id 0", bytes: frame(0x82, [0x00, 0x00] + mqttString("a") + [0]),
            code: .zeroPacketID),
        Violation(rule: "SUBACK id 0", bytes: [0x90, 0x03, 0x00, 0x00, 0x00], code: .zeroPacketID),
        Violation(
            rule: "UNSUBSCRIBE id 0", bytes: frame(0xA2, [0x00, 0x00] + mqttString("a")),
            code: .zeroPacketID),
        Violation(rule: "UNSUBACK id 0", bytes: [0xB0, 0x02, 0x00, 0x00], code: .zeroPacketID),
        // §3.8–§3.10 SUBSCRIBE, SUBACK, UNSUBSCRIBE.
        Violation(
            rule: "SUBSCRIBE without topics", bytes: [0x82, 0x02, 0x00, 0x01], code: .emptySubscribe),
        Violation(
            rule: "SUBSCRIBE requesting QoS 3",
            bytes: frame(0x82, [0x00, 0x01] + mqttString("a") + [0x03]),
            code: .invalidQoS),
        Violation(
            rule: "SUBSCRIBE with reserved option bits",
            bytes: frame(0x82, [0x00, 0x01] + mqttString("a") + [0x04]),
            code: .reservedSubscriptionOptions),
        Violation(
            rule: "SUBACK without return codes", bytes: [0x90, 0x02, 0x00, 0x01], code: .emptySubAck),
        Violation(
            rule: "SUBACK return code 0x03", bytes: [0x90, 0x04, 0x00, 0x01, 0x00, 0x03],
            code: .invalidReturnCode),
        Violation(
            rule: "SUBACK return code 0x81", bytes: [0x90, 0x03, 0x00, 0x01, 0x81],
            code: .invalidReturnCode),
        Violation(
            rule: "UNSUBSCRIBE without filters", bytes: [0xA2, 0x02, 0x00, 0x01], code: .emptyUnsubscribe),
    ]

    @Test("rejected with its code", arguments: violations)
    func rejected(violation: Violation) {
        let error = #expect(throws: MQTTProtocolError.self) { try decodeAll(violation.bytes) }
        #expect(error?.code == violation.code, "\(error?.description ?? "no error")")
    }

    @Test("rejected with the same code when fed one byte at a time", arguments: violations)
    func rejectedByteByByte(violation: Violation) {
        var decoder = MQTTDecoder()
        var thrown: MQTTProtocolError?
        for byte in violation.bytes where thrown == nil {
            decoder.append(CollectionOfOne(byte))
            do throws(MQTTProtocolError) {
                while try decoder.next() != nil {}
            } catch {
                thrown = error
            }
        }
        #expect(thrown?.code == violation.code)
    }

    @Test("the protocol-level and client-id errors map to a CONNACK return code")
    func connAckReturnCodes() {
        #expect(
            MQTTProtocolError(.unsupportedProtocolLevel, "").connAckReturnCode
                == .unacceptableProtocolVersion)
        #expect(MQTTProtocolError(.identifierRejected, "").connAckReturnCode == .identifierRejected)
        #expect(MQTTProtocolError(.reservedFlags, "").connAckReturnCode == nil)
    }

    @Test("an error message names the code, packet and spec section")
    func errorDescription() {
        let error = decodeError([0x40, 0x02, 0x00, 0x00])
        #expect(error?.code == .zeroPacketID)
        #expect(error?.description.contains("zeroPacketID") == true)
        #expect(error?.message.contains("PUBACK") == true)
        #expect(error?.message.contains("§2.3.1") == true)
    }

    @Test("a bad first byte is rejected before the rest arrives")
    func firstByteCheckedEarly() {
        var decoder = MQTTDecoder()
        decoder.append([0xF0])
        let error = #expect(throws: MQTTProtocolError.self) { try decoder.next() }
        #expect(error?.code == .unknownPacketType)
    }
}
