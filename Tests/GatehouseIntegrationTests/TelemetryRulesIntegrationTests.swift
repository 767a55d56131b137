import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The telemetry rules in the real gatehoused, between real mosquitto brokers: priority lanes
/// through an outage, time to live, archive and its export, per-rule counts, the destination
/// check at start.
@Suite(
    "Telemetry rules end to end (mosquitto + gatehoused)", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct TelemetryRulesIntegrationTests {
    static let outageRules = """
        route telemetry as "telemetry" when not has(message.properties.kind) to upstream
        route telemetry as "alarms first" when message.properties.alarm == "true" to upstream priority high
        route telemetry as "status" when has(message.properties.kind) and message.properties.kind == "status"
          to upstream priority low ttl 3s
        """

    /// `GATEHOUSE_OUTAGE_NORMAL=50000 GATEHOUSE_OUTAGE_ALARMS=500` runs the issue's full figure.
    static func figure(_ name: String, _ fallback: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? fallback
    }

    @Test(
        "the hub down while normal and alarm messages queue: alarms arrive first, order holds per lane, nothing is lost, expired ones are counted and never sent"
    )
    func outageWithPriorities() throws {
        let normalTotal = Self.figure("GATEHOUSE_OUTAGE_NORMAL", 5000)
        let alarmTotal = Self.figure("GATEHOUSE_OUTAGE_ALARMS", 100)
        let devices = ["pump-1", "pump-2", "pump-3", "pump-4"]
        let statusPerDevice = 25
        let rig = try GatewayRig()
        try Self.useRules(rig, Self.outageRules)
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()
        for device in devices {
            #expect(
                try publishLines(
                    ["\(device):w:0"], topic: "devices/\(device)/messages/events/", broker: rig.site, in: rig.dir) == 0)
        }
        #expect(waitUntil(timeout: .seconds(20)) { collector.lines.count == devices.count })

        // The hub goes away; the site keeps publishing: normal, alarms and short-lived status,
        // all devices at once.
        collector.stop()  // its persistent session stays on the hub broker
        rig.hub.stop()
        var publishers: [Subprocess] = []
        for (index, device) in devices.enumerated() {
            let normals = normalTotal / devices.count + (index < normalTotal % devices.count ? 1 : 0)
            let alarms = alarmTotal / devices.count + (index < alarmTotal % devices.count ? 1 : 0)
            for (kind, count, topic) in [
                ("n", normals, "devices/\(device)/messages/events/"),
                ("a", alarms, "devices/\(device)/messages/events/alarm=true"),
                ("s", statusPerDevice, "devices/\(device)/messages/events/kind=status"),
            ] where count > 0 {
                let input = try rig.dir.write(
                    "\(device)-\(kind).txt",
                    (1...count).map { "\(device):\(kind):\($0)" }.joined(separator: "\n") + "\n")
                publishers.append(
                    try Subprocess(
                        which("mosquitto_pub")!, rig.site.clientArguments + ["-q", "1", "-l", "-t", topic],
                        in: rig.dir, name: "pub-\(device)-\(kind)", stdin: FileHandle(forReadingAtPath: input)))
            }
        }
        let published = ContinuousClock.now
        for publisher in publishers { #expect(publisher.wait(timeout: .seconds(300)) == 0) }
        let statusTotal = statusPerDevice * devices.count
        let total = devices.count + normalTotal + alarmTotal + statusTotal
        #expect(
            waitUntil(timeout: .seconds(120)) { rig.daemonCounter("ingestedTotal") == total },
            "ingested \(rig.daemonCounter("ingestedTotal")) of \(total)")
        // The status messages' ttl (3 s) runs out while the hub is away.
        let waited = ContinuousClock.now - published
        if waited < .seconds(4) {
            Thread.sleep(forTimeInterval: Double((Duration.seconds(4) - waited).components.seconds) + 0.5)
        }

        try rig.hub.start()
        let resumed = try Collector(
            broker: rig.hub, topics: ["devices/#"], in: rig.dir, name: "collector", file: "collector-2")
        let expected = normalTotal + alarmTotal
        func arrivals() -> [String] {
            var seen = Set<String>()
            return (collector.lines + resumed.lines).compactMap { line in
                guard let space = line.lastIndex(of: " ") else { return nil }
                let payload = String(line[line.index(after: space)...])
                guard !payload.contains(":w:"), seen.insert(payload).inserted else { return nil }
                return payload
            }
        }
        #expect(
            waitUntil(timeout: .seconds(240)) {
                arrivals().count >= expected && rig.daemonCounter("outboxMessages") == 0
            },
            "arrived \(arrivals().count) of \(expected); outbox \(rig.daemonCounter("outboxMessages"))")
        Thread.sleep(forTimeInterval: 1)  // anything late would show now
        let arrived = arrivals()
        let kinds = arrived.map { $0.split(separator: ":")[1] }

        // Nothing lost, nothing expired sent.
        #expect(arrived.count == expected)
        #expect(!kinds.contains("s"), "a status message past its ttl was sent")
        // Every alarm before the normal backlog finished.
        let lastAlarm = kinds.lastIndex(of: "a") ?? -1
        let lastNormal = kinds.lastIndex(of: "n") ?? -1
        let firstNormal = kinds.firstIndex(of: "n") ?? -1
        print(
            "outage with priorities: \(normalTotal) normal + \(alarmTotal) alarm messages (and \(statusTotal) with a 3 s ttl) "
                + "queued while the hub was down; after it returned the last alarm arrived as message \(lastAlarm + 1) "
                + "of \(arrived.count), the first normal one as message \(firstNormal + 1)")
        // Each device's link comes back on its own (jittered backoff): where each one's first
        // message and last alarm arrived.
        for device in devices {
            let positions = arrived.indices.filter { arrived[$0].hasPrefix(device + ":") }
            let alarms = positions.filter { kinds[$0] == "a" }
            print(
                "  \(device): first message arrived as \(positions.first.map { $0 + 1 } ?? 0), "
                    + "its last alarm as \(alarms.last.map { $0 + 1 } ?? 0)")
        }
        #expect(lastAlarm < lastNormal)
        // Per device, each lane in order, and its alarms before its normal messages.
        for device in devices {
            let mine = arrived.filter { $0.hasPrefix(device + ":") }
            for kind in ["n", "a"] {
                let numbers = mine.filter { $0.split(separator: ":")[1] == kind }.map {
                    Int($0.split(separator: ":")[2])!
                }
                #expect(numbers == numbers.sorted(), "the \(kind) lane of \(device) in order")
            }
            let kindsOfMine = mine.map { $0.split(separator: ":")[1] }
            if let lastA = kindsOfMine.lastIndex(of: "a"), let firstN = kindsOfMine.firstIndex(of: "n") {
                #expect(lastA < firstN, "\(device): every alarm before its first normal message")
            }
        }
        // Counted per rule: `gatehouse rules stats --json`.
        #expect(
            waitUntil(timeout: .seconds(15)) {
                (try? Self.ruleStats(rig))?["status"]?["expired"] == statusTotal
            }, "\(String(describing: try? Self.ruleStats(rig)))")
        let stats = try Self.ruleStats(rig)
        #expect(stats["status"]?["routed"] == statusTotal)
        #expect(stats["alarms first"]?["routed"] == alarmTotal)
        #expect(stats["telemetry"]?["routed"] == normalTotal + alarmTotal + devices.count)
    }

    /// Writes a rule set in the rig's folder and points `[gateway] rules_dir` at it.
    static func useRules(_ rig: GatewayRig, _ text: String) throws {
        let directory = rig.dir.file("rules")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try text.write(toFile: directory + "/30-telemetry.rules", atomically: true, encoding: .utf8)
        try rig.setRulesDir(directory)
    }

    /// `gatehouse rules stats --json`, by rule name.
    static func ruleStats(_ rig: GatewayRig) throws -> [String: [String: Int]] {
        let (code, output) = try Subprocess.run(Paths.gatehouseCLI, ["rules", "stats", "--json", "-c", rig.configPath])
        guard code == 0, let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
            let rules = json["rules"] as? [[String: Any]]
        else { throw FixtureError("gatehouse rules stats failed (\(code)): \(output)") }
        var result: [String: [String: Int]] = [:]
        for rule in rules {
            guard let name = rule["rule"] as? String else { continue }
            result[name] = rule.compactMapValues { $0 as? Int }
        }
        return result
    }

    @Test("archive keeps what the rules send there; gatehouse archive export writes it as JSON lines")
    func archiveExport() throws {
        let rig = try GatewayRig()
        try Self.useRules(
            rig,
            """
            route telemetry as "upstream" when not has(message.properties.type) to upstream
            route telemetry as "archive diagnostics" when message.topic matches "devices/*/messages/events/type=diag*"
              to archive
            drop telemetry as "oversized" when message.size > 1 KiB
            """)
        let collector = try Collector(broker: rig.hub, topics: ["devices/#"], in: rig.dir)
        try rig.startGateway()
        #expect(
            try publishLines(
                [#"{"temp": 21.5, "ok": true}"#, "not json", String(repeating: "x", count: 2000)],
                topic: "devices/probe-1/messages/events/type=diag", broker: rig.site, in: rig.dir) == 0)
        #expect(try publishLines(["up"], topic: "devices/probe-1/messages/events/", broker: rig.site, in: rig.dir) == 0)
        #expect(waitUntil(timeout: .seconds(15)) { collector.lines.count == 1 })
        // The daemon writes the rules' counters within 5 s of a change.
        #expect(
            waitUntil(timeout: .seconds(15)) {
                let stats = try? Self.ruleStats(rig)
                return stats?["archive diagnostics"]?["archived"] == 2 && stats?["oversized"]?["dropped"] == 1
                    && stats?["upstream"]?["routed"] == 1
            }, "\(String(describing: try? Self.ruleStats(rig)))")
        Thread.sleep(forTimeInterval: 0.5)
        #expect(collector.lines == ["devices/probe-1/messages/events/ up"])

        let (code, output) = try Subprocess.run(Paths.gatehouseCLI, ["archive", "export", "-c", rig.configPath])
        #expect(code == 0, "\(output)")
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
        #expect(first?["device"] as? String == "probe-1")
        #expect(first?["topic"] as? String == "devices/probe-1/messages/events/type=diag")
        #expect((first?["properties"] as? [String: String]) == ["type": "diag"])
        #expect(first?["rule"] as? String == "archive diagnostics")
        #expect((first?["body"] as? [String: Any])?["temp"] as? Double == 21.5)
        #expect(lines[0].contains(#""body":{"temp":21.5,"ok":true}"#), "the body as JSON, members in order")
        let second = try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any]
        #expect(second?["body"] == nil)
        #expect(second?["payload_base64"] as? String == Data("not json".utf8).base64EncodedString())

        let file = rig.dir.file("export.jsonl")
        let (fileCode, _) = try Subprocess.run(
            Paths.gatehouseCLI, ["archive", "export", "--since", "1h", "--output", file, "-c", rig.configPath])
        #expect(fileCode == 0)
        #expect(try String(contentsOfFile: file, encoding: .utf8) == output)
        let (_, none) = try Subprocess.run(
            Paths.gatehouseCLI, ["archive", "export", "--device", "other", "-c", rig.configPath])
        #expect(none.isEmpty)

        let (tableCode, table) = try Subprocess.run(Paths.gatehouseCLI, ["rules", "stats", "-c", rig.configPath])
        #expect(tableCode == 0)
        #expect(table.contains("archive diagnostics"))
        #expect(table.contains("ROUTED"))
    }

    @Test("a route to a destination the daemon does not know stops gatehoused --check with 78")
    func unknownDestination() throws {
        let rig = try GatewayRig()
        try Self.useRules(rig, "route telemetry to \"cold-storage\"\n")
        let (code, output) = try Subprocess.run(Paths.gatehoused, ["--check", "-c", rig.configPath])
        #expect(code == 78)
        #expect(output.contains("rules.check.unknown-destination"), "\(output)")
        #expect(output.contains("cold-storage"))
    }
}
