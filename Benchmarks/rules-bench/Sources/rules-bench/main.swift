import CHeap
import GateRules

#if canImport(Glibc)
    import Glibc
#endif

/// Benchmarks the rule language, one core, release build. Prints `key=value` lines that
/// run.sh joins with the CEL and Rego figures into one table.
///
/// (a) the two-clause rule `token.role == "operator" and "reboot" in allowed`, where `allowed`
///     is a claim list (and, second, a constant list the compiler folds away);
/// (b) a 50-rule site policy over 10,000 varied inputs, each decision timed alone (p50/p99);
/// (c) checking and compiling 1,000 rules, and the memory the compiled policy holds.

@inline(never) func nanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Keeps results alive so the optimiser cannot drop the work.
@inline(never) func consume(_ value: Int) {
    if value == -42 { print("") }
}

struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func compile(_ text: String) -> Policy {
    let (policy, diagnostics) = Policy.compile(files: [SourceFile(name: "bench.rules", text: text)])
    guard let policy else {
        print(DiagnosticRenderer(files: [SourceFile(name: "bench.rules", text: text)]).render(diagnostics))
        fatalError("the benchmark policy does not check")
    }
    return policy
}

func report(_ key: String, _ value: String) { print("\(key)=\(value)") }

// MARK: (a) the two-clause rule

func nsPerDecision(_ policy: Policy, _ input: CommandInput, iterations: Int) -> Double {
    var allowed = 0
    for _ in 0..<(iterations / 10) where policy.decide(input).effect == .allow { allowed += 1 }  // warm up
    let start = nanoseconds()
    for _ in 0..<iterations where policy.decide(input).effect == .allow { allowed += 1 }
    let elapsed = nanoseconds() - start
    consume(allowed)
    return Double(elapsed) / Double(iterations)
}

let twoClauseInput = CommandInput(
    command: ["name": "reboot"],
    token: ["role": "operator", "allowed": ["restart", "reboot", "firmware.update"], "sub": "alice"])
let dynamicList = compile(
    """
    let allowed = token.allowed
    allow command "reboot" when token.role == "operator" and "reboot" in allowed
    """)
let constantList = compile(
    """
    let allowed = ["restart", "reboot", "firmware.update"]
    allow command "reboot" when token.role == "operator" and "reboot" in allowed
    """)
precondition(dynamicList.decide(twoClauseInput).effect == .allow)
let iterations = CommandLine.arguments.contains("--quick") ? 20_000 : 2_000_000
let runs = (0..<5).map { _ in nsPerDecision(dynamicList, twoClauseInput, iterations: iterations) }.sorted()
report("a_ns", String(format2(runs[2])))
let constantRuns = (0..<5).map { _ in nsPerDecision(constantList, twoClauseInput, iterations: iterations) }.sorted()
report("a_const_ns", format2(constantRuns[2]))
if CommandLine.arguments.contains("--only-a") { exit(0) }

func format2(_ x: Double) -> String {
    let scaled = (x * 10).rounded() / 10
    return "\(scaled)"
}

// MARK: (b) a 50-rule site policy

/// A site policy in the shape integrators write: shared role conditions, per-command allows
/// with tenant and site checks, after-hours denies, globbed families, a lock switch.
func sitePolicy(rules: Int, prefix: String = "") -> String {
    var out = """
        let \(prefix)operator = "Gateway.Operator" in token.roles
        let \(prefix)maintainer = "Gateway.Maintainer" in token.roles
        let \(prefix)viewer = "Gateway.Viewer" in token.roles
        let \(prefix)same_tenant = token.tid == gateway.tenant
        let \(prefix)same_site = has(token.site) and token.site == device.tags.site
        let \(prefix)after_hours = now.hour < 7 or now.hour >= 19 or now.weekday in ["sat", "sun"]

        """
    for i in 0..<rules {
        let c = "\(prefix)c\(i)"
        switch i % 10 {
        case 0, 1, 2:
            out +=
                "allow command \"\(c).start\", \"\(c).stop\" when \(prefix)operator and \(prefix)same_tenant and \(prefix)same_site\n"
        case 3:
            out +=
                "allow command \"\(c).read\" when (\(prefix)viewer or \(prefix)operator or \(prefix)maintainer) and \(prefix)same_tenant\n"
        case 4:
            out +=
                "allow command \"\(c).config.*\" when \(prefix)maintainer and \(prefix)same_tenant and \"Device.Write\" in split(token.scp, \" \")\n"
        case 5:
            out +=
                "deny command \"\(c).start\", \"\(c).open\" as \"\(c) after hours\" when \(prefix)after_hours because \"not after hours\"\n"
        case 6:
            out +=
                "allow command \"\(c).open\" when any(r in token.roles: r startswith \"Site.\") and device.model startswith \"door-\"\n"
        case 7:
            out +=
                "allow command \"\(c).calibrate\" when \(prefix)maintainer and device.model matches \"sensor-*\" and now.hour >= 8\n"
        case 8:
            out += "deny command \"\(c).*\" as \"\(c) locked\" when device.tags.locked == true because \"locked\"\n"
        default:
            out +=
                "allow command \"\(c).update\" when \(prefix)operator and token.level >= 3 and not (device.tags.maintenance == true)\n"
        }
    }
    return out
}

let site = compile(sitePolicy(rules: 50))
precondition(site.commandRuleCount == 50)
func pick<T>(_ items: [T], _ random: inout SeededRandom) -> T { items[Int(random.next() % UInt64(items.count))] }
let verbs = ["start", "stop", "read", "config.set", "open", "calibrate", "update", "unknown"]
let roleSets: [[Value]] = [
    ["Gateway.Operator"], ["Gateway.Viewer"], ["Gateway.Maintainer"], ["Gateway.Operator", "Site.A"],
    ["Viewer", "Reader", "Site.B", "Gateway.Maintainer"], [],
]
func makeInputs() -> [CommandInput] {
    var random = SeededRandom(state: 7)
    return (0..<10_000).map { _ in
        var token: [String: Value] = [
            "roles": .list(pick(roleSets, &random)), "tid": .string(pick(["t1", "t1", "t2"], &random)), "sub": "user",
            "scp": .string(pick(["Device.Read", "Device.Read Device.Write"], &random)),
            "level": .number(Double(random.next() % 5)),
        ]
        if random.next() % 4 != 0 { token["site"] = .string(pick(["A", "B"], &random)) }
        return CommandInput(
            command: ["name": .string("c\(random.next() % 55).\(pick(verbs, &random))")], token: .map(token),
            device: [
                "id": "d1", "model": .string(pick(["door-3", "sensor-9", "pump-1"], &random)),
                "tags": ["site": .string(pick(["A", "B"], &random)), "locked": .bool(random.next() % 20 == 0)],
            ],
            gateway: ["tenant": "t1", "site": "A"],
            now: ["hour": .number(Double(random.next() % 24)), "weekday": .string(pick(["mon", "sat"], &random))])
    }
}
let inputs = makeInputs()
let outcomes = inputs.map { site.decide($0).effect }
report("b_allowed_share", format2(Double(outcomes.filter { $0 == .allow }.count) / 100))

var timerOverhead: [UInt64] = (0..<10_000).map { _ in
    let t0 = nanoseconds()
    return nanoseconds() - t0
}
timerOverhead.sort()
let overhead = timerOverhead[timerOverhead.count / 2]
var samples: [UInt64] = []
samples.reserveCapacity(inputs.count * 20)
var sink = 0
for _ in 0..<2 { for input in inputs { sink &+= site.decide(input).rules.count } }  // warm up
for _ in 0..<20 {
    for input in inputs {
        let t0 = nanoseconds()
        let decision = site.decide(input)
        let t1 = nanoseconds()
        sink &+= decision.effect == .allow ? 1 : 0
        samples.append(t1 - t0 > overhead ? t1 - t0 - overhead : 0)
    }
}
consume(sink)
samples.sort()
func percentile(_ sorted: [UInt64], _ p: Double) -> UInt64 {
    sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}
report("b_p50_ns", "\(percentile(samples, 0.50))")
report("b_p99_ns", "\(percentile(samples, 0.99))")
report("b_p999_ns", "\(percentile(samples, 0.999))")
report("b_timer_overhead_ns", "\(overhead)")
let throughputStart = nanoseconds()
for _ in 0..<20 { for input in inputs { sink &+= site.decide(input).effect == .allow ? 1 : 0 } }
report("b_mean_ns", format2(Double(nanoseconds() - throughputStart) / Double(20 * inputs.count)))
consume(sink)

// MARK: (c) compiling 1,000 rules, and what the result holds

let thousandText = (0..<20).map { sitePolicy(rules: 50, prefix: "s\($0)_") }.joined(separator: "\n")
let thousandFile = [SourceFile(name: "thousand.rules", text: thousandText)]
var compileTimes: [Double] = []
for _ in 0..<7 {
    let t0 = nanoseconds()
    let (policy, _) = Policy.compile(files: thousandFile)
    compileTimes.append(Double(nanoseconds() - t0) / 1e6)
    precondition(policy?.commandRuleCount == 1000)
}
compileTimes.sort()
report("c_rules", "1000")
report("c_source_bytes", "\(thousandText.utf8.count)")
report("c_compile_ms", format2(compileTimes[3]))

let before = heap_bytes_in_use()
let (kept, _) = Policy.compile(files: thousandFile)
let after = heap_bytes_in_use()
report("c_memory_bytes", "\(after - before)")
consume(kept?.commandRuleCount ?? 0)
