import Foundation
import GateRules
import GatehouseCore
import GatehousePluginHost
import GatehousePluginKit
import GatehouseStore
import GatehouseTestSupport
import Logging
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The telemetry rules applied on ingest, against the real relay and the C loopback upstream
/// across the real ABI: priority lanes after an outage, time to live, archive, drop, per-rule
/// counts, device tags, and spilling to disk per lane.
// Nested in RelayTests, which is serialized: the C loopback fixture keeps its counters in
// globals, so no two of its users may run at once.
extension RelayTests {
    @Suite("Relay: telemetry rules on ingest", .serialized)
    struct TelemetryRulesRelayTests {
        final class Harness: LoopbackHooks {
            let dir = TempDir()
            let store: StateStore
            let router: HostRouter
            let upstream: PluginInstance
            let logs = CapturedLogs()
            let outFile: String
            let rules: PolicyHandle?
            private let library: PluginLibrary
            let handle: UnsafeMutableRawPointer

            var relay: TelemetryRelay { router.telemetry }

            init(
                rules text: String?, policy: OutboxPolicy = OutboxPolicy(), hold: Bool = false,
                memoryCap: Int = 16 << 20,
                archive: ArchivePolicy = ArchivePolicy()
            ) throws {
                let path = try CFixturePlugin.path("loopback_upstream")
                library = try PluginLibrary(path: path)
                handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD)!
                store = try StateStore(path: dir.file("state.db"), durability: .normal)
                let logs = self.logs
                router = try HostRouter(
                    store: store, policy: policy, signer: NoSigner(),
                    logger: Logger(label: "test") { _ in CapturingLogHandler(logs) }, memoryCap: memoryCap)
                if let text {
                    let (policy, diagnostics) = Policy.compile(
                        files: [SourceFile(name: "t.rules", text: text)],
                        options: CheckOptions(destinations: TelemetryDestination.all))
                    guard let policy else { throw FixtureError("the rules do not check: \(diagnostics)") }
                    rules = PolicyHandle(policy)
                } else {
                    rules = nil
                }
                var gateway = GatewayConfig.Gateway()
                gateway.site = "plant-a"
                router.telemetry.configure(rules: rules, gateway: gateway, archive: archive)
                outFile = dir.file("sent.txt")
                let config = #"{"out":"\#(outFile)","hold":\#(hold)}"#
                upstream = try PluginInstance(
                    library: library, role: .upstream, label: "hub", configJSON: Array(config.utf8), delegate: router)
                try upstream.start()
                try router.start(upstream: upstream)
            }

            /// One message; `properties` as a property bag's pairs, `topic` as the site saw it.
            static func message(
                _ device: String, _ payload: String, _ properties: [PluginMessage.Property] = [], topic: String? = nil
            ) -> PluginMessage {
                PluginMessage(
                    deviceID: device, payload: Array(payload.utf8), properties: properties,
                    topic: topic ?? "devices/\(device)/messages/events/")
            }

            func ingest(_ messages: [PluginMessage]) -> PluginStatus { router.ingest(messages, from: "site") }

            /// Lines the plugin wrote: "device\tproperties\tpayload".
            var sent: [[String]] {
                ((try? String(contentsOfFile: outFile, encoding: .utf8)) ?? "").split(separator: "\n")
                    .map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
            }

            var sentPayloads: [String] { sent.map { $0[2] } }
            func payloads(of device: String) -> [String] { sent.filter { $0[0] == device }.map { $0[2] } }

            /// Opens each device's identity (its first message goes out and is acknowledged), then
            /// takes its link down: the hub is unreachable from here on.
            func outage(_ devices: [String]) {
                for device in devices { #expect(ingest([Self.message(device, "hello")]) == .ok) }
                #expect(waitUntil(timeout: .seconds(5)) { sentCount >= UInt64(devices.count) })
                ackAll()
                #expect(waitUntil(timeout: .seconds(5)) { relay.snapshot.inflight == 0 })
                for device in devices { setLink(device, up: false) }
            }

            /// Acknowledges whatever is held until the outbox is empty.
            func drain(timeout: Duration = .seconds(30)) -> Bool {
                waitUntil(timeout: timeout) {
                    ackAll()
                    return relay.snapshot.outboxMessages == 0 && relay.snapshot.inflight == 0
                }
            }

            func stats(_ rule: String) -> TelemetryRuleStats? { relay.ruleStats.first { $0.rule == rule } }

            func stop() {
                router.drain(timeout: .milliseconds(200))
                upstream.stop(drainMilliseconds: 0)
                upstream.destroy()
            }
        }

        static let lanes = """
            route telemetry as "normal" when not has(message.properties.lane) to upstream
            route telemetry as "alarms" when message.properties.lane == "high" to upstream priority high
            route telemetry as "bulk" when message.properties.lane == "low" to upstream priority low
            """

        /// "n-3" for the normal message 3, "h-3", "l-3".
        static func mixed(_ device: String, count: Int) -> [PluginMessage] {
            (0..<count).flatMap { index -> [PluginMessage] in
                var batch = [Harness.message(device, "\(device):n-\(index)")]
                if index % 10 == 0 {
                    batch.append(Harness.message(device, "\(device):h-\(index)", [.init("lane", "high")]))
                }
                if index % 20 == 0 {
                    batch.append(Harness.message(device, "\(device):l-\(index)", [.init("lane", "low")]))
                }
                return batch
            }
        }

        static func lane(of payload: String) -> Character { payload.split(separator: ":")[1].first! }

        @Test(
            "after an outage a device's high messages go before its normal ones before its low ones, in order within each lane"
        )
        func lanesPerDevice() throws {
            var policy = OutboxPolicy()
            policy.inflightPerDevice = 8
            let h = try Harness(rules: Self.lanes, policy: policy, hold: true)
            defer { h.stop() }
            let devices = ["d1", "d2", "d3"]
            h.outage(devices)
            for device in devices { #expect(h.ingest(Self.mixed(device, count: 200)) == .ok) }
            let records = try h.store.outboxRecords(fromSeq: 0, limit: 10_000)
            #expect(records.filter { $0.priority == .high }.count == 60)
            #expect(records.filter { $0.priority == .low }.count == 30)
            for device in devices { h.setLink(device, up: true) }
            #expect(h.drain())
            for device in devices {
                let sent = h.payloads(of: device).filter { $0 != "hello" }
                #expect(sent.count == 230, "nothing lost, nothing twice")
                let lanes = sent.map(Self.lane)
                #expect(
                    lanes == Array(repeating: "h", count: 20) + Array(repeating: "n", count: 200)
                        + Array(repeating: "l", count: 10))
                for lane in ["h", "n", "l"] {
                    let indexes = sent.filter { Self.lane(of: $0) == Character(lane) }.map {
                        Int($0.split(separator: "-")[1])!
                    }
                    #expect(indexes == indexes.sorted(), "order within the \(lane) lane of \(device)")
                }
            }
            // Across devices: every alarm went out before the normal backlog finished.
            let all = h.sentPayloads.filter { $0 != "hello" }
            let lastHigh = all.lastIndex { Self.lane(of: $0) == "h" }!
            let lastNormal = all.lastIndex { Self.lane(of: $0) == "n" }!
            #expect(lastHigh < lastNormal)
            #expect(h.stats("alarms")?.routed == 60)
            #expect(h.stats("normal")?.routed == 600 + 3)  // and the three "hello"s
            #expect(h.stats("bulk")?.routed == 30)
        }

        @Test("within one dispatcher pass every device's high messages go before any normal one")
        func lanesAcrossDevices() throws {
            var policy = OutboxPolicy()
            policy.inflightPerDevice = 1000
            let h = try Harness(rules: Self.lanes, policy: policy)
            defer { h.stop() }
            h.outage(["a", "b"])
            h.setLink("a", up: true)
            h.setLink("b", up: true)
            // One batch, both devices: it lands in memory at once, and one pass sends it.
            #expect(h.ingest(Self.mixed("a", count: 100) + Self.mixed("b", count: 100)) == .ok)
            #expect(h.drain())
            let all = h.sentPayloads.filter { $0 != "hello" }
            #expect(all.count == 230)
            #expect(
                all.map(Self.lane) == Array(repeating: "h", count: 20) + Array(repeating: "n", count: 200)
                    + Array(repeating: "l", count: 10))
        }

        @Test("a message past its route's ttl is dropped and counted per rule, never sent; alarms without one wait")
        func timeToLive() throws {
            let h = try Harness(
                rules: """
                    route telemetry as "status" when not has(message.properties.alarm) to upstream ttl 1s
                    route telemetry as "alarms" when message.properties.alarm == "true" to upstream priority high
                    """, hold: true)
            defer { h.stop() }
            h.outage(["s1"])
            // Expired while waiting in the outbox: the expiry service's sweep takes them out of
            // SQLite and memory.
            #expect(h.ingest((1...5).map { Harness.message("s1", "old-\($0)") }) == .ok)
            #expect(h.ingest([Harness.message("s1", "alarm-1", [.init("alarm", "true")])]) == .ok)
            Thread.sleep(forTimeInterval: 1.2)
            #expect(
                waitUntil(timeout: .seconds(5)) {
                    h.relay.requestExpiry()
                    return h.relay.snapshot.expired == 5
                })
            #expect(h.logs.contains("past their route's time to live"))
            // Expired between two sweeps: the dispatcher does not send them when the link returns.
            #expect(h.ingest((1...3).map { Harness.message("s1", "late-\($0)") }) == .ok)
            #expect(h.ingest([Harness.message("s1", "alarm-2", [.init("alarm", "true")])]) == .ok)
            Thread.sleep(forTimeInterval: 1.2)
            h.setLink("s1", up: true)
            #expect(h.drain())
            #expect(h.payloads(of: "s1") == ["hello", "alarm-1", "alarm-2"])
            #expect(h.relay.snapshot.expired == 8)
            #expect(h.relay.snapshot.delivered == 3)
            #expect(h.stats("status")?.expired == 8)
            #expect(h.stats("status")?.routed == 8 + 1)  // the first "hello" too
            #expect(h.stats("alarms")?.expired == 0)
            #expect(try h.store.outboxTotals().messages == 0)
            // Fresh messages within their ttl still go.
            #expect(h.ingest([Harness.message("s1", "fresh")]) == .ok)
            #expect(h.drain())
            #expect(h.payloads(of: "s1").last == "fresh")
        }

        @Test(
            "a message that expires as the dispatcher meets it is counted once, whatever the expiry sweep does meanwhile"
        )
        func expiryCountedOnce() throws {
            let h = try Harness(rules: "route telemetry as \"status\" to upstream ttl 1s", hold: true)
            defer { h.stop() }
            h.outage(["e1", "e2"])
            for device in ["e1", "e2"] {
                #expect(h.ingest((1...400).map { Harness.message(device, "s-\($0)") }) == .ok)
            }
            Thread.sleep(forTimeInterval: 1.2)
            // The link returns while the expiry service runs: the dispatcher drops what it meets
            // (its rows leave SQLite with the next commit) as the sweep looks for expired rows.
            h.setLink("e1", up: true)
            h.setLink("e2", up: true)
            for _ in 0..<100 {
                h.relay.requestExpiry()
                Thread.sleep(forTimeInterval: 0.005)
            }
            #expect(waitUntil(timeout: .seconds(10)) { h.relay.snapshot.expired >= 800 })
            Thread.sleep(forTimeInterval: 0.3)
            #expect(h.relay.snapshot.expired == 800)
            #expect(h.relay.snapshot.dropped == 800)
            #expect(h.stats("status")?.expired == 800)
            #expect(waitUntil(timeout: .seconds(5)) { h.relay.snapshot.outboxMessages == 0 })
            #expect(h.relay.snapshot.outboxMessages == 0)
            #expect(h.relay.snapshot.outboxBytes == 0)
            #expect(try h.store.outboxTotals().messages == 0)
            #expect(h.payloads(of: "e1") == ["hello"])
        }

        @Test("archive keeps messages on the gateway, drop sends nothing; each counted per rule")
        func archiveAndDrop() throws {
            let h = try Harness(
                rules: """
                    route telemetry to upstream
                    route telemetry as "archive diagnostics" when message.topic matches "devices/*/diagnostics" to archive priority low
                    drop telemetry as "oversized" when message.size > 1 KiB because "too big"
                    drop telemetry as "quiet" when has(message.properties.quiet) and message.properties.quiet == "true"
                    """)
            defer { h.stop() }
            #expect(
                h.ingest([
                    Harness.message("p1", "t1"),
                    Harness.message("p1", #"{"diag":1}"#, [.init("k", "v")], topic: "devices/p1/diagnostics"),
                    Harness.message("p1", String(repeating: "x", count: 2000)),
                    Harness.message("p1", "hush", [.init("quiet", "true")]),
                    Harness.message("p2", "t2"),
                ]) == .ok)
            #expect(waitUntil(timeout: .seconds(5)) { h.relay.snapshot.outboxMessages == 0 && h.sent.count == 3 })
            #expect(Set(h.sentPayloads) == ["t1", #"{"diag":1}"#, "t2"])
            let archived = try h.store.archiveRecords(limit: 10)
            #expect(archived.count == 1)
            #expect(archived.first?.deviceID == "p1")
            #expect(archived.first?.topic == "devices/p1/diagnostics")
            #expect(archived.first?.properties == [OutboxProperty("k", "v")])
            #expect(archived.first?.payload == Array(#"{"diag":1}"#.utf8))
            #expect(archived.first?.rule == "archive diagnostics")
            #expect(h.stats("route to upstream")?.routed == 3)
            #expect(h.stats("archive diagnostics")?.archived == 1)
            #expect(h.stats("oversized")?.dropped == 1)
            #expect(h.stats("quiet")?.dropped == 1)
            #expect(h.relay.snapshot.ruleDropped == 2)
            #expect(h.relay.snapshot.archived == 1)
            // The registry counts what the gateway kept, each message once.
            #expect(try h.store.devices().first { $0.id == "p1" }?.messagesIn == 2)
        }

        @Test("a message no rule routes is dropped and counted against the default")
        func defaultDrop() throws {
            let h = try Harness(rules: #"route telemetry when message.properties.keep == "yes" to upstream"#)
            defer { h.stop() }
            #expect(
                h.ingest([Harness.message("q", "kept", [.init("keep", "yes")]), Harness.message("q", "gone")]) == .ok)
            #expect(waitUntil(timeout: .seconds(5)) { h.sent.count == 1 && h.relay.snapshot.outboxMessages == 0 })
            #expect(h.stats("(no rule routes the message)")?.dropped == 1)
            #expect(h.stats("route to upstream")?.routed == 1)
        }

        @Test("rules that read the device see the registry's tags and model, refreshed without a read per message")
        func deviceTags() throws {
            let h = try Harness(
                rules: """
                    route telemetry to upstream
                    route telemetry as "site A first" when device.tags.site == "A" and device.model startswith "pump" to upstream priority high
                    """, hold: true)
            defer { h.stop() }
            try h.store.setDeviceMetadata(
                "pump-1", DeviceMetadata(model: "pump-3000", tags: ["site": .string("A")]), atMS: 1)
            h.relay.refreshDeviceFacts()
            #expect(h.ingest([Harness.message("pump-1", "p"), Harness.message("valve-1", "v")]) == .ok)
            let records = try h.store.outboxRecords(fromSeq: 0, limit: 10)
            #expect(records.first { $0.deviceID == "pump-1" }?.priority == .high)
            #expect(records.first { $0.deviceID == "valve-1" }?.priority == .normal)
        }

        @Test("a rule set without telemetry rules, or none at all, sends everything upstream at normal priority")
        func withoutTelemetryRules() throws {
            for rules in [nil, #"allow command "reboot""#] {
                let h = try Harness(rules: rules, hold: true)
                #expect(
                    h.ingest([Harness.message("z", "1"), Harness.message("z", "2", [.init("alarm", "true")])]) == .ok)
                let records = try h.store.outboxRecords(fromSeq: 0, limit: 10)
                #expect(records.map(\.priority) == [.normal, .normal])
                #expect(records.allSatisfy { $0.expiresMS == 0 })
                #expect(h.relay.ruleStats.isEmpty)
                h.stop()
            }
        }

        @Test("with memory full, each lane spills and is read back on its own, high first: nothing lost, order kept")
        func spillPerLane() throws {
            var policy = OutboxPolicy()
            policy.inflightPerDevice = 32
            // 4 KiB of payload in memory: the backlog below is 80 times that.
            let h = try Harness(rules: Self.lanes, policy: policy, hold: true, memoryCap: 4096)
            defer { h.stop() }
            h.outage(["m"])
            let payload = String(repeating: "x", count: 100)
            var messages: [PluginMessage] = []
            for index in 0..<3000 {
                messages.append(Harness.message("m", "m:n-\(index)-\(payload)"))
                if index % 100 == 0 {
                    messages.append(Harness.message("m", "m:h-\(index)-\(payload)", [.init("lane", "high")]))
                }
            }
            // In batches, as a site transport hands them over.
            for start in stride(from: 0, to: messages.count, by: 100) {
                #expect(h.ingest(Array(messages[start..<min(start + 100, messages.count)])) == .ok)
            }
            #expect(h.relay.snapshot.memoryBytes <= 4096 + 200)
            h.setLink("m", up: true)
            #expect(h.drain(timeout: .seconds(60)))
            let sent = h.payloads(of: "m").filter { $0 != "hello" }
            #expect(sent.count == 3030)
            #expect(Set(sent).count == 3030)
            let highs = sent.enumerated().filter { Self.lane(of: $0.element) == "h" }.map(\.offset)
            // The normal messages already in memory go first (about 4 KiB of them); then the high
            // lane, read back before the rest of the normal backlog.
            #expect(highs.last! < 100, "the last alarm went out as message \(highs.last!) of 3030")
            for lane in ["h", "n"] {
                let indexes = sent.filter { Self.lane(of: $0) == Character(lane) }.map {
                    Int($0.split(separator: "-")[1])!
                }
                #expect(indexes == indexes.sorted())
            }
        }
    }
}
