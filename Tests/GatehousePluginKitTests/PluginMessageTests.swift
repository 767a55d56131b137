import GatehousePluginABI
import Testing

@testable import GatehousePluginKit

/// A message crosses the ABI as a borrowed `gh_message` and comes back whole, topic included.
@Suite("PluginMessage across the ABI")
struct PluginMessageTests {
    @Test("device, payload, properties, time and topic survive the C layout")
    func roundTrip() {
        let messages = [
            PluginMessage(
                deviceID: "pump-7", payload: Array("{\"t\":21}".utf8), properties: [.init("alarm", "true")],
                createdUnixMS: 1_764_000_000_000, topic: "devices/pump-7/messages/events/alarm=true"),
            PluginMessage(deviceID: "valve-1", payload: [0, 1, 2]),
        ]
        let back = PluginMessage.withCMessages(messages) { batch in batch.map(PluginMessage.init) }
        #expect(back == messages)
        #expect(back[1].topic == "")
    }

    @Test("the twin flag crosses as GH_MESSAGE_TWIN_REPORTED; telemetry leaves flags zero")
    func twinFlag() {
        var twin = PluginMessage(deviceID: "gw-1", payload: Array(#"{"gatehouse":{}}"#.utf8))
        twin.isTwinReported = true
        let telemetry = PluginMessage(deviceID: "pump-7", payload: [1])
        let flags = PluginMessage.withCMessages([twin, telemetry]) { batch in batch.map(\.flags) }
        #expect(flags == [UInt64(GH_MESSAGE_TWIN_REPORTED), 0])
        let back = PluginMessage.withCMessages([twin, telemetry]) { batch in batch.map(PluginMessage.init) }
        #expect(back.map(\.isTwinReported) == [true, false])
    }

    @Test("a writer that predates the topic leaves it zero: no topic")
    func zeroedTopic() {
        var c = gh_message()
        c.struct_size = UInt32(MemoryLayout<gh_message>.size)
        #expect(PluginMessage(c).topic == "")
    }
}
