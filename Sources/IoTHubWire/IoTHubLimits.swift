/// IoT Hub's documented limits that gatehouse and DevHub are built around
/// (docs/protocols.md §4). Only the table's figures; the throttling quotas depend on the hub's
/// unit and tier and are not constants.
public enum IoTHubLimits {
    /// The largest device-to-cloud message: 256 KB (docs/protocols.md §4).
    public static let maxDeviceToCloudMessageBytes = 256 * 1024
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
}
