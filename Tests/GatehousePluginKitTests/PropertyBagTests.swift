import GatehousePluginKit
import Testing

@Suite("The plugin kit's message properties")
struct PluginPropertiesTests {
    @Test("the plugin kit's properties go through the wire's property bag; a null value becomes empty")
    func propertyBag() {
        // The bag itself is tested in IoTHubWireTests; this is the ABI side, which has no null.
        let properties: [PluginMessage.Property] = [
            .init("$.ct", "application/json"), .init("alarm", "high & dry"), .init("ü", "="),
        ]
        #expect(properties.propertyBag == "$.ct=application%2Fjson&alarm=high%20%26%20dry&%C3%BC=%3D")
        #expect([PluginMessage.Property](propertyBag: properties.propertyBag) == properties)
        let flags = [PluginMessage.Property](propertyBag: "flag&k=")
        #expect(flags == [.init("flag", ""), .init("k", "")])
        #expect(flags.propertyBag == "flag=&k=")
    }
}
