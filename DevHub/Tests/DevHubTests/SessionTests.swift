import IoTHubWire
import MQTTCodec
import StrictJSON
import Testing

@testable import DevHubKit

/// A real session driven over a socketpair by ``SessionHarness``: the exact bytes DevHub answers.
@Suite struct SessionTests {
    func encode(_ packets: MQTTPacket...) -> [UInt8] {
        var bytes: [UInt8] = []
        for packet in packets { packet.encode(into: &bytes) }
        return bytes
    }

    func decode(_ bytes: [UInt8]) throws -> [MQTTPacket] {
        var decoder = MQTTDecoder()
        decoder.append(bytes)
        var packets: [MQTTPacket] = []
        while let packet = try decoder.next() { packets.append(packet) }
        return packets
    }

    func publishes(_ packets: [MQTTPacket]) -> [Publish] {
        packets.compactMap { if case .publish(let publish) = $0 { publish } else { nil } }
    }

    @Test func hubSubscriptionsAreLimitedToTheDevicesOwnTopics() throws {
        let harness = try SessionHarness()
        let subscribe = Subscribe(
            packetID: 1,
            topics: [
                TopicSubscription(filter: "$iothub/twin/res/#", qos: .atMostOnce),
                TopicSubscription(
                    filter: "devices/\(SessionHarness.deviceID)/messages/devicebound/#", qos: .exactlyOnce),
                TopicSubscription(filter: "devices/other-device/messages/devicebound/#", qos: .atLeastOnce),
                TopicSubscription(filter: "#", qos: .atMostOnce),
            ])
        let outcome = try harness.run(
            prelude: .hubDevice, input: encode(.subscribe(subscribe)), linger: .milliseconds(100))
        let packets = try decode(outcome.output)
        #expect(packets.first == .connack(ConnAck(sessionPresent: false, returnCode: .accepted)))
        #expect(packets.contains(.suback(SubAck(packetID: 1, returnCodes: [0, 1, 0x80, 0x80]))))
        #expect(outcome.closed)
    }

    @Test func twinGetAndReportedPatch() throws {
        let harness = try SessionHarness()
        let input = encode(
            .subscribe(
                Subscribe(
                    packetID: 1, topics: [TopicSubscription(filter: "$iothub/twin/res/#", qos: .atMostOnce)])),
            .publish(
                Publish(
                    topic: "$iothub/twin/PATCH/properties/reported/?$rid=p1",
                    payload: Array(#"{"fw":"1.0"}"#.utf8))),
            .publish(
                Publish(
                    topic: "$iothub/twin/PATCH/properties/reported/?$rid=bad", payload: Array("not json".utf8)
                )))
        let first = publishes(
            try decode(
                try harness.run(prelude: .hubDevice, input: input, linger: .milliseconds(300)).output))
        #expect(first.contains { $0.topic == "$iothub/twin/res/204/?$rid=p1&$version=2" })
        #expect(first.contains { $0.topic == "$iothub/twin/res/400/?$rid=bad" })

        let get = encode(
            .subscribe(
                Subscribe(
                    packetID: 1, topics: [TopicSubscription(filter: "$iothub/twin/res/#", qos: .atMostOnce)])),
            .publish(Publish(topic: "$iothub/twin/GET/?$rid=7", payload: [])))
        let second = publishes(
            try decode(
                try harness.run(prelude: .hubDevice, input: get, linger: .milliseconds(300)).output))
        let response = try #require(second.first { $0.topic == "$iothub/twin/res/200/?$rid=7" })
        #expect(
            String(decoding: response.payload, as: UTF8.self)
                == #"{"desired":{"$version":1},"reported":{"fw":"1.0","$version":2}}"#)
    }

    @Test func telemetryIsAcknowledgedOnceStoredWithItsPropertyBag() throws {
        let harness = try SessionHarness()
        let topic =
            "devices/\(SessionHarness.deviceID)/messages/events/%24.ct=text%2Fplain&z=1&a=x%26y&flag"
        let input = encode(
            .publish(Publish(topic: topic, payload: Array("21.5".utf8), qos: .atLeastOnce, packetID: 9)))
        let packets = try decode(
            try harness.run(prelude: .hubDevice, input: input, linger: .milliseconds(300)).output)
        #expect(packets.contains(.puback(9)))
        let stored = try harness.store.telemetry(deviceID: SessionHarness.deviceID)
        #expect(stored.count == 1)
        #expect(
            stored.first?.properties == [
                MessageProperty("$.ct", "text/plain"), MessageProperty("z", "1"),
                MessageProperty("a", "x&y"),
                MessageProperty("flag", nil),
            ])
        #expect(stored.first?.payload == Array("21.5".utf8))
    }

    @Test func publishingToAnotherDevicesTopicClosesTheConnection() throws {
        let harness = try SessionHarness()
        let input = encode(
            .publish(
                Publish(
                    topic: "devices/other-device/messages/events/", payload: [1], qos: .atLeastOnce,
                    packetID: 3)))
        let outcome = try harness.run(prelude: .hubDevice, input: input, linger: .milliseconds(200))
        #expect(!(try decode(outcome.output)).contains(.puback(3)))
        #expect(
            harness.takeLogLines().contains {
                $0.contains("published to \"devices/other-device/messages/events/\"")
            })
        #expect(try harness.store.telemetry().isEmpty)
    }

    @Test(arguments: [
        ("garbage after CONNECT", [0xF0, 0x00] as [UInt8], "unknownPacketType"),
        ("oversize PUBLISH", [0x30, 0xFF, 0xFF, 0x7F] as [UInt8], "packetTooLarge"),
        ("QoS 2", [0x34, 0x07, 0x00, 0x01, 0x61, 0x00, 0x01, 0x78, 0x79] as [UInt8], "QoS 2"),
        ("second CONNECT", SessionHarness.connectPacket(for: .hubDevice), "unexpected CONNECT"),
    ])
    func protocolViolationsCloseWithALogLine(name: String, bytes: [UInt8], logged: String) throws {
        let harness = try SessionHarness()
        let outcome = try harness.run(
            prelude: .hubDevice, input: bytes + encode(.pingreq), linger: .milliseconds(100))
        #expect(outcome.closed)
        #expect(!(try decode(outcome.output)).contains(.pingresp), "\(name)")
        let lines = harness.takeLogLines()
        #expect(
            lines.contains { $0.contains("closing connection") && $0.contains(logged) },
            "\(name): \(lines)")
    }

    @Test func theFirstPacketMustBeConnect() throws {
        let harness = try SessionHarness()
        let outcome = try harness.run(prelude: .none, input: encode(.pingreq))
        #expect(outcome.output.isEmpty && outcome.closed)
        #expect(harness.takeLogLines().contains { $0.contains("first packet was PINGREQ") })
    }

    @Test func refusedConnects() throws {
        let harness = try SessionHarness()
        func connack(_ connect: Connect) throws -> [MQTTPacket] {
            try decode(
                try harness.run(
                    prelude: .none, input: encode(.connect(connect)), linger: .milliseconds(300)
                ).output)
        }
        let wrongKey = SASVerifier.makeToken(
            resource: "\(SessionHarness.hubName)/devices/\(SessionHarness.deviceID)",
            key: Array(repeating: 1, count: 32),
            expiry: 4_102_444_800)
        let username = "\(SessionHarness.hubName)/\(SessionHarness.deviceID)/?api-version=2021-04-12"
        #expect(
            try connack(
                Connect(
                    clientID: SessionHarness.deviceID, username: username, password: Array(wrongKey.utf8)))
                == [.connack(ConnAck(returnCode: .notAuthorized))])
        #expect(
            try connack(
                Connect(
                    clientID: SessionHarness.deviceID, username: "nonsense", password: Array(wrongKey.utf8)))
                == [.connack(ConnAck(returnCode: .badUsernameOrPassword))])
        #expect(
            try connack(
                Connect(
                    clientID: SessionHarness.deviceID, username: username, password: Array("secret".utf8)))
                == [.connack(ConnAck(returnCode: .badUsernameOrPassword))])
        #expect(
            try connack(
                Connect(clientID: "someone-else", username: username, password: Array(wrongKey.utf8)))
                == [.connack(ConnAck(returnCode: .identifierRejected))])
        // No log line carries the signature.
        let signature = wrongKey.components(separatedBy: "sig=")[1].components(separatedBy: "&")[0]
        #expect(!harness.takeLogLines().contains { $0.contains(signature) })
    }

    @Test func dpsRegistrationThenOperationStatus() throws {
        let harness = try SessionHarness()
        let subscribe = MQTTPacket.subscribe(
            Subscribe(
                packetID: 1,
                topics: [TopicSubscription(filter: "$dps/registrations/res/#", qos: .atLeastOnce)]))
        let register = MQTTPacket.publish(
            Publish(
                topic: "$dps/registrations/PUT/iotdps-register/?$rid=1",
                payload: Array(#"{"registrationId":"\#(SessionHarness.registrationID)"}"#.utf8),
                qos: .atLeastOnce, packetID: 2))
        let first = try decode(
            try harness.run(
                prelude: .dpsRegistration, input: encode(subscribe, register), linger: .milliseconds(300)
            ).output)
        #expect(first.contains(.suback(SubAck(packetID: 1, returnCodes: [1]))))
        let accepted = try #require(
            publishes(first).first { $0.topic.hasPrefix("$dps/registrations/res/202/") })
        #expect(accepted.topic == "$dps/registrations/res/202/?$rid=1&retry-after=1")
        let body = try JSONValue(parsing: accepted.payload)
        #expect(body["status"] == .string("assigning"))
        let operationID = try #require(body["operationId"]?.stringValue)

        let poll = MQTTPacket.publish(
            Publish(
                topic:
                    "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=\(operationID)",
                payload: []))
        let second = publishes(
            try decode(
                try harness.run(
                    prelude: .dpsRegistration, input: encode(subscribe, poll), linger: .milliseconds(300)
                ).output))
        let status = try #require(second.first { $0.topic.hasPrefix("$dps/registrations/res/200/") })
        let result = try JSONValue(parsing: status.payload)
        #expect(result["status"] == .string("assigned"))
        #expect(result["registrationState"]?["assignedHub"] == .string(SessionHarness.hubName))
        #expect(result["registrationState"]?["deviceId"] == .string(SessionHarness.registrationID))
        // The hub device exists with the derived key.
        let device = try #require(try harness.store.device(SessionHarness.registrationID))
        #expect(
            device.primaryKey.bytes
                == SASVerifier.deriveDeviceKey(
                    groupKey: SessionHarness.groupKey.bytes, registrationID: SessionHarness.registrationID))
    }
}
