import CQpidProton
import GatehousePluginKit
import Testing

@testable import AMQPTransport

@Suite("The amqp transport's SASL exchange, pool and backoff")
struct SASLAndPoolTests {
    /// A SASL frame around `body`.
    static func frame(_ body: [UInt8]) -> [UInt8] {
        let size = UInt32(8 + body.count)
        return [UInt8(size >> 24), UInt8(size >> 16 & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size & 0xFF), 2, 1, 0, 0]
            + body
    }

    /// sasl-mechanisms offering `names` as an array of symbols (or one symbol).
    static func mechanisms(_ names: [String], asArray: Bool = true) -> [UInt8] {
        let symbols = names.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
        let field: [UInt8] =
            asArray
            ? [0xE0, UInt8(symbols.count + 2), UInt8(names.count), 0xA3] + symbols
            : [0xA3] + symbols
        return frame([0x00, 0x53, 0x40, 0xC0, UInt8(field.count + 1), 1] + field)
    }

    static let outcomeOK = frame([0x00, 0x53, 0x44, 0xC0, 0x03, 0x01, 0x50, 0x00])

    @Test(
        "MSSBCBS as Azure's C SDK does it: header, mechanisms, init with no initial response, outcome 0",
        arguments: [true, false])
    func mssbcbs(asArray: Bool) {
        var sasl = SASLNegotiation(mode: .mssbcbs)
        #expect(sasl.opening == Array("AMQP".utf8) + [3, 1, 0, 0])
        let server = SASLNegotiation.saslHeader + Self.mechanisms(["MSSBCBS", "ANONYMOUS"], asArray: asArray)
        // Byte by byte: nothing happens until the frame is whole.
        var steps: [SASLNegotiation.Step] = []
        for byte in server { steps += sasl.receive([byte]) }
        #expect(steps == [.send(SASLNegotiation.initFrame(mechanism: "MSSBCBS"))])
        // The outcome, and the AMQP header the server sent right behind it, for proton.
        #expect(
            sasl.receive(Self.outcomeOK + SASLNegotiation.amqpHeader) == [.done(leftover: SASLNegotiation.amqpHeader)])
    }

    @Test("sasl-init decodes with proton: described 0x41, one field, the symbol MSSBCBS")
    func initFrameDecodes() {
        let frame = SASLNegotiation.initFrame(mechanism: "MSSBCBS")
        #expect(Array(frame.prefix(8)) == [0, 0, 0, UInt8(frame.count), 2, 1, 0, 0])
        let data = pn_data(0)!
        defer { pn_data_free(data) }
        let body = Array(frame.dropFirst(8))
        let consumed = body.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { pn_data_decode(data, $0.baseAddress, raw.count) }
        }
        #expect(consumed == body.count)
        pn_data_rewind(data)
        #expect(pn_data_next(data) && pn_data_type(data) == PN_DESCRIBED)
        pn_data_enter(data)
        #expect(pn_data_next(data) && pn_data_get_ulong(data) == 0x41)
        #expect(pn_data_next(data) && pn_data_type(data) == PN_LIST && pn_data_get_list(data) == 1)
        pn_data_enter(data)
        #expect(pn_data_next(data) && MessageCodec.scalar(data) == .symbol("MSSBCBS"))
    }

    @Test("a peer without the mechanism, a refused outcome, or no SASL layer fail with a reason")
    func failures() {
        var noMechanism = SASLNegotiation(mode: .mssbcbs)
        let offered = noMechanism.receive(SASLNegotiation.saslHeader + Self.mechanisms(["PLAIN", "ANONYMOUS"]))
        #expect(offered == [.failed("the peer offers SASL PLAIN, ANONYMOUS, not MSSBCBS")])

        var refused = SASLNegotiation(mode: .anonymous)
        #expect(refused.receive(SASLNegotiation.saslHeader + Self.mechanisms(["ANONYMOUS"])).count == 1)
        let outcome = refused.receive(Self.frame([0x00, 0x53, 0x44, 0xC0, 0x03, 0x01, 0x50, 0x01]))
        #expect(outcome == [.failed("SASL outcome 1 (authentication refused)")])

        var plainAMQP = SASLNegotiation(mode: .mssbcbs)
        guard case .failed(let reason) = plainAMQP.receive(SASLNegotiation.amqpHeader).first else {
            Issue.record("an AMQP header must fail SASL")
            return
        }
        #expect(reason.contains("no SASL layer"))
    }

    @Test("the pool fills a connection to its capacity before it opens the next, and reuses freed slots")
    func pool() {
        var pool = ConnectionPool()
        #expect(pool.capacity == 995)
        for n in 0..<995 { #expect(pool.assign("d\(n)").index == 0) }
        #expect(pool.assign("d995") == (index: 1, opened: true))
        #expect(pool.assign("d0") == (index: 0, opened: false))  // already there
        #expect(pool.release("d7")! == (index: 0, emptied: false))
        #expect(pool.assign("late") == (index: 0, opened: false))
        #expect(pool.release("d995")! == (index: 1, emptied: true))
        #expect(pool.release("unknown") == nil)
        #expect(pool.deviceCount == 995)

        var small = ConnectionPool(capacity: 2)
        #expect(["a", "b", "c", "d", "e"].map { small.assign($0).index } == [0, 0, 1, 1, 2])
        #expect(small.devices(on: 1) == ["c", "d"])
    }

    @Test("backoff doubles to its maximum with jitter in the upper half of each step, and resets")
    func backoff() {
        var backoff = Backoff(initial: .seconds(1), maximum: .seconds(8))
        #expect(backoff.next(unit: 0) == .milliseconds(500))
        #expect(backoff.next(unit: 1) == .seconds(2))
        #expect(backoff.next(unit: 0.5) == .seconds(3))
        #expect(backoff.next(unit: 0) == .seconds(4))
        #expect(backoff.next(unit: 0) == .seconds(4))  // capped at 8 s, jittered down to half
        backoff.reset()
        #expect(backoff.next(unit: 1) == .seconds(1))
    }

    @Test("settings: defaults, the SASL choice, the pool's bound; unknown keys are named")
    func settings() throws {
        let defaults = try AMQPTransport.settings(try PluginConfig(json: Array(#"{"hostname":"h.example"}"#.utf8)))
        #expect(defaults.port == 5671)
        #expect(defaults.address == "h.example")
        #expect(defaults.sasl == .mssbcbs)
        #expect(defaults.devicesPerConnection == 995)
        #expect(defaults.methods == .all && defaults.methods.attaches("any-device"))
        let methods = try AMQPTransport.settings(
            try PluginConfig(json: Array(#"{"hostname":"h","methods":["pump-*","valve-?"]}"#.utf8))
        ).methods
        #expect(methods == .matching(["pump-*", "valve-?"]))
        #expect(methods.attaches("pump-7") && methods.attaches("valve-3"))
        #expect(!methods.attaches("sensor-1") && !methods.attaches("valve-12") && !methods.attaches("xpump-7"))
        let off = try AMQPTransport.settings(try PluginConfig(json: Array(#"{"hostname":"h","methods":false}"#.utf8)))
        #expect(off.methods == .none && !off.methods.attaches("pump-7"))
        let none = try AMQPTransport.settings(
            try PluginConfig(json: Array(#"{"hostname":"h","sasl":"none","devices_per_connection":10}"#.utf8)))
        #expect(none.sasl == .none && none.devicesPerConnection == 10)
        for (json, key) in [
            (#"{"hostname":"h","sasl":"plain"}"#, "sasl"),
            (
                #"{"hostname":"h","devices_per_connection":1000}"#,
                "devices_per_connection"
            ), (#"{"hostname":"h","portt":1}"#, "portt"), (#"{}"#, "hostname"),
            (#"{"hostname":"h","methods":5}"#, "methods"), (#"{"hostname":"h","methods":[]}"#, "methods"),
            (#"{"hostname":"h","methods":["pump-*",""]}"#, "methods"),
        ] {
            #expect {
                _ = try AMQPTransport.settings(try PluginConfig(json: Array(json.utf8)))
            } throws: { error in
                (error as? PluginError)?.configKey == key
            }
        }
    }
}
