import Testing

@testable import IoTHubWire

/// The topics of docs/protocols.md §2.2, as the `mqtt` transport and DevHub build and parse them.
@Suite struct IoTHubTopicTests {
    @Test func telemetry() {
        let topic = IoTHubTopic.telemetry(
            deviceID: "dev-1", propertyBag: PropertyBag.encode([MessageProperty("$.ct", "text/plain")]))
        #expect(topic == "devices/dev-1/messages/events/$.ct=text%2Fplain")
        #expect(IoTHubTopic.telemetryPropertyBag(topic: topic, deviceID: "dev-1") == "$.ct=text%2Fplain")
        #expect(IoTHubTopic.telemetryPropertyBag(topic: "devices/dev-1/messages/events", deviceID: "dev-1") == "")
        #expect(IoTHubTopic.telemetryPropertyBag(topic: "devices/dev-1/messages/events/", deviceID: "dev-1") == "")
    }

    @Test(
        "telemetry topics that are not the device's own are refused",
        arguments: [
            "devices/dev-2/messages/events/a=1",  // another device
            "devices/dev-1x/messages/events/a=1",  // a device whose id starts with ours
            "devices/dev-1/messages/eventsX",
            "devices/dev-1/messages/devicebound/a=1",
            "devices/dev-1",
            "",
            "$iothub/methods/res/200/?$rid=1",
        ])
    func telemetryRefused(topic: String) {
        #expect(IoTHubTopic.telemetryPropertyBag(topic: topic, deviceID: "dev-1") == nil)
    }

    @Test func c2d() {
        #expect(IoTHubTopic.c2dFilter(deviceID: "d") == "devices/d/messages/devicebound/#")
        let bag = PropertyBag.encode([MessageProperty("$.mid", "7"), MessageProperty("flag", nil)])
        let topic = IoTHubTopic.c2d(deviceID: "d", propertyBag: bag)
        #expect(topic == "devices/d/messages/devicebound/$.mid=7&flag")
        #expect(
            IoTHubTopic.c2dPropertyBag(topic: topic, deviceID: "d").map(PropertyBag.decode) == PropertyBag.decode(bag))
        #expect(IoTHubTopic.c2dPropertyBag(topic: "devices/e/messages/devicebound/x", deviceID: "d") == nil)
        #expect(IoTHubTopic.c2dPropertyBag(topic: "devices/d/messages/devicebound", deviceID: "d") == nil)
    }

    @Test func methods() throws {
        #expect(IoTHubTopic.methodsFilter == "$iothub/methods/POST/#")
        let request = IoTHubTopic.methodRequest(name: "reboot", requestID: "1f")
        #expect(request == "$iothub/methods/POST/reboot/?$rid=1f")
        let parsed = try #require(IoTHubTopic.parseMethodRequest(request))
        #expect(parsed.name == "reboot" && parsed.requestID == "1f")

        let odd = try #require(
            IoTHubTopic.parseMethodRequest(IoTHubTopic.methodRequest(name: "set/level 2", requestID: "a&b")))
        #expect(odd.name == "set/level 2" && odd.requestID == "a&b")

        let response = IoTHubTopic.methodResponse(status: 200, requestID: "1f")
        #expect(response == "$iothub/methods/res/200/?$rid=1f")
        let answer = try #require(IoTHubTopic.parseMethodResponse(response))
        #expect(answer.status == 200 && answer.requestID == "1f")
        #expect(IoTHubTopic.parseMethodResponse("$iothub/methods/res/-3/?$rid=x")?.status == -3)
    }

    @Test(
        "malformed method requests from the hub are refused",
        arguments: [
            "$iothub/methods/POST/reboot", "$iothub/methods/POST/reboot/", "$iothub/methods/POST/reboot/?id=1",
            "$iothub/methods/POST//?$rid=1", "$iothub/methods/POST/reboot/$rid=1", "$iothub/methods/res/200/?$rid=1",
            "$iothub/methods/POST/",
        ])
    func methodRequestRefused(topic: String) {
        #expect(IoTHubTopic.parseMethodRequest(topic) == nil)
    }

    @Test(
        "malformed method responses from a device are refused",
        arguments: [
            "$iothub/methods/res/ok/?$rid=1", "$iothub/methods/res/200", "$iothub/methods/res/200/",
            "$iothub/methods/res//?$rid=1", "$iothub/methods/res/99999999999999999999/?$rid=1",
            "$iothub/methods/POST/200/?$rid=1",
        ])
    func methodResponseRefused(topic: String) {
        #expect(IoTHubTopic.parseMethodResponse(topic) == nil)
    }

    @Test func twin() {
        #expect(IoTHubTopic.twinResponse(status: 200, requestID: "a b") == "$iothub/twin/res/200/?$rid=a%20b")
        #expect(
            IoTHubTopic.twinResponse(status: 204, requestID: "7", version: 3)
                == "$iothub/twin/res/204/?$rid=7&$version=3")
        #expect(IoTHubTopic.twinDesired(version: 5) == "$iothub/twin/PATCH/properties/desired/?$version=5")
        #expect(
            PropertyBag.query(ofTopic: IoTHubTopic.twinResponse(status: 204, requestID: "a&b", version: 3)) == [
                "rid": "a&b", "version": "3",
            ])
        #expect("$iothub/twin/GET/?$rid=1".hasPrefix(IoTHubTopic.twinGetPrefix))
        #expect("$iothub/twin/PATCH/properties/reported/?$rid=1".hasPrefix(IoTHubTopic.twinReportedPrefix))
    }

    @Test("the limits are docs/protocols.md §4's")
    func limits() {
        #expect(IoTHubLimits.maxDeviceToCloudMessageBytes == 262_144)
        #expect(IoTHubLimits.maxDirectMethodPayloadBytes == 131_072)
        #expect(IoTHubLimits.maxKeepAliveSeconds * 3 / 2 <= 1767)
        #expect(IoTHubLimits.directMethodTimeoutSeconds.contains(IoTHubLimits.defaultDirectMethodTimeoutSeconds))
    }
}
