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
/// - a policy that compiles must decide (and explain) fixed inputs without trapping.
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
        _ = policy.decide(input)
        _ = policy.decide(input, explain: true).explanation?.render()
    }
    for message in messages { _ = policy.route(message, explain: true) }
    _ = TestRunner.report(TestRunner.run(policy))
    return 0
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
]

let messages: [TelemetryInput] = [
    TelemetryInput(message: [
        "topic": "devices/p/alarms", "size": 300_000, "properties": ["alarm": "true"], "body": ["x": 1],
    ]),
    TelemetryInput(message: .null),
]
