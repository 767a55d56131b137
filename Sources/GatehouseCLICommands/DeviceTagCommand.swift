import ArgumentParser
import FoundationEssentials
import GatehouseCore
import GatehouseSiteBroker
import GatehouseStore

/// `gatehouse devices tag ID key=value... [--model M] [--remove key]...`: what command rules see
/// as `device.tags` and `device.model`. Takes effect for the next command; no restart.
struct DeviceTag: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tag",
        abstract: "Set a device's tags and model (what command rules read as device.tags and device.model).")

    @OptionGroup var options: ConfigOption
    @Argument(help: "The device id.") var deviceID: String
    @Argument(help: "Tags to set, as key=value (true, false and numbers keep their type).") var tags: [String] = []
    @Option(help: "The device's model.") var model: String?
    @Option(help: "A tag to remove; repeatable.") var remove: [String] = []

    func run() throws {
        if let problem = DeviceIdentifier.problem(deviceID) {
            throw ValidationError("\(deviceID): \(problem)")
        }
        let config = try options.loadConfig()
        var changes: [String: TagValue] = [:]
        for pair in tags {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ValidationError("tag \(pair): expected key=value, e.g. site=plant-a")
            }
            changes[String(pair[..<equals])] = TagValue(parsing: String(pair[pair.index(after: equals)...]))
        }
        let store: StateStore
        do {
            store = try StateStore(path: config.gateway.stateDB, durability: config.outbox.durability)
        } catch {
            throw ValidationError("\(error)")
        }
        var metadata = try store.deviceMetadata(deviceID) ?? DeviceMetadata()
        metadata.tags.merge(changes) { _, new in new }
        for key in remove { metadata.tags[key] = nil }
        if let model { metadata.model = model }
        try store.setDeviceMetadata(deviceID, metadata, atMS: Int64(Date().timeIntervalSince1970 * 1000))
        let shown = metadata.tags.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        print(
            "\(deviceID): model=\(metadata.model.isEmpty ? "-" : metadata.model) tags: \(shown.isEmpty ? "(none)" : shown)"
        )
    }
}
