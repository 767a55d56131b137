import Testing

@testable import IoTHubWire

/// The limits the hub transport checks before sending (docs/protocols.md §4).
@Suite struct IoTHubLimitsTests {
    @Test func sizeCountsBodySystemValuesAndApplicationNamesAndValues() {
        let properties = [
            MessageProperty("$.ct", "application/json"),  // 16: the value only
            MessageProperty("alarm", "high"),  // 9: name and value
            MessageProperty("flag", nil),  // 4: the name
        ]
        #expect(IoTHubLimits.deviceToCloudMessageSize(payloadBytes: 100, properties: properties) == 129)
        #expect(IoTHubLimits.deviceToCloudMessageSize(payloadBytes: 0, properties: [MessageProperty("é", "ü")]) == 4)
    }

    @Test func problemsNameSizesOnly() {
        let limit = IoTHubLimits.maxDeviceToCloudMessageBytes
        let topic = IoTHubTopic.telemetry(deviceID: "d", propertyBag: "k=v")
        #expect(
            IoTHubLimits.telemetryProblem(
                payloadBytes: limit - 2, properties: [MessageProperty("k", "v")], topic: topic) == nil)
        let over = IoTHubLimits.telemetryProblem(
            payloadBytes: limit - 1, properties: [MessageProperty("k", "v")], topic: topic)
        #expect(over == "262145 bytes with its properties, over IoT Hub's device-to-cloud limit of 262144")
        let long = String(repeating: "x", count: IoTHubLimits.maxTopicBytes)
        let longTopic = IoTHubLimits.telemetryProblem(
            payloadBytes: 1, properties: [], topic: IoTHubTopic.telemetry(deviceID: "d", propertyBag: long))
        #expect(longTopic?.hasPrefix("its topic (device id and property bag) is 65561 bytes") == true)
        #expect(longTopic?.contains("xxx") == false)
    }
}
