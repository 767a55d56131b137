import Foundation
import GatehouseTestSupport
import IoTHubWire
import Testing

@testable import DevHubKit

/// The pure parts of DevHub's AMQP endpoint (docs/protocols.md §3): addresses and audiences,
/// the SASL exchange before proton, message encoding, IoT Hub's property mapping. The endpoint
/// as a whole is tested by an independent client: `Tests/python-amqp`.
@Suite struct AMQPAddressTests {
    @Test(arguments: [
        ("amqps://hub.example/devices/dev-1/messages/events", AMQPDeviceAddress.Endpoint.telemetry),
        ("/devices/dev-1/messages/events", .telemetry),
        ("amqps://hub.example/devices/dev-1/messages/devicebound", .cloudToDevice),
        ("amqps://hub.example/devices/dev-1/messages/deviceBound", .cloudToDevice),
        ("amqps://hub.example/devices/dev-1/methods/devicebound", .methods),
        ("amqps://hub.example/devices/dev-1/methods/deviceBound/", .methods),
        ("amqps://hub.example/devices/dev-1/twin", .twin),
        ("amqps://hub.example/devices/dev%2D1/twin?api-version=2020-09-30", .twin),
    ])
    func linkAddresses(address: String, endpoint: AMQPDeviceAddress.Endpoint) throws {
        let parsed = try #require(AMQPDeviceAddress(linkAddress: address))
        #expect(parsed.deviceID == "dev-1")
        #expect(parsed.endpoint == endpoint)
        #expect(parsed.moduleID == nil)
    }

    @Test func moduleAddress() throws {
        let parsed = try #require(
            AMQPDeviceAddress(linkAddress: "amqps://h.example/devices/d/modules/m/messages/events"))
        #expect(parsed.deviceID == "d")
        #expect(parsed.moduleID == "m")
        #expect(parsed.hostName == "h.example")
    }

    @Test(arguments: [
        "", "$cbs", "amqps://hub.example", "amqps://hub.example/devices",
        "amqps://hub.example/devices//messages/events",
        "amqps://hub.example/devices/dev-1", "amqps://hub.example/devices/dev-1/messages",
        "amqps://hub.example/devices/dev-1/messages/events/extra", "amqps://hub.example/things/dev-1/twin",
        "amqps://hub.example/devices/bad#id/twin", "amqps://hub.example/devices/dev-1/modules/twin",
    ])
    func notDeviceLinks(address: String) {
        #expect(AMQPDeviceAddress(linkAddress: address) == nil)
    }

    @Test func audiences() throws {
        let cSDK = try #require(AMQPDeviceAddress(audience: "devhub.local/devices/dev-1"))
        #expect(cSDK.hostName == "devhub.local" && cSDK.deviceID == "dev-1" && cSDK.endpoint == .device)
        // The C# SDK percent-encodes the id.
        let csharp = try #require(AMQPDeviceAddress(audience: "devhub.local/devices/dev%3A1"))
        #expect(csharp.deviceID == "dev:1")
        #expect(AMQPDeviceAddress(audience: "/devices/dev-1") == nil)  // no host
        #expect(AMQPDeviceAddress(audience: "devhub.local") == nil)  // a hub-level policy audience
        #expect(AMQPDeviceAddress(audience: "devhub.local/devices/dev-1/messages/events") == nil)
    }
}

@Suite struct AMQPSASLTests {
    /// A sasl-init frame as uAMQP writes it: mechanism only, no initial response, no hostname.
    static func saslInit(_ mechanism: String) -> [UInt8] {
        let symbol: [UInt8] = [0xa3, UInt8(mechanism.utf8.count)] + mechanism.utf8
        return AMQPSASLNegotiator.frame([0x00, 0x53, 0x41, 0xc0, UInt8(1 + symbol.count), 1] + symbol)
    }

    @Test func mssbcbsAsTheCSDKDoesIt() throws {
        var negotiator = AMQPSASLNegotiator()
        let first = negotiator.feed(AMQPSASLNegotiator.saslHeader)
        guard case .reply(let reply) = first else {
            Issue.record("expected a reply, got \(first)")
            return
        }
        #expect(Array(reply.prefix(8)) == AMQPSASLNegotiator.saslHeader)
        let mechanisms = Array(reply.dropFirst(8))
        #expect(mechanisms == AMQPSASLNegotiator.mechanismsFrame(["MSSBCBS", "ANONYMOUS"]))
        // The frame's body: sasl-mechanisms (0x40), a list holding an array of sym8.
        #expect(Array(mechanisms[8..<11]) == [0x00, 0x53, 0x40])
        #expect(String(decoding: mechanisms, as: UTF8.self).contains("MSSBCBS"))

        // sasl-init and the AMQP header pipelined behind it, then the open frame's first bytes.
        let open: [UInt8] = [0, 0, 0, 0x10]
        let step = negotiator.feed(Self.saslInit("MSSBCBS") + AMQPSASLNegotiator.amqpHeader + open)
        #expect(
            step
                == .startAMQP(
                    reply: AMQPSASLNegotiator.outcomeFrame(code: 0), remaining: AMQPSASLNegotiator.amqpHeader + open))
        #expect(negotiator.mechanism == "MSSBCBS")
        #expect(negotiator.state == .amqp)
    }

    @Test func byteByByte() {
        var negotiator = AMQPSASLNegotiator()
        var replies: [UInt8] = []
        var started: [UInt8]?
        for byte in AMQPSASLNegotiator.saslHeader + Self.saslInit("ANONYMOUS") + AMQPSASLNegotiator.amqpHeader {
            switch negotiator.feed([byte]) {
            case .reply(let bytes): replies += bytes
            case .startAMQP(let bytes, let remaining):
                replies += bytes
                started = remaining
            case .fail(_, let reason): Issue.record("failed: \(reason)")
            }
        }
        #expect(started == AMQPSASLNegotiator.amqpHeader)
        #expect(replies.suffix(16) == AMQPSASLNegotiator.outcomeFrame(code: 0)[...])
        #expect(negotiator.mechanism == "ANONYMOUS")
    }

    @Test func noSASLLayerAsTheCSharpSDK() {
        var negotiator = AMQPSASLNegotiator()
        let step = negotiator.feed(AMQPSASLNegotiator.amqpHeader + [1, 2, 3])
        #expect(step == .startAMQP(reply: [], remaining: AMQPSASLNegotiator.amqpHeader + [1, 2, 3]))
        #expect(negotiator.mechanism == nil)
    }

    @Test func refusals() {
        var plain = AMQPSASLNegotiator()
        _ = plain.feed(AMQPSASLNegotiator.saslHeader)
        guard case .fail(let reply, _) = plain.feed(Self.saslInit("PLAIN")) else {
            Issue.record("PLAIN is not offered")
            return
        }
        #expect(reply == AMQPSASLNegotiator.outcomeFrame(code: 1))

        var tls = AMQPSASLNegotiator()
        guard case .fail = tls.feed(Array("AMQP".utf8) + [2, 1, 0, 0]) else {
            Issue.record("the TLS header is refused (TLS is below)")
            return
        }
        var http = AMQPSASLNegotiator()
        guard case .fail = http.feed(Array("GET / HTTP/1.1\r\n".utf8)) else {
            Issue.record("not AMQP")
            return
        }
        // A frame claiming 1 GiB is refused before anything is buffered.
        var huge = AMQPSASLNegotiator()
        _ = huge.feed(AMQPSASLNegotiator.saslHeader)
        guard case .fail = huge.feed([0x40, 0, 0, 0, 2, 1, 0, 0]) else {
            Issue.record("oversized SASL frame")
            return
        }
        // Garbage where sasl-init belongs.
        var garbage = AMQPSASLNegotiator()
        _ = garbage.feed(AMQPSASLNegotiator.saslHeader)
        guard
            case .fail = garbage.feed(AMQPSASLNegotiator.frame([0x00, 0x53, 0x41, 0xc0, 0x05, 0x01, 0xa3, 0x09, 0x41]))
        else {
            Issue.record("truncated mechanism")
            return
        }
    }
}

@Suite struct AMQPMessageTests {
    @Test func roundTrip() throws {
        var message = AMQPMessage()
        message.messageID = .ulong(7)
        message.correlationID = .uuid(UUID())
        message.userID = Array("user".utf8)
        message.to = "/devices/dev-1/messages/deviceBound"
        message.replyTo = "cbs"
        message.contentType = "application/json"
        message.contentEncoding = "utf-8"
        message.creationTime = 1_700_000_000_000
        message.applicationProperties = [("status-code", .int32(200)), ("temp", .string("21.5"))]
        message.messageAnnotations = [("x-opt-sequence-number", .int(3)), ("iothub-deliverycount", .int32(1))]
        message.body = .data(Array("{\"a\":1}".utf8))
        let decoded = try #require(ProtonCodec.decode(ProtonCodec.encode(message)))
        #expect(decoded == message)

        var value = AMQPMessage()
        value.body = .value(.string("SharedAccessSignature sr=x&sig=y&se=1"))
        #expect(
            ProtonCodec.decode(ProtonCodec.encode(value))?.bodyBytes
                == Array("SharedAccessSignature sr=x&sig=y&se=1".utf8))
    }

    @Test func batches() throws {
        func inner(_ text: String, _ property: String) -> [UInt8] {
            var message = AMQPMessage()
            message.applicationProperties = [("n", .string(property))]
            message.body = .data(Array(text.utf8))
            return ProtonCodec.encode(message)
        }
        // The outer message of a batch: one data section per encoded message.
        var outer: [UInt8] = []
        for part in [inner("one", "1"), inner("two", "2")] {
            let size = UInt32(part.count)
            outer +=
                [
                    0x00, 0x53, 0x75, 0xb0, UInt8(size >> 24), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff),
                    UInt8(size & 0xff),
                ] + part
        }
        let parts = try #require(ProtonCodec.batch(outer))
        #expect(parts.compactMap(ProtonCodec.decode).map(\.bodyBytes) == [Array("one".utf8), Array("two".utf8)])
        // An ordinary message is not a batch, even with a data body.
        #expect(ProtonCodec.batch(inner("{\"t\":1}", "x")) == nil)
    }

    @Test(arguments: [
        [UInt8](), [0x00], [0x00, 0x53, 0x75, 0xb0, 0xff, 0xff, 0xff, 0xff], [0xd0, 0, 0, 0, 9, 0, 0, 0, 1, 0x45],
    ])
    func garbageDecodesToNil(bytes: [UInt8]) {
        #expect(ProtonCodec.batch(bytes) == nil)
        #expect(ProtonCodec.decode(bytes) == nil || bytes.isEmpty == false)
    }

    @Test func telemetryPropertiesAsOverMQTT() {
        var message = AMQPMessage()
        message.messageID = .string("m-1")
        message.correlationID = .ulong(9)
        message.contentType = "application/json"
        message.contentEncoding = "utf-8"
        message.messageAnnotations = [("dt-subject", .string("thermostat1"))]
        message.applicationProperties = [("alarm", .string("high")), ("count", .int32(3)), ("none", .null)]
        #expect(
            message.telemetryProperties == [
                MessageProperty("$.mid", "m-1"), MessageProperty("$.cid", "9"),
                MessageProperty("$.ct", "application/json"), MessageProperty("$.ce", "utf-8"),
                MessageProperty("$.sub", "thermostat1"), MessageProperty("alarm", "high"),
                MessageProperty("count", "3"), MessageProperty("none", nil),
            ])
    }

    @Test func cloudToDeviceShape() throws {
        let stored = C2DMessage(
            sequence: 12, deviceID: "dev-1", messageID: "abc",
            properties: [
                MessageProperty("$.ct", "text/plain"), MessageProperty("cmd", "reboot"), MessageProperty("n", nil),
            ],
            payload: Array("go".utf8), state: "queued", createdAt: Date(timeIntervalSince1970: 1_700_000_000),
            deliveredAt: nil, outcome: nil, deliveryCount: 2)
        let lock = UUID()
        let message = try #require(
            ProtonCodec.decode(ProtonCodec.encode(.cloudToDevice(stored, lockToken: lock, deliveryCount: 2))))
        #expect(message.messageID == .string("abc"))
        #expect(message.to == "/devices/dev-1/messages/deviceBound")
        #expect(message.contentType == "text/plain")
        #expect(message.body == .data(Array("go".utf8)))
        #expect(message.applicationProperty("cmd") == .string("reboot"))
        #expect(message.applicationProperty("n") == .string(""))  // strings only, for the C SDK
        #expect(message.annotation("x-opt-lock-token") == .uuid(lock))
        #expect(message.annotation("x-opt-sequence-number") == .int(12))
        #expect(message.annotation("iothub-deliverycount") == .int32(2))
    }
}

@Suite struct TokenExpiryTests {
    @Test func delays() {
        let now = Date(timeIntervalSince1970: 1_000)
        #expect(DevHubLimits.delay(untilEpochSeconds: 1_005, now: now) == .milliseconds(5_000))
        #expect(DevHubLimits.delay(untilEpochSeconds: 10, now: now) == .milliseconds(0))
        #expect(DevHubLimits.delay(untilEpochSeconds: Int64.max, now: now) == nil)
    }

    /// A put-token is a SAS token for `{host}/devices/{id}`: the CBS path verifies it with the
    /// same verifier as MQTT's CONNECT (docs/protocols.md §0, §3.1).
    @Test func putTokenVerification() throws {
        let key = Array(repeating: UInt8(9), count: 32)
        let audience = try #require(AMQPDeviceAddress(audience: "devhub.local/devices/dev-1"))
        let resource = "devhub.local/devices/\(audience.deviceID)"
        // The C SDK signs the resource unencoded.
        let expiry = Int64(Date().timeIntervalSince1970) + 3600
        let good = try #require(SASToken(SASVerifier.makeToken(resource: resource, key: key, expiry: expiry)))
        #expect(SASVerifier.verify(good, expectedResource: resource, keys: [key]) == .valid)
        let otherDevice = try #require(
            SASToken(SASVerifier.makeToken(resource: "devhub.local/devices/dev-2", key: key, expiry: expiry)))
        #expect(
            SASVerifier.verify(otherDevice, expectedResource: resource, keys: [key])
                == .wrongResource("devhub.local/devices/dev-2"))
        let expired = try #require(SASToken(SASVerifier.makeToken(resource: resource, key: key, expiry: 1000)))
        guard case .expired = SASVerifier.verify(expired, expectedResource: resource, keys: [key]) else {
            Issue.record("an expired token is refused")
            return
        }
        #expect(
            SASVerifier.verify(good, expectedResource: resource, keys: [Array(repeating: 1, count: 32)])
                == .badSignature)
    }
}

/// Hostile bytes never trap: mutated and truncated messages through proton's codec, random
/// bytes through the SASL negotiator. A fixed seed, so a failure repeats.
@Suite struct AMQPHostileInputTests {

    @Test func mutatedMessagesDecodeOrFail() {
        var random = SplitMix64(seed: 17)
        var message = AMQPMessage()
        message.messageID = .uuid(UUID())
        message.applicationProperties = [("a", .string("b")), ("n", .int32(5)), ("m", .binary([1, 2, 3]))]
        message.messageAnnotations = [("x-opt-lock-token", .uuid(UUID()))]
        message.body = .data(Array(repeating: 0x41, count: 64))
        let seed = ProtonCodec.encode(message)
        var decoded = 0
        for _ in 0..<20_000 {
            var bytes = seed
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                bytes[index] = UInt8.random(in: 0...255, using: &random)
            }
            if Bool.random(using: &random) { bytes.removeLast(Int.random(in: 0..<bytes.count, using: &random)) }
            if ProtonCodec.decode(bytes) != nil { decoded += 1 }
            _ = ProtonCodec.batch(bytes)
        }
        #expect(decoded > 0)
    }

    @Test func randomBytesThroughTheNegotiator() {
        var random = SplitMix64(seed: 42)
        for _ in 0..<20_000 {
            var negotiator = AMQPSASLNegotiator()
            var input = Bool.random(using: &random) ? AMQPSASLNegotiator.saslHeader : []
            input += (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            var offset = 0
            while offset < input.count {
                let size = Int.random(in: 1...16, using: &random)
                let step = negotiator.feed(Array(input[offset..<min(input.count, offset + size)]))
                offset += size
                if case .fail = step { break }
                if case .startAMQP = step { break }
            }
        }
    }
}

/// A real ``AMQPConnection`` (no TLS) through the session harness: a whole client transcript,
/// then the same transcript mutated. Nothing traps or hangs; the connection always closes.
@Suite struct AMQPConnectionHarnessTests {
    /// What a proton client sends: AMQP header (no SASL), open, begin, the `$cbs` links, a
    /// put-token for the harness device, a telemetry link with one message, a C2D link.
    /// Made with python3-qpid-proton's engine against an in-memory proton peer.
    static let transcript: [UInt8] = Array(
        Data(
            base64Encoded: [
                "QU1RUAABAAAAAAA4AgAAAABTEMArCqEOaGFybmVzcy1jbGllbnShDmRldmh1Yi5oYXJuZXNzQGB//0BAQEBAQAAAABoCAAAA",
                "AFMRwA0EQENwf////3B/////AAAAUAIAAAAAUxLAQw6hCyRjYnMtc2VuZGVyQ0JQAlAAAFMowBELoQQkY2JzQ0BDQkBAQEBA",
                "QABTKcANB6EEJGNic0NAQ0JAQEBAQ0RAQEAAAABTAgAAAABTEsBGDqENJGNicy1yZWNlaXZlclIBQVACUAAAUyjAEQuhBCRj",
                "YnNDQENCQEBAQEBAAFMpwA0HoQQkY2JzQ0BDQkBAQEBDREBAQAAAACECAAAAAFMTwBQJQHB/////Q3B/////UgFDUmRAQgAA",
                "ARsCAAAAAFMUwAcEQ0OgATBDAFNwRQBTc8ACAUQAU3TRAAAAbgAAAAahCW9wZXJhdGlvbqEJcHV0LXRva2VuoQR0eXBloR9z",
                "ZXJ2aWNlYnVzLndpbmRvd3MubmV0OnNhc3Rva2VuoQRuYW1loSVkZXZodWIuaGFybmVzcy9kZXZpY2VzL2hhcm5lc3MtZGV2",
                "aWNlAFN3oYFTaGFyZWRBY2Nlc3NTaWduYXR1cmUgc3I9ZGV2aHViLmhhcm5lc3MvZGV2aWNlcy9oYXJuZXNzLWRldmljZSZz",
                "aWc9TkxLTTZKJTJCUndLQWNYd2pacUt3Y0pTOWVpTEowaWVGSzRkeEVYWEQ1Y0p3JTNEJnNlPTQxMDI0NDQ4MDAAAACAAgAA",
                "AABTEsBzDqEGZXZlbnRzUgJCUAJQAABTKMAMC0BDQENCQEBAQEBAAFMpwEYHoT1hbXFwczovL2Rldmh1Yi5oYXJuZXNzL2Rl",
                "dmljZXMvaGFybmVzcy1kZXZpY2UvbWVzc2FnZXMvZXZlbnRzQ0BDQkBAQEBDREBAQAAAAEECAAAAAFMUwAkEUgJSAaABMUMA",
                "U3BFAFNzwAYBoQNtLTEAU3TRAAAACgAAAAKhAWuhAXYAU3WgBWhlbGxvAAAAggIAAAAAUxLAdQ6hA2MyZFIDQVACUAAAUyjA",
                "TwuhQmFtcXBzOi8vZGV2aHViLmhhcm5lc3MvZGV2aWNlcy9oYXJuZXNzLWRldmljZS9tZXNzYWdlcy9kZXZpY2Vib3VuZENA",
                "Q0JAQEBAQEAAUynACAdAQ0BDQkBAQEBDREBAQAAAACICAAAAAFMTwBUJQ3B/////UgJwf////1IDQ1IKQEI=",
            ].joined())!)

    /// Where the client waited for DevHub in the transcript: after the links' setup, the
    /// put-token, the telemetry link's attach, the message.
    static let pauses = [286, 569, 697, 762]

    @Test func transcriptAuthenticatesTheDeviceAndStoresItsTelemetry() throws {
        let harness = try SessionHarness()
        let bounds = [0] + Self.pauses + [Self.transcript.count]
        let parts = zip(bounds, bounds.dropFirst()).map { Array(Self.transcript[$0..<$1]) }
        let outcome = try harness.run(prelude: .amqp, inputs: parts, linger: .milliseconds(300))
        #expect(outcome.closed)
        #expect(Array(outcome.output.prefix(8)) == AMQPSASLNegotiator.amqpHeader)
        let log = harness.takeLogLines().joined(separator: "\n")
        #expect(log.contains("device harness-device connected over AMQP"), "\(log)")
        let stored = try harness.store.telemetry(deviceID: SessionHarness.deviceID)
        #expect(stored.map(\.payload) == [Array("hello".utf8)])
        #expect(stored.first?.properties == [MessageProperty("$.mid", "m-1"), MessageProperty("k", "v")])
    }

    /// Mutations past the setup, fed with the client's pauses, so they meet an authenticated device.
    @Test func mutatedAfterAuthenticationNeverTrapOrHang() throws {
        let harness = try SessionHarness()
        var random = SplitMix64(seed: 11)
        for _ in 0..<40 {
            var bytes = Self.transcript
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let index = Int.random(in: Self.pauses[1]..<bytes.count, using: &random)
                bytes[index] = UInt8.random(in: 0...255, using: &random)
            }
            let bounds = [0] + Self.pauses + [bytes.count]
            let parts = zip(bounds, bounds.dropFirst()).map { Array(bytes[$0..<$1]) }
            let outcome = try harness.run(prelude: .amqp, inputs: parts, linger: .milliseconds(20))
            let log = harness.takeLogLines()
            // Seen once under heavy load (CI with builds beside it), not reproduced since: the
            // session's log says where it stood.
            #expect(outcome.closed, "output \(outcome.output.count) bytes; DevHub's log: \(log.suffix(20))")
        }
    }

    @Test func mutatedTranscriptsNeverTrapOrHang() throws {
        let harness = try SessionHarness()
        var random = SplitMix64(seed: 7)
        for _ in 0..<150 {
            var bytes = Self.transcript
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let index = Int.random(in: 8..<bytes.count, using: &random)
                bytes[index] = UInt8.random(in: 0...255, using: &random)
            }
            if Bool.random(using: &random) { bytes.removeLast(Int.random(in: 0..<(bytes.count - 8), using: &random)) }
            let outcome = try harness.run(prelude: .amqp, input: bytes)
            #expect(outcome.closed)
            _ = harness.takeLogLines()
        }
    }
}
