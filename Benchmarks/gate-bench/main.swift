// gate-bench: time from a command's arrival to its decision (JWT verification, replay check,
// registry lookup, rules) and commands per second, on the real CommandGate with the example
// site policy and an ES256 token minted by PyJWT. Run through Benchmarks/gate-bench/run.sh,
// which pins it to one core.
import Foundation
import GateRules
import GatehouseAuth
import GatehouseCore
import GatehousePluginKit
import GatehouseStore
import Logging

struct Options {
    var jwks = ""
    var token = ""
    var rules = ""
    var state = ""
    var count = 20_000
    var inFlight = 64
    var tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

    init() {
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let argument = arguments.next() {
            let value = arguments.next() ?? ""
            switch argument {
            case "--jwks": jwks = value
            case "--token": token = value
            case "--rules": rules = value
            case "--state": state = value
            case "--count": count = Int(value) ?? count
            case "--in-flight": inFlight = Int(value) ?? inFlight
            default: fatalError("unknown option \(argument)")
            }
        }
    }
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.down)))]
}

func micros(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
}

@main
struct GateBench {
    static func main() async throws {
        let options = Options()
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let cache = try await JWKSCache(sources: [FileJWKSSource(path: options.jwks)], logger: logger)
        await cache.refresh()
        let verifier = try await TokenVerifier(
            configuration: .init(audiences: ["api://gatehouse"], tenants: [options.tenant]), keys: cache,
            logger: logger)
        let (policy, diagnostics, _) = Policy.compile(directory: options.rules)
        guard let policy else { fatalError("rules do not check: \(diagnostics)") }
        let store = try StateStore(path: options.state, durability: .full)
        try store.setDeviceMetadata("pump-7", DeviceMetadata(model: "pump-3000", tags: ["site": .string("A")]), atMS: 0)
        var gatewaySettings = GatewayConfig.Gateway()
        gatewaySettings.tenant = options.tenant
        let gate = CommandGate(
            verifier: verifier, rules: PolicyHandle(policy),
            settings: GatewayConfig.Auth(audiences: ["api://gatehouse"]),
            gateway: gatewaySettings, store: store, logger: logger, replayCapacity: 10 * options.count)
        let commands = CommandPath(store: store, logger: logger)

        let token = options.token
        @Sendable func command(_ id: String) -> PluginCommand {
            let payload = #"{"authorization":"Bearer \#(token)","command_id":"\#(id)","delay":5}"#
            return PluginCommand(kind: .directMethod, deviceID: "pump-7", name: "reboot", payload: Array(payload.utf8))
        }
        // Warm up (and check that the decision is the expected allow).
        let first = await gate.decide(command("warm-0"))
        guard first.effect == .allow else { fatalError("expected allow, got: \(first.reason)") }
        for index in 1..<500 { _ = await gate.decide(command("warm-\(index)")) }

        // 1. Arrival → decision, one command at a time.
        var latencies: [Double] = []
        latencies.reserveCapacity(options.count)
        let clock = ContinuousClock()
        let sequentialStart = clock.now
        for index in 0..<options.count {
            let cmd = command("seq-\(index)")
            let started = clock.now
            let outcome = await gate.decide(cmd)
            latencies.append(micros(clock.now - started))
            precondition(outcome.effect == .allow)
        }
        let sequentialSeconds = micros(clock.now - sequentialStart) / 1e6
        latencies.sort()

        // 2. Throughput with many commands in flight.
        func concurrent(_ label: String, _ work: @escaping @Sendable (Int) async -> Bool) async -> Double {
            let start = clock.now
            let ok = await withTaskGroup(of: Bool.self) { group -> Int in
                var next = 0
                var ok = 0
                for _ in 0..<options.inFlight where next < options.count {
                    let index = next
                    group.addTask { await work(index) }
                    next += 1
                }
                while let result = await group.next() {
                    if result { ok += 1 }
                    if next < options.count {
                        let index = next
                        group.addTask { await work(index) }
                        next += 1
                    }
                }
                return ok
            }
            precondition(ok == options.count, "\(label): \(options.count - ok) commands were not allowed")
            return Double(options.count) / (micros(clock.now - start) / 1e6)
        }
        let decisionsPerSecond = await concurrent("decide") { index in
            await gate.decide(command("par-\(index)")).effect == .allow
        }
        // 3. The same with the decision made durable in the audit log (group commit, fsync).
        var auditLatencies: [Double] = []
        for index in 0..<min(500, options.count) {
            let started = clock.now
            _ = await commands.decideAndAudit(command("aud-seq-\(index)"), gate: gate)
            auditLatencies.append(micros(clock.now - started))
        }
        auditLatencies.sort()
        let auditedPerSecond = await concurrent("decide+audit") { index in
            await commands.decideAndAudit(command("aud-\(index)"), gate: gate)?.effect == .allow
        }

        print("gate-bench: \(options.count) direct methods, ES256 token, rules/examples/site, one core")
        print(
            String(
                format:
                    "  arrival -> decision (verify + replay + registry + rules): p50 %.1f µs  p99 %.1f µs  p99.9 %.1f µs  max %.1f µs",
                percentile(latencies, 0.5), percentile(latencies, 0.99), percentile(latencies, 0.999),
                latencies.last ?? 0))
        print(String(format: "  sequential: %.0f decisions/s", Double(options.count) / sequentialSeconds))
        print(String(format: "  %d in flight: %.0f decisions/s", options.inFlight, decisionsPerSecond))
        print(
            String(
                format: "  decision + durable audit row, one at a time: p50 %.1f µs  p99 %.1f µs",
                percentile(auditLatencies, 0.5), percentile(auditLatencies, 0.99)))
        print(
            String(
                format: "  decision + durable audit row (group commit), %d in flight: %.0f commands/s",
                options.inFlight, auditedPerSecond))
    }
}
