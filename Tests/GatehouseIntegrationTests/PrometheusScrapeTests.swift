import Foundation
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// gatehoused's `/metrics` scraped by a real Prometheus server (Debian's `prometheus`) while
/// telemetry and commands flow through DevHub: queried through Prometheus's HTTP API, the
/// counters equal what the test sent, refused and dropped; `promtool check metrics` reports
/// nothing on the exposition (docs/operations.md).
@Suite(
    "Metrics scraped by Prometheus", .serialized,
    .enabled(if: MosquittoBroker.available, "mosquitto is not installed: run scripts/setup"))
struct PrometheusScrapeTests {
    static let prometheus = which("prometheus")
    static let promtool = which("promtool")

    /// The command rules of the gate tests, and telemetry rules that drop what carries `debug`.
    static let rules =
        CommandGateTests.rules + """

            route telemetry as "telemetry" when not has(message.properties.debug) to upstream
            drop telemetry as "debug" when has(message.properties.debug) because "debug output stays on site"
            """

    /// A Prometheus server scraping one target every second, on free loopback ports.
    final class PrometheusServer: @unchecked Sendable {
        // @unchecked: immutable after init; the child is used through its thread-safe API.
        let port = freePort()
        let child: Subprocess

        init(target: String, in dir: TempDir) throws {
            let config = try dir.write(
                "prometheus.yml",
                """
                global:
                  scrape_interval: 1s
                  scrape_timeout: 1s
                scrape_configs:
                  - job_name: gatehouse
                    static_configs:
                      - targets: ["\(target)"]
                """)
            child = try Subprocess(
                prometheus!,
                [
                    "--config.file=\(config)", "--storage.tsdb.path=\(dir.file("prometheus-data"))",
                    "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn",
                ], in: dir, name: "prometheus")
            guard waitUntil(timeout: .seconds(30), { MosquittoBroker.listening(port) }) else {
                throw FixtureError("prometheus did not start: \(child.stderr)")
            }
        }

        /// An instant query through the HTTP API: each series' labels and value.
        func query(_ promQL: String) throws -> [(labels: [String: String], value: Double)] {
            let (code, output) = try Subprocess.run(
                "/usr/bin/curl",
                ["-s", "--get", "--data-urlencode", "query=\(promQL)", "http://127.0.0.1:\(port)/api/v1/query"])
            guard code == 0, let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
                json["status"] as? String == "success", let data = json["data"] as? [String: Any],
                let result = data["result"] as? [[String: Any]]
            else { throw FixtureError("query \(promQL): \(output)") }
            return result.map { series in
                let value = (series["value"] as? [Any])?.last as? String
                return (series["metric"] as? [String: String] ?? [:], Double(value ?? "") ?? .nan)
            }
        }

        /// The single value of `promQL` (nil: no series, or more than one).
        func value(_ promQL: String) -> Double? {
            guard let result = try? query(promQL), result.count == 1 else { return nil }
            return result[0].value
        }

        deinit { child.stop() }
    }

    @Test(
        "Prometheus scrapes gatehoused: messages received, sent, dropped, dead letters and command decisions equal what the test did"
    )
    func scrapedCountersMatchTraffic() throws {
        guard let promtool = Self.promtool, Self.prometheus != nil else {
            // Printed, not silently skipped (docs/demo-and-tests.md).
            print("PrometheusScrapeTests: prometheus and promtool are not installed (run scripts/setup); not run")
            return
        }
        let metricsPort = freePort()
        let fixture = try CommandGateTests.Fixture(
            rulesText: Self.rules, moreConfig: "[metrics]\nlisten = \"127.0.0.1:\(metricsPort)\"")
        let target = "127.0.0.1:\(metricsPort)"
        let prometheus = try PrometheusServer(target: target, in: fixture.dir)
        #expect(waitUntil(timeout: .seconds(20)) { prometheus.value("up{job=\"gatehouse\"}") == 1 })

        // Telemetry: the fixture's leaf device sent 1; 40 more go upstream, 7 are dropped by the
        // rules, 1 is over IoT Hub's 256 KiB limit and becomes a dead letter at the site side.
        let site = fixture.rig.site
        #expect(
            try publishLines(
                (1...40).map { "{\"n\":\($0)}" }, topic: "devices/pump-1/messages/events/", broker: site,
                in: fixture.dir) == 0)
        #expect(
            try publishLines(
                (1...7).map { "{\"debug\":\($0)}" }, topic: "devices/pump-1/messages/events/debug=1", broker: site,
                in: fixture.dir) == 0)
        let big = try fixture.dir.write("big.bin", String(repeating: "x", count: 300_000))
        let pub = try Subprocess(
            which("mosquitto_pub")!,
            site.clientArguments + ["-q", "1", "-t", "devices/pump-1/messages/events/", "-f", big],
            in: fixture.dir, name: "pub-big")
        #expect(pub.wait(timeout: .seconds(30)) == 0)

        // Commands: allowed by "operators reboot", denied by "viewers cannot reboot", and two
        // refused before the rules (no token; a token for another audience).
        let operatorToken = try fixture.token(["--role", "Gateway.Operator", "--subject", "op-1"])
        let viewerToken = try fixture.token(["--role", "Gateway.Viewer", "--subject", "viewer-1"])
        let otherAudience = try fixture.token(["--role", "Gateway.Operator", "--audience", "api://elsewhere"])
        #expect(
            try fixture.method("pump-1", "reboot", ["authorization": "Bearer \(operatorToken)", "command_id": "m-1"]).0
                == 200)
        #expect(
            try fixture.method("pump-1", "reboot", ["authorization": "Bearer \(viewerToken)", "command_id": "m-2"]).0
                == 403)
        #expect(try fixture.method("pump-1", "reboot", ["command_id": "m-3"]).0 == 403)
        #expect(
            try fixture.method("pump-1", "reboot", ["authorization": "Bearer \(otherAudience)", "command_id": "m-4"]).0
                == 403)

        // Each decision's id joins its log line to its audit row.
        let audit = try fixture.audit()
        #expect(audit.count == 4)
        for row in audit {
            let id = row["decisionID"] as? String ?? ""
            #expect(id.count == 16 && id.allSatisfy(\.isHexDigit), "\(row)")
            #expect(fixture.rig.gatewayLogs.contains("decision=\(id)"), "no log line carries decision \(id)")
            let one = try fixture.auditOutput(["--json", "--decision", id])
            let rows = try JSONSerialization.jsonObject(with: Data(one.utf8)) as? [[String: Any]]
            #expect(rows?.count == 1 && rows?.first?["id"] as? Int == row["id"] as? Int)
        }

        // What Prometheus stored, through its HTTP API, once the counts settle.
        let expected: [(String, Double)] = [
            (#"gatehouse_messages_received_total{transport="mqtt"}"#, 1 + 40 + 7),
            (#"gatehouse_messages_sent_total{transport="mqtt"}"#, 1 + 40),
            (#"gatehouse_messages_dropped_total{reason="rule"}"#, 7),
            (#"sum(gatehouse_messages_dropped_total)"#, 7),
            (#"gatehouse_dead_letters_total{source="site",reason="too-large"}"#, 1),
            (#"gatehouse_command_decisions_total{effect="allow",rule="operators reboot"}"#, 1),
            (#"gatehouse_command_decisions_total{effect="deny",rule="viewers cannot reboot"}"#, 1),
            (#"gatehouse_command_decisions_total{effect="deny",rule="none"}"#, 2),
            (#"gatehouse_jwt_failures_total{reason="auth.wrong-audience"}"#, 1),
            (#"gatehouse_outbox_messages{lane="normal"}"#, 0),
            (#"gatehouse_hub_links{state="up"}"#, 1),
            (#"gatehouse_site_link_up"#, 1),
            (#"gatehouse_rules{kind="command"}"#, 3),
            (#"gatehouse_rules{kind="telemetry"}"#, 2),
        ]
        let settled = waitUntil(timeout: .seconds(30)) {
            expected.allSatisfy { prometheus.value($0.0) == $0.1 }
        }
        for (query, value) in expected {
            #expect(prometheus.value(query) == value, "\(query)")
        }
        #expect(settled, "\(fixture.rig.gatewayLogs.suffix(3000))")
        #expect((prometheus.value("process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect(prometheus.value(#"count(gatehouse_rules_info == 1)"#) == 1)
        // Nothing per device: no series carries a device id.
        #expect(try prometheus.query(#"{__name__=~"gatehouse_.+", device!=""}"#).isEmpty)

        // A rule reload (SIGHUP): counted, and the rule set's generation and hash move on.
        let hashBefore = try prometheus.query("gatehouse_rules_info == 1").first?.labels["sha256"]
        let added = "allow command \"config.read\" when \"Gateway.Operator\" in token.roles\n"
        try fixture.dir.write("rules/10-commands.rules", Self.rules + "\n" + added)
        fixture.rig.gateway?.signal(SIGHUP)
        #expect(
            waitUntil(timeout: .seconds(20)) {
                prometheus.value(#"gatehouse_rules_reloads_total{outcome="accepted"}"#) == 1
                    && prometheus.value("gatehouse_rules_generation") == 1
                    && prometheus.value(#"gatehouse_rules{kind="command"}"#) == 4
            })
        let hashAfter = try prometheus.query("gatehouse_rules_info == 1").first?.labels["sha256"]
        #expect(hashBefore != nil && hashAfter != nil && hashBefore != hashAfter)
        #expect(prometheus.value(#"gatehouse_provisioning_devices{state="none"}"#) == 1)

        // `gatehouse status`: the verdict first, and the same summary in --json.
        let summary = try #require(fixture.rig.status()["summary"] as? [String: Any])
        #expect(summary["health"] as? String == "attention")
        #expect(summary["attention"] as? [String] == ["1 dead letter(s) since the start"])
        #expect((summary["devicesByLink"] as? [String: Int])?["up"] == 1)
        let (code, screen) = try Subprocess.run(Paths.gatehouseCLI, ["status", "-c", fixture.rig.configPath])
        #expect(code == 0)
        #expect(screen.hasPrefix("gatehouse: ATTENTION — 1 dead letter(s) since the start\n"), "\(screen)")
        #expect(screen.contains("devices: 1 up, 0 connecting, 0 down"))

        // The exposition itself passes promtool's lint.
        let exposition = try fixture.dir.write("metrics.txt", try Self.curl("http://\(target)/metrics"))
        let check = try Subprocess(
            "/bin/sh", ["-c", "\(promtool) check metrics < \(exposition)"], in: fixture.dir, name: "promtool")
        let status = check.wait(timeout: .seconds(30))
        #expect(status == 0 && check.stdout.isEmpty && check.stderr.isEmpty, "\(check.stdout)\(check.stderr)")
    }

    static func curl(_ url: String) throws -> String {
        let (code, output) = try Subprocess.run("/usr/bin/curl", ["-sf", url])
        guard code == 0 else { throw FixtureError("curl \(url): \(output)") }
        return output
    }
}
