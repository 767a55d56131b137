import CFuzzerDriver
import DevHubKit
import MQTTCodec

/// The executable's entry (SwiftPM links `main` to it): hand control to libFuzzer's driver.
@_cdecl("DevHubFuzzer_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(data, Int(size)) }
}

/// One DevHub (in-memory store, one device, one enrollment group) for the whole run.
let harness: SessionHarness = {
    do { return try SessionHarness() } catch { fatalError("cannot start the session harness: \(error)") }
}()

/// One fuzz input. Its first byte picks the prelude (raw, hub device, DPS registration, or a
/// whole AMQP connection to the AMQP endpoint); the rest is what the client sends. Nothing may crash or hang, and:
/// - every packet the decoder accepts, re-encoded, decodes to the same packet, whatever way
///   the bytes were split;
/// - the session closes the connection after the client's half-close;
/// - everything DevHub wrote back is well-formed MQTT.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let input = Array(bytes.dropFirst())
    checkDecoderRoundTrip(input, split: Int(bytes[0]))

    let prelude = SessionHarness.Prelude.allCases[Int(bytes[0]) % SessionHarness.Prelude.allCases.count]
    let outcome: SessionHarness.Outcome
    do {
        outcome = try harness.run(prelude: prelude, input: input)
    } catch {
        fatalError("the harness failed: \(error)")
    }
    guard outcome.closed else { fatalError("the session did not close after the client's half-close") }
    guard prelude != .amqp else {
        // An AMQP connection (docs/protocols.md §3): proton wrote the answers; closing is the check.
        _ = harness.takeLogLines()
        return 0
    }
    var decoder = MQTTDecoder()
    decoder.append(outcome.output)
    do {
        while try decoder.next() != nil {}
    } catch {
        fatalError("DevHub wrote malformed MQTT: \(error)")
    }
    guard decoder.bufferedByteCount == 0 else { fatalError("DevHub wrote a truncated packet") }
    _ = harness.takeLogLines()
    return 0
}

private func decodeAll(_ chunks: [ArraySlice<UInt8>]) -> ([MQTTPacket], MQTTProtocolError?) {
    var decoder = MQTTDecoder(maxPacketSize: DevHubLimits.maxPacketSize)
    var packets: [MQTTPacket] = []
    do {
        for chunk in chunks {
            decoder.append(chunk)
            while let packet = try decoder.next() { packets.append(packet) }
        }
    } catch {
        return (packets, error)
    }
    return (packets, nil)
}

private func checkDecoderRoundTrip(_ input: [UInt8], split: Int) {
    let whole = decodeAll([input[...]])
    let point = input.isEmpty ? 0 : split % (input.count + 1)
    let halves = decodeAll([input[..<point], input[point...]])
    guard whole.0 == halves.0, whole.1 == halves.1 else {
        fatalError("the decoder's result depends on how the input is split")
    }
    for packet in whole.0 {
        var encoded: [UInt8] = []
        packet.encode(into: &encoded)
        let again = decodeAll([encoded[...]])
        guard again.1 == nil, again.0 == [packet] else {
            fatalError("\(packet.name) does not survive encode → decode")
        }
    }
}
