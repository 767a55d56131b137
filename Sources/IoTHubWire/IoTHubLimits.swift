/// IoT Hub's documented limits that gatehouse and DevHub are built around
/// (docs/protocols.md §4). Only the table's figures; the throttling quotas depend on the hub's
/// unit and tier and are not constants.
public enum IoTHubLimits {
    /// The largest device-to-cloud message: 256 KB (docs/protocols.md §4), counted as
    /// `deviceToCloudMessageSize` counts it.
    public static let maxDeviceToCloudMessageBytes = 256 * 1024
    /// The longest MQTT topic name: 65,535 bytes of UTF-8 (MQTT 3.1.1 §1.5.3). A telemetry
    /// topic carries the device id and the whole property bag, so this bounds the bag.
    public static let maxTopicBytes = 65_535
    /// The largest direct method payload: 128 KB (docs/protocols.md §4).
    public static let maxDirectMethodPayloadBytes = 128 * 1024
    /// Connections per device identity: a new one closes the old (docs/protocols.md §2.1, §4).
    public static let connectionsPerDevice = 1
    /// MQTT subscriptions a device may hold at a time (documented, not checked against the
    /// service: docs/protocols.md §4, §6.5).
    public static let maxSubscriptionsPerDevice = 5
    /// The longest MQTT keep-alive, in seconds: the hub times out at 1.5 × keep-alive, capped at
    /// 1,767 s (docs/protocols.md §2.1, §4).
    public static let maxKeepAliveSeconds = 1177
    /// Messages a device's C2D queue holds (docs/protocols.md §4).
    public static let c2dQueueDepth = 50
    /// A direct method's timeout range, in seconds (docs/protocols.md §4).
    public static let directMethodTimeoutSeconds: ClosedRange<Int> = 5...300
    /// A direct method's timeout when the caller gives none, in seconds (docs/protocols.md §4).
    public static let defaultDirectMethodTimeoutSeconds = 30

    /// The size IoT Hub counts against `maxDeviceToCloudMessageBytes` (docs/protocols.md §4):
    /// the body, the values of the system properties (`$.`-prefixed: `$.ct`, `$.mid`, …) and
    /// the names and values of the application properties, as UTF-8 bytes.
    public static func deviceToCloudMessageSize(payloadBytes: Int, properties: [MessageProperty]) -> Int {
        properties.reduce(payloadBytes) { total, property in
            let value = property.value?.utf8.count ?? 0
            return total + value + (property.name.hasPrefix("$.") ? 0 : property.name.utf8.count)
        }
    }

    /// Why IoT Hub can never take this telemetry message over MQTT, or nil if it can:
    /// over `maxDeviceToCloudMessageBytes`, or a topic (device id and property bag) over
    /// `maxTopicBytes`. The problem names sizes, never contents.
    public static func telemetryProblem(payloadBytes: Int, properties: [MessageProperty], topic: String) -> String? {
        let size = deviceToCloudMessageSize(payloadBytes: payloadBytes, properties: properties)
        if size > maxDeviceToCloudMessageBytes {
            return "\(size) bytes with its properties, over IoT Hub's device-to-cloud limit of "
                + "\(maxDeviceToCloudMessageBytes)"
        }
        let topicBytes = topic.utf8.count
        if topicBytes > maxTopicBytes {
            return
                "its topic (device id and property bag) is \(topicBytes) bytes, over MQTT's limit of \(maxTopicBytes)"
        }
        return nil
    }
}
