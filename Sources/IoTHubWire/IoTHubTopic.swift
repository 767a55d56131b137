/// The MQTT topics of IoT Hub's device endpoint (docs/protocols.md §2.2), built and parsed in
/// one place for both sides: the `mqtt` transport (the device side) and DevHub (the hub side).
///
/// Builders take device ids as they are (the hub does not encode them, docs/protocols.md §2.1)
/// and percent-encode method names and request ids. Parsers refuse — return nil for — any topic
/// that is not exactly the expected shape: another device's id, a missing `/` or `$rid`, an
/// empty method name, a status that is not an integer.
public enum IoTHubTopic {
    // MARK: Telemetry (device to cloud)

    /// `devices/{deviceId}/messages/events/{property bag}`.
    public static func telemetry(deviceID: String, propertyBag: String) -> String {
        "devices/\(deviceID)/messages/events/" + propertyBag
    }

    /// The property bag of a telemetry topic of `deviceID` (empty for
    /// `devices/{deviceId}/messages/events` with or without the final `/`), or nil if `topic` is
    /// not one of that device's telemetry topics.
    public static func telemetryPropertyBag(topic: String, deviceID: String) -> Substring? {
        let prefix = "devices/\(deviceID)/messages/events"
        guard topic.hasPrefix(prefix) else { return nil }
        let rest = topic.dropFirst(prefix.count)
        if rest.isEmpty { return rest }
        guard rest.first == "/" else { return nil }
        return rest.dropFirst()
    }

    // MARK: Cloud to device

    /// `devices/{deviceId}/messages/devicebound/`, the start of every C2D topic of a device.
    public static func c2dPrefix(deviceID: String) -> String { "devices/\(deviceID)/messages/devicebound/" }

    /// `devices/{deviceId}/messages/devicebound/#`, what a device subscribes to for C2D.
    public static func c2dFilter(deviceID: String) -> String { c2dPrefix(deviceID: deviceID) + "#" }

    /// `devices/{deviceId}/messages/devicebound/{property bag}`.
    public static func c2d(deviceID: String, propertyBag: String) -> String {
        c2dPrefix(deviceID: deviceID) + propertyBag
    }

    /// The property bag of a C2D topic of `deviceID`, or nil if `topic` is not one.
    public static func c2dPropertyBag(topic: String, deviceID: String) -> Substring? {
        let prefix = c2dPrefix(deviceID: deviceID)
        guard topic.hasPrefix(prefix) else { return nil }
        return topic.dropFirst(prefix.count)
    }

    // MARK: Direct methods

    /// `$iothub/methods/POST/`, the start of every method request.
    public static let methodRequestPrefix = "$iothub/methods/POST/"
    /// `$iothub/methods/POST/#`, what a device subscribes to for direct methods.
    public static let methodsFilter = methodRequestPrefix + "#"
    /// `$iothub/methods/res/`, the start of every method response.
    public static let methodResponsePrefix = "$iothub/methods/res/"

    /// `$iothub/methods/POST/{methodName}/?$rid={requestId}`.
    public static func methodRequest(name: String, requestID: String) -> String {
        methodRequestPrefix + PropertyBag.percentEncode(name) + "/?$rid=" + PropertyBag.percentEncode(requestID)
    }

    /// The method name (percent-decoded) and request id of a method request, or nil if `topic`
    /// is not `$iothub/methods/POST/{name}/?$rid={rid}` with a name and a `$rid`.
    public static func parseMethodRequest(_ topic: String) -> (name: String, requestID: String)? {
        guard topic.hasPrefix(methodRequestPrefix) else { return nil }
        let rest = topic.dropFirst(methodRequestPrefix.count)
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex else { return nil }
        let query = rest[rest.index(after: slash)...]
        guard query.first == "?", let requestID = PropertyBag.query(ofTopic: query)["rid"] else { return nil }
        return (PropertyBag.percentDecode(rest[..<slash]), requestID)
    }

    /// `$iothub/methods/res/{status}/?$rid={requestId}`.
    public static func methodResponse(status: Int, requestID: String) -> String {
        methodResponsePrefix + "\(status)/?$rid=" + PropertyBag.percentEncode(requestID)
    }

    /// The status and request id of a method response, or nil if `topic` is not
    /// `$iothub/methods/res/{integer}/?$rid={rid}`.
    public static func parseMethodResponse(_ topic: String) -> (status: Int, requestID: String)? {
        guard topic.hasPrefix(methodResponsePrefix) else { return nil }
        let rest = topic.dropFirst(methodResponsePrefix.count)
        guard let slash = rest.firstIndex(of: "/"), let status = Int(rest[..<slash]) else { return nil }
        let query = rest[rest.index(after: slash)...]
        guard query.first == "?", let requestID = PropertyBag.query(ofTopic: query)["rid"] else { return nil }
        return (status, requestID)
    }

    // MARK: Twin

    /// `$iothub/twin/res/`, the start of every twin response (and the `#` filter's prefix).
    public static let twinResponsePrefix = "$iothub/twin/res/"
    /// `$iothub/twin/GET/`, the start of a twin read.
    public static let twinGetPrefix = "$iothub/twin/GET/"
    /// `$iothub/twin/PATCH/properties/reported/`, the start of a reported-properties patch.
    public static let twinReportedPrefix = "$iothub/twin/PATCH/properties/reported/"
    /// `$iothub/twin/PATCH/properties/desired/`, the start of a desired-properties update.
    public static let twinDesiredPrefix = "$iothub/twin/PATCH/properties/desired/"

    /// `$iothub/twin/res/{status}/?$rid={requestId}[&$version={version}]`.
    public static func twinResponse(status: Int, requestID: String, version: Int? = nil) -> String {
        var topic = twinResponsePrefix + "\(status)/?$rid=" + PropertyBag.percentEncode(requestID)
        if let version { topic += "&$version=\(version)" }
        return topic
    }

    /// `$iothub/twin/PATCH/properties/desired/?$version={version}`.
    public static func twinDesired(version: Int) -> String { twinDesiredPrefix + "?$version=\(version)" }
}
