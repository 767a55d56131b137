import Foundation
import GatehouseTestSupport
import Testing

/// Issue #15, item 1, end to end: real site and hub brokers and the real gatehoused. Among 10
/// devices' streams, a 2 MB site message (over `[site] max_message_bytes`) and a 300 KB one
/// (the site takes it; over IoT Hub's 256 KiB): every other message arrives, in order; the two
/// are dead letters with their reason, counted in `gatehouse status`.
///
/// The hub half needs the relay to keep what the hub transport refuses (`send` → `.invalid`) as
/// a dead letter (`StateStore.moveToDeadLetters`) and to go on with the device's next messages.
@Suite(
    "Dead letters end to end (mosquitto + gatehoused)", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct DeadLetterEndToEndTests {
    @Test("10 devices' streams, a 2 MB site message and a 300 KB message: the rest arrives, the two are dead letters")
    func tenDevicesTwoPoisonMessages() throws {
        let rig = try GatewayRig()
        var text = try String(contentsOfFile: rig.configPath, encoding: .utf8)
        text = text.replacingOccurrences(
            of: "[site]\nplugin = \"mqtt\"\n", with: "[site]\nplugin = \"mqtt\"\nmax_message_bytes = \"1 MiB\"\n")
        try text.write(toFile: rig.configPath, atomically: true, encoding: .utf8)
        // A site broker that forwards the 2 MB message: its packet limit (4 MiB) is above the
        // gateway's (the packaged broker's is 960 KiB: it would disconnect the device instead).
        rig.site.stop()
        let site = try MosquittoBroker(
            name: "site-large", in: rig.dir, port: rig.site.port,
            extraConfig: "max_inflight_messages 500\nmax_packet_size 4194304")
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()

        let devices = (0..<10).map { "dev-\($0)" }
        func stream(_ range: ClosedRange<Int>) throws {
            let publishers = try devices.map { device in
                let input = try rig.dir.write(
                    "\(device)-\(range.lowerBound).txt", range.map { "\(device)-\($0)" }.joined(separator: "\n") + "\n")
                return try Subprocess(
                    which("mosquitto_pub")!,
                    site.clientArguments + ["-q", "1", "-l", "-t", "devices/\(device)/messages/events/"],
                    in: rig.dir, name: "pub-\(device)-\(range.lowerBound)", stdin: FileHandle(forReadingAtPath: input))
            }
            for publisher in publishers { #expect(publisher.wait(timeout: .seconds(60)) == 0) }
        }
        func publishFile(_ bytes: Int, byte: UInt8, topic: String) throws {
            let path = rig.dir.file("blob-\(bytes).bin")
            #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: byte, count: bytes)))
            let (status, output) = try Subprocess.run(
                which("mosquitto_pub")!, site.clientArguments + ["-q", "1", "-t", topic, "-f", path])
            #expect(status == 0, "\(output)")
        }
        try stream(1...5)
        try publishFile(2 << 20, byte: 0x51, topic: "devices/dev-3/messages/events/kind=blob")
        try publishFile(300_000, byte: 0x52, topic: "devices/dev-7/messages/events/kind=image")
        try stream(6...10)

        #expect(
            waitUntil(timeout: .seconds(60)) {
                let arrived = payloadsByDevice(collector.lines)
                return devices.allSatisfy { Set(arrived[$0] ?? []).count == 10 }
            },
            "arrived: \(payloadsByDevice(collector.lines).mapValues(\.count)); gatehoused: \(rig.gatewayLogs.suffix(3000))"
        )
        let arrived = payloadsByDevice(collector.lines)
        for device in devices {
            var seen = Set<String>()
            #expect(
                (arrived[device] ?? []).filter { seen.insert($0).inserted } == (1...10).map { "\(device)-\($0)" },
                "\(device): every message, in order, and nothing else")
        }

        // Both are dead letters with their reason, counted in `gatehouse status`.
        #expect(
            waitUntil(timeout: .seconds(10)) {
                ((try? rig.status())?["deadLetters"] as? [String: Any])?["count"] as? Int == 2
            })
        let status = try rig.status()
        let counted = try #require(status["deadLetters"] as? [String: Any])
        #expect(counted["byReason"] as? [String: Int] == ["too-large": 1, "hub-limit": 1])
        #expect(counted["sinceCount"] as? Int == 2)

        let (code, listing) = try Subprocess.run(
            Paths.gatehouseCLI, ["dead-letters", "list", "--json", "-c", rig.configPath])
        #expect(code == 0, "\(listing)")
        let letters = listing.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let siteLetter = letters.first { $0["reason"] as? String == "too-large" }
        #expect(siteLetter?["device"] as? String == "dev-3")
        #expect(siteLetter?["source"] as? String == "site")
        #expect(siteLetter?["size"] as? Int == 2 << 20)
        #expect(siteLetter?["topic"] as? String == "devices/dev-3/messages/events/kind=blob")
        let hubLetter = letters.first { $0["reason"] as? String == "hub-limit" }
        #expect(hubLetter?["device"] as? String == "dev-7")
        #expect(hubLetter?["source"] as? String == "hub")
        #expect(hubLetter?["size"] as? Int == 300_000)
        #expect(hubLetter?["complete"] as? Bool == true)
        #expect(hubLetter?["properties"] as? [[String]] == [["kind", "image"]])

        // Never a payload byte in a log line; sizes only.
        let logs = rig.gatewayLogs
        #expect(!logs.contains("QQQQQQQQ") && !logs.contains("RRRRRRRR"))
        #expect(logs.contains("dead letter"))
    }
}
