import CQpidProton
import GatehousePluginKit
import Testing

@testable import AMQPTransport

@Suite("The amqp transport's addresses and CBS messages")
struct AddressAndCBSTests {
    let address = HubAddress(hostname: "myhub.azure-devices.net", deviceID: "pump-1")

    @Test("link addresses and the CBS audience in the C SDK's form (docs/protocols.md §3.2)")
    func addresses() {
        #expect(address.audience == "myhub.azure-devices.net/devices/pump-1")
        #expect(address.telemetry == "amqps://myhub.azure-devices.net/devices/pump-1/messages/events")
        #expect(address.cloudToDevice == "amqps://myhub.azure-devices.net/devices/pump-1/messages/devicebound")
        #expect(address.methods == "amqps://myhub.azure-devices.net/devices/pump-1/methods/devicebound")
        #expect(address.methodRequestsLinkName == "methods_requests_link-pump-1")
        #expect(address.methodResponsesLinkName == "methods_responses_link-pump-1")
        #expect(address.methodsChannelCorrelationID == "pump-1")
        #expect(address.telemetryLinkName != address.cloudToDeviceLinkName)
    }

    @Test("a put-token request: ulong message-id, reply-to cbs, operation/type/name, the token as an AMQP string value")
    func putTokenEncoding() throws {
        let token = "SharedAccessSignature sr=myhub.azure-devices.net/devices/pump-1&sig=abc%3D&se=1700000000"
        let request = PutTokenRequest(messageID: 7, audience: address.audience, token: token)
        let bytes = MessageCodec().encode(request)
        // Decoded by proton itself, field by field.
        let message = pn_message()!
        defer { pn_message_free(message) }
        let status = bytes.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { pn_message_decode(message, $0.baseAddress, raw.count) }
        }
        #expect(status == 0)
        let id = pn_message_id(message)
        pn_data_rewind(id)
        #expect(pn_data_next(id) && pn_data_type(id) == PN_ULONG && pn_data_get_ulong(id) == 7)
        #expect(String(cString: pn_message_get_reply_to(message)) == "cbs")
        #expect(!pn_message_is_inferred(message))  // an amqp-value body, not a data section
        let properties = MessageCodec.map(pn_message_properties(message))
        #expect(properties.map(\.0) == ["operation", "type", "name"])
        #expect(
            properties.map(\.1) == [
                .string("put-token"), .string("servicebus.windows.net:sastoken"), .string(address.audience),
            ])
        #expect(MessageCodec.first(pn_message_body(message)) == .string(token))
        // The description can go into a log: no token in it.
        #expect(!"\(request)".contains("SharedAccessSignature"))
        #expect("\(request)" == "put-token #7 for myhub.azure-devices.net/devices/pump-1")
    }

    @Test("put-token responses: status-code or statusCode, any integer type; 2xx succeeds")
    func putTokenResponses() {
        let ok = PutTokenResponse(
            correlationID: 3, properties: ["status-code": .int(200), "status-description": .string("OK")])
        #expect(ok == PutTokenResponse(correlationID: 3, statusCode: 200, statusDescription: "OK"))
        #expect(ok?.succeeded == true)
        #expect(PutTokenResponse(correlationID: 3, properties: ["statusCode": .uint(202)])?.succeeded == true)
        let refused = PutTokenResponse(
            correlationID: 4, properties: ["status-code": .int(401), "statusDescription": .string("Unauthorized")])
        #expect(refused?.succeeded == false)
        #expect(refused?.statusDescription == "Unauthorized")
        #expect(PutTokenResponse(correlationID: 3, properties: ["status-description": .string("OK")]) == nil)
        #expect(PutTokenResponse(correlationID: nil, properties: ["status-code": .int(200)]) == nil)
    }

    @Test("telemetry: IoT Hub's system properties as AMQP properties, the rest as application properties, a data body")
    func telemetryEncoding() throws {
        let codec = MessageCodec()
        let message = PluginMessage(
            deviceID: "pump-1", payload: Array("{\"t\":21}".utf8),
            properties: [
                .init("$.mid", "m-1"), .init("alarm", "high"), .init("$.ct", "application/json"),
                .init("$.ce", "utf-8"), .init("$.cid", "c-9"), .init("zone", "A"), .init("$.sub", "thermostat1"),
            ])
        let decoded = try #require(codec.decode(codec.encode(telemetry: message)))
        #expect(decoded.messageID == .string("m-1"))
        #expect(decoded.correlationID == .string("c-9"))
        #expect(decoded.contentType == "application/json")
        #expect(decoded.contentEncoding == "utf-8")
        #expect(decoded.applicationProperties.map(\.0) == ["alarm", "zone"])
        #expect(decoded.applicationProperties.map(\.1) == [.string("high"), .string("A")])
        #expect(decoded.annotations.map(\.0) == ["dt-subject"])
        #expect(decoded.body == Array("{\"t\":21}".utf8))
    }

    @Test("a C2D message's properties reach the gate under their MQTT names; a method response echoes the uuid")
    func commandsAndResponses() throws {
        let codec = MessageCodec()
        let telemetry = PluginMessage(
            deviceID: "d", payload: Array("reboot".utf8),
            properties: [.init("$.mid", "cmd-1"), .init("authorization", "Bearer x.y.z"), .init("command", "reboot")])
        let c2d = try #require(codec.decode(codec.encode(telemetry: telemetry)))
        let properties = HubConnection.commandProperties(c2d)
        #expect(properties.first == .init("$.mid", "cmd-1"))
        #expect(properties.contains(.init("authorization", "Bearer x.y.z")))
        #expect(properties.contains(.init("command", "reboot")))

        let uuid: [UInt8] = Array(0..<16)
        let response = try #require(
            codec.decode(codec.encodeMethodResponse(correlationID: .uuid(uuid), status: 403, body: Array("{}".utf8))))
        #expect(response.correlationID == .uuid(uuid))
        #expect(response.property("IoThub-status") == .int(403))
        #expect(response.body == Array("{}".utf8))
        #expect(AMQPScalar.uuid(uuid).text == "00010203-0405-0607-0809-0a0b0c0d0e0f")
    }

    @Test(
        "a C2D message is settled by the gate's status: 2xx accepted, 4xx rejected, anything else released",
        arguments: [
            (Int32(200), PN_ACCEPTED), (204, PN_ACCEPTED), (403, PN_REJECTED), (404, PN_REJECTED),
            (501, PN_RELEASED), (503, PN_RELEASED), (504, PN_RELEASED),
        ] as [(Int32, Int32)])
    func cloudToDeviceOutcomes(status: Int32, outcome: Int32) {
        #expect(HubConnection.cloudToDeviceOutcome(status: status) == UInt64(outcome))
    }

    @Test("the reason a refused C2D message carries upstream comes from the gate's answer")
    func refusalText() {
        let body = Array(#"{"reason":"no rule allows reboot","status":403}"#.utf8)
        #expect(
            HubConnection.refusalText(status: 403, body: body) == "refused by the gateway (403): no rule allows reboot")
        #expect(HubConnection.refusalText(status: 404, body: []) == "refused by the gateway (404)")
    }

    @Test(
        "busy and throttling rejections are not the message's fault",
        arguments: [
            ("amqp:resource-limit-exceeded", true), ("com.microsoft:server-busy", true),
            ("com.microsoft:timeout", true),
            ("com.microsoft:device-throttled", true), ("amqp:invalid-field", false),
            ("amqp:link:message-size-exceeded", false),
            ("", false),
        ])
    func transientConditions(condition: String, transient: Bool) {
        #expect(HubConnection.isTransient(condition) == transient)
    }
}
