import Testing

@testable import GateRules

/// What the daemon reads of a policy to route telemetry: times to live, the rule behind each
/// route, the inputs the rules read, and each rule's effect.
@Suite("Telemetry routing for the daemon")
struct TelemetryRoutingTests {
    static func policy(_ text: String, destinations: Set<String>? = nil) -> Policy {
        let (policy, diagnostics) = Policy.compile(
            files: [SourceFile(name: "t.rules", text: text)], options: CheckOptions(destinations: destinations))
        #expect(policy != nil, "\(diagnostics)")
        return policy!
    }

    @Test("each route names the rule that gave it its priority and time to live")
    func origins() {
        let policy = Self.policy(
            """
            route telemetry to upstream ttl 1h
            route telemetry as "alarms" when message.properties.alarm == "true" to upstream priority high ttl 5m
            route telemetry as "archive" to archive priority low
            """)
        let alarm = policy.route(TelemetryInput(message: ["properties": ["alarm": "true"]]))
        #expect(
            alarm.routes == [
                Route(destination: "upstream", priority: .high, ttl: .seconds(300)),
                Route(destination: "archive", priority: .low),
            ])
        #expect(alarm.origins.map(\.name) == ["alarms", "archive"])
        let plain = policy.route(TelemetryInput(message: ["properties": [:]]))
        #expect(plain.routes.first == Route(destination: "upstream", priority: .normal, ttl: .seconds(3600)))
        #expect(plain.origins.map(\.name) == ["route to upstream", "archive"])
        #expect(plain.routes.first?.description == "upstream (priority normal, ttl 1h)")
        let dropped = Self.policy("drop telemetry\nroute telemetry to upstream").route(TelemetryInput(message: [:]))
        #expect(dropped.dropped && dropped.origins.isEmpty)
    }

    @Test("routing into a reused scratch decides as route(_:) does, for every telemetry case of the corpus")
    func scratchAgreesWithDecision() throws {
        var scratch = RouteScratch()
        var compared = 0
        for corpusCase in CorpusCase.all() {
            let files = try corpusCase.files()
            let expectations = Expectations(files.map(\.text).joined(separator: "\n"))
            let options = CheckOptions(budget: expectations.budget ?? CheckOptions().budget)
            guard let policy = Policy.compile(files: files, options: options).0 else { continue }
            let names = policy.telemetryRules.map(\.rule)
            for input in expectations.inputs {
                guard (try? Value(json: input.json))?["message"] != nil,
                    let telemetry = try? TelemetryInput(json: input.json)
                else { continue }
                let decision = policy.route(telemetry)
                policy.route(telemetry, into: &scratch)  // the same scratch, case after case
                #expect(scratch.routes == decision.routes, "\(corpusCase)")
                #expect(scratch.origins.map { names[$0] } == decision.origins, "\(corpusCase)")
                #expect(scratch.deciding.map { names[$0] } == decision.rules, "\(corpusCase)")
                #expect(scratch.undetermined.map { names[$0] } == decision.undetermined, "\(corpusCase)")
                #expect(scratch.faults.map { names[$0.rule] } == decision.faults.map(\.rule), "\(corpusCase)")
                compared += 1
            }
        }
        #expect(compared >= 20)
    }

    @Test("the inputs a rule set reads, through lets too")
    func reads() {
        #expect(Self.policy("route telemetry to upstream").telemetryReads == [])
        #expect(
            Self.policy(
                """
                let alarm = message.properties.alarm == "true"
                route telemetry when alarm or message.topic matches "x/*" to upstream
                drop telemetry when message.size > 1 MiB
                """
            ).telemetryReads == [.properties, .topic, .size])
        #expect(
            Self.policy("route telemetry when message.body.t > 3 and device.tags.site == gateway.site to upstream")
                .telemetryReads == [.body, .device, .gateway])
        #expect(Self.policy("route telemetry when now.hour < 7 to upstream").telemetryReads == [.now])
        #expect(Self.policy("route telemetry when has(message.properties) to upstream").telemetryReads == .properties)
        #expect(
            Self.policy("route telemetry when message.content_type == \"application/json\" to upstream")
                .telemetryReads == [.contentType])
        // Command rules do not count: they never see a message.
        #expect(Self.policy("allow command \"x\" when device.tags.a == 1").telemetryReads == [])
    }

    @Test("each telemetry rule's effect, for counting")
    func ruleInfo() {
        let policy = Self.policy(
            """
            route telemetry to upstream, archive priority high ttl 2m
            drop telemetry as "big" when message.size > 1 MiB
            """, destinations: ["upstream", "archive"])
        let rules = policy.telemetryRules
        #expect(rules.map(\.rule.name) == ["route to upstream, archive", "big"])
        #expect(rules.map(\.drops) == [false, true])
        #expect(rules[0].routes.map(\.destination) == ["upstream", "archive"])
        #expect(rules[0].routes.allSatisfy { $0.ttl == .seconds(120) && $0.priority == .high })
        #expect(rules[1].routes.isEmpty)
    }

    @Test("tests compare a ttl only where they give one")
    func testsCompareTTL() {
        let policy = Self.policy(
            """
            route telemetry as "a" to upstream priority high ttl 10m
            test "stated and right" {
              message { size: 1 }
              expect route to upstream priority high ttl 10m
            }
            test "not stated" {
              message { size: 1 }
              expect route to upstream priority high
            }
            test "stated and wrong" {
              message { size: 1 }
              expect route to upstream priority high ttl 5m
            }
            """)
        let outcomes = TestRunner.run(policy)
        #expect(outcomes.map(\.passed) == [true, true, false])
        #expect(outcomes[2].expected == "route to upstream (priority high, ttl 5m)")
        #expect(outcomes[2].actual.hasPrefix("route to upstream (priority high, ttl 10m) by"))
    }

    @Test("the formatter writes priority before ttl, and keeps the duration as written")
    func formats() {
        let source = SourceFile(name: "f.rules", text: "route telemetry to upstream ttl  90s   priority low\n")
        let (formatted, diagnostics) = Formatter.format(source)
        #expect(diagnostics.isEmpty)
        #expect(formatted == "route telemetry to upstream priority low ttl 90s\n")
    }

    @Test("durations print in the largest exact unit")
    func durations() {
        #expect(formatDuration(.seconds(600)) == "10m")
        #expect(formatDuration(.seconds(90)) == "90s")
        #expect(formatDuration(.milliseconds(1500)) == "1500ms")
        #expect(formatDuration(.seconds(7200)) == "2h")
        #expect(formatDuration(.seconds(86400 * 3)) == "3d")
    }
}
