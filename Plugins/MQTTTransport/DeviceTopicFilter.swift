import GatehousePluginKit
import IoTHubWire
import MQTTCodec

/// A subscription filter whose `+` level names the device, e.g. `devices/+/messages/events/#`.
/// The levels matched by a trailing `#` are read as an IoT Hub property bag.
///
/// Every site message is routed through these: the filter is compiled once
/// (`CompiledTopicFilter`), and a topic is matched in one pass over its bytes, with no
/// allocation but the device id and the properties (docs/benchmarks.md, "Where the relay's time
/// goes").
struct DeviceTopicFilter: Sendable {
    let compiled: CompiledTopicFilter
    var filter: String { compiled.filter }

    /// nil unless `filter` is a valid topic filter with a `+` level.
    init?(_ filter: String) {
        guard let compiled = CompiledTopicFilter(filter), compiled.hasPlus else { return nil }
        self.compiled = compiled
    }

    /// The device and properties of a message published to `topic`, by the first filter that
    /// matches it with a non-empty device level; nil when none does.
    static func route(_ topic: String, filters: [DeviceTopicFilter]) -> (
        deviceID: String, properties: [PluginMessage.Property]
    )? {
        var topic = topic
        return topic.withUTF8 { bytes in
            for candidate in filters {
                guard let match = candidate.compiled.match(bytes), let device = match.firstPlus, !device.isEmpty
                else { continue }
                let deviceID = String(decoding: UnsafeBufferPointer(rebasing: bytes[device]), as: UTF8.self)
                guard let rest = match.rest else { return (deviceID, []) }
                let bag = String(decoding: UnsafeBufferPointer(rebasing: bytes[rest]), as: UTF8.self)
                return (deviceID, .init(propertyBag: bag))
            }
            return nil
        }
    }
}
