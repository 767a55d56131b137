import IoTHubWire

// The plugin ABI's properties are byte strings with no null (gatehouse_plugin.h, `gh_property`),
// while the wire's property bag has one (docs/protocols.md §2.2). These conversions are the only
// place the two meet: a null value becomes the empty string and so goes out as `key=`.

extension PluginMessage.Property {
    /// A wire property; a null value (a bare `key`) becomes the empty string.
    public init(_ wire: MessageProperty) {
        self.init(wire.name, wire.value ?? "")
    }

    /// The wire property; always with a value, so it encodes as `key=value`.
    public var wire: MessageProperty { MessageProperty(key, value) }
}

extension Array where Element == PluginMessage.Property {
    /// The properties of an IoT Hub property bag, in order (`PropertyBag.decode`).
    public init(propertyBag: some StringProtocol) {
        self = PropertyBag.decode(Substring(propertyBag)).map(PluginMessage.Property.init)
    }

    /// The IoT Hub property bag of these properties (`PropertyBag.encode`).
    public var propertyBag: String { PropertyBag.encode(map(\.wire)) }
}
