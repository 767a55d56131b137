import CFuzzerDriver
import GateRules

/// The executable's entry (SwiftPM links `main` to it): hand control to libFuzzer's driver.
@_cdecl("RulesFuzzer_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(data, Int(size)) }
}

/// One fuzz input: any bytes, read as a rule file. Nothing may crash or hang, and:
/// - the formatter, when the file parses, must be idempotent and keep the file's meaning
///   (the same kinds of diagnostic; counts may differ, since repeats on one line are merged);
/// - a policy that compiles must decide (and explain) fixed inputs — with claims present,
///   missing and of the wrong type — without trapping, and keep the three-valued semantics'
///   fail-closed promises (docs/rules.md): no allow while a deny applies or is undetermined,
///   no allow resting on an undetermined rule, a drop that is undetermined drops, and the
///   explained decision is the fast path's decision.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let file = SourceFile(name: "fuzz.rules", text: text)
    let (policy, diagnostics) = Policy.compile(files: [file])
    _ = DiagnosticRenderer(files: [file]).render(diagnostics)

    if let formatted = Formatter.format(file).0 {
        let again = SourceFile(name: "fuzz.rules", text: formatted)
        guard let twice = Formatter.format(again).0, twice == formatted else {
            fatalError("the formatter is not idempotent on:\n\(text)\n---\n\(formatted)")
        }
        let (reformatted, reDiagnostics) = Policy.compile(files: [again])
        guard (reformatted == nil) == (policy == nil), Set(reDiagnostics.map(\.id)) == Set(diagnostics.map(\.id)) else {
            fatalError("formatting changed the diagnostics of:\n\(text)\n---\n\(formatted)")
        }
    }

    guard let policy else { return 0 }
    for input in inputs {
        let fast = policy.decide(input)
        let explained = policy.decide(input, explain: true)
        _ = explained.explanation?.render()
        check(fast, explained, text)
    }
    for message in messages {
        let fast = policy.route(message)
        let explained = policy.route(message, explain: true)
        guard fast.dropped == explained.dropped, fast.rules == explained.rules,
            fast.undetermined == explained.undetermined
        else { fatalError("explaining changed the route of:\n\(text)") }
        let drops = explained.explanation?.rules.filter { $0.kind == "drop" }.map(\.rule) ?? []
        let undeterminedDrop = fast.undetermined.contains { drops.contains($0) }
        if undeterminedDrop, !fast.dropped { fatalError("an undetermined drop did not drop:\n\(text)") }
    }
    _ = TestRunner.report(TestRunner.run(policy))
    return 0
}

/// The fail-closed promises of one command decision.
func check(_ fast: Decision, _ explained: Decision, _ text: String) {
    guard fast.effect == explained.effect, fast.rules == explained.rules, fast.undetermined == explained.undetermined
    else { fatalError("explaining changed the decision of:\n\(text)") }
    guard fast.effect == .allow else { return }
    // An allow rests only on allow rules whose condition was true.
    if fast.rules.contains(where: { fast.undetermined.contains($0) }) {
        fatalError("an allow rests on an undetermined rule:\n\(text)")
    }
    if fast.rules.contains(where: { rule in fast.faults.contains { $0.rule == rule } }) {
        fatalError("an allow rests on a failed rule:\n\(text)")
    }
    // No deny was undetermined or failed (either would have denied).
    if !fast.undetermined.isEmpty || !fast.faults.isEmpty {
        let denies = Set(fast.undetermined + fast.faults.map(\.rule)).subtracting(fast.rules)
        if !denies.isEmpty,
            explained.explanation?.rules.contains(where: { $0.kind == "deny" && denies.contains($0.rule) })
                == true
        {
            fatalError("allowed although a deny was undetermined or failed:\n\(text)")
        }
    }
}

let inputs: [CommandInput] = [
    CommandInput(
        command: ["name": "reboot", "timeout": 30],
        token: ["roles": ["Gateway.Operator", "A"], "site": "A", "level": 3, "scp": "a b"],
        device: ["id": "pump-7", "model": "sensor-1", "tags": ["site": "A", "locked": false]],
        gateway: ["tenant": "t1", "site": "A"],
        now: .now(unixSeconds: 1_764_000_000)),
    CommandInput(command: ["name": "config.set"], token: ["roles": "x", "level": "high", "site": .null]),
    CommandInput(command: [:]),
    // Hostile and broken tokens: well-known claims of the wrong type, strings where lists go.
    CommandInput(
        command: ["name": "reboot"],
        token: ["roles": "Gateway.OperatorReadOnly", "tid": 5, "exp": "soon", "scp": ["a"], "site": ["A"]],
        device: ["id": 7, "tags": "locked"], gateway: ["tenant": ["t1"]], now: ["hour": "noon"]),
    CommandInput(command: ["name": "door.unlock", "timeout": "1m"], token: [:], device: [:], gateway: [:]),
    CommandInput(
        command: ["name": "firmware.update"],
        token: ["roles": ["Gateway.Operator", 3, .null], "groups": [:], "level": 4, "mfa": "true", "tid": "t1"],
        device: ["id": "pump-7", "tags": ["site": "A", "locked": "yes"]], gateway: ["tenant": "t1", "site": "A"],
        now: .now(unixSeconds: 1_764_000_000)),
]

let messages: [TelemetryInput] = [
    TelemetryInput(message: [
        "topic": "devices/p/alarms", "size": 300_000, "properties": ["alarm": "true"], "body": ["x": 1],
    ]),
    TelemetryInput(message: .null),
    TelemetryInput(message: ["topic": 5, "size": "big", "properties": ["alarm": true], "body": "x"]),
]
