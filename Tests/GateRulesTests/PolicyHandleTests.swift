import Foundation
import Testing

@testable import GateRules

@Suite struct PolicyHandleTests {
    static func files(_ command: String) -> [SourceFile] {
        [SourceFile(name: "h.rules", text: "allow command \"\(command)\"")]
    }

    @Test func reloadSwapsAndRefusesBrokenRules() {
        let (handle, _) = PolicyHandle.load(files: Self.files("a"))
        let live = handle!
        #expect(live.decide(CommandInput(command: ["name": "a"])).effect == .allow)

        let accepted = live.reload(files: Self.files("b"))
        #expect(accepted.accepted)
        #expect(live.decide(CommandInput(command: ["name": "b"])).effect == .allow)
        #expect(live.decide(CommandInput(command: ["name": "a"])).effect == .deny)

        let refused = live.reload(files: [SourceFile(name: "h.rules", text: "allow command \"c\" wen true")])
        #expect(!refused.accepted)
        #expect(refused.rendered.contains("error[rules.parse.expected-token]"))
        #expect(live.decide(CommandInput(command: ["name": "b"])).effect == .allow, "the old policy stays")
        #expect(live.generation == 1)
    }

    /// Readers on several threads never see a torn or missing policy while a writer swaps.
    @Test func readersDuringSwaps() async {
        let live = PolicyHandle.load(files: Self.files("x0")).0!
        let policies = (1...50).map { Policy.compile(files: Self.files("x\($0)")).0! }
        await withTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    var allowed = 0
                    for i in 0..<20_000 {
                        let policy = live.current
                        // Exactly one of the commands is allowed by whichever policy is live.
                        if policy.decide(CommandInput(command: ["name": .string("x\(i % 51)")])).effect == .allow {
                            allowed += 1
                        }
                    }
                    return allowed
                }
            }
            group.addTask {
                for policy in policies { live.replace(with: policy) }
                return 0
            }
            for await _ in group {}
        }
        #expect(live.generation == 50)
        #expect(live.decide(CommandInput(command: ["name": "x50"])).effect == .allow)
    }
}
