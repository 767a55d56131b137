import Synchronization

/// The daemon's handle on the live policy: readers take the current policy without ever
/// blocking, and a reload compiles the new rule set off the hot path and swaps it in
/// atomically — or, if it does not check, keeps the old one and returns the diagnostics.
///
/// How readers avoid locks (a two-slot "left-right" scheme): the policy lives in one of two
/// slots; `active` says which. A reader announces itself on the active slot's counter,
/// re-reads `active` to be sure it did not change meanwhile (else it retries), copies the
/// policy reference, and leaves. A writer (one at a time, under `writerLock`) fills the
/// *inactive* slot only once that slot's counter is zero, then flips `active`. So no reader
/// ever reads a slot while it is written, and a reader's work is a few atomic operations
/// whatever the writer does.
public final class PolicyHandle: Sendable {
    private let active = Atomic<Int>(0)
    private let readers0 = Atomic<Int>(0)
    private let readers1 = Atomic<Int>(0)
    private let slots: Slots
    private let writerLock = Mutex<Int>(0)  // guards the writers' side; counts swaps

    /// The two slots. `@unchecked Sendable` is true by the protocol above: a slot is written
    /// only by the writer holding `writerLock`, only while it is inactive and its reader count
    /// is zero; readers read only the active slot while counted on it.
    private final class Slots: @unchecked Sendable {
        var slot0: Policy
        var slot1: Policy
        init(_ policy: Policy) {
            slot0 = policy
            slot1 = policy
        }
    }

    public init(_ policy: Policy) {
        slots = Slots(policy)
    }

    /// Compiles `files` and, if they check, returns a handle on the result.
    public static func load(files: [SourceFile], options: CheckOptions = CheckOptions()) -> (
        PolicyHandle?, [Diagnostic]
    ) {
        let (policy, diagnostics) = Policy.compile(files: files, options: options)
        return (policy.map(PolicyHandle.init), diagnostics)
    }

    /// The live policy. Lock-free; safe from any thread.
    public var current: Policy {
        while true {
            let index = active.load(ordering: .sequentiallyConsistent)
            count(index, by: 1)
            if active.load(ordering: .sequentiallyConsistent) == index {
                let policy = index == 0 ? slots.slot0 : slots.slot1
                count(index, by: -1)
                return policy
            }
            count(index, by: -1)
        }
    }

    private func count(_ slot: Int, by delta: Int) {
        if slot == 0 {
            readers0.add(delta, ordering: .sequentiallyConsistent)
        } else {
            readers1.add(delta, ordering: .sequentiallyConsistent)
        }
    }

    private func readerCount(_ slot: Int) -> Int {
        slot == 0 ? readers0.load(ordering: .sequentiallyConsistent) : readers1.load(ordering: .sequentiallyConsistent)
    }

    /// How many times a new policy has been swapped in.
    public var generation: Int { writerLock.withLock { $0 } }

    public func decide(_ input: CommandInput) -> Decision { current.decide(input) }
    public func route(_ input: TelemetryInput) -> RouteDecision { current.route(input) }

    /// Swaps in an already compiled policy.
    public func replace(with policy: Policy) {
        writerLock.withLock { swaps in
            let next = 1 - active.load(ordering: .sequentiallyConsistent)
            // Readers that saw `next` as active before the last swap are leaving; wait them out.
            while readerCount(next) != 0 {}
            if next == 0 { slots.slot0 = policy } else { slots.slot1 = policy }
            active.store(next, ordering: .sequentiallyConsistent)
            swaps += 1
        }
    }

    /// The result of a reload: whether the new rules went live, and everything the checker said.
    public struct ReloadResult: Sendable {
        public let accepted: Bool
        public let diagnostics: [Diagnostic]
        public let files: [SourceFile]

        /// The diagnostics rendered for a log or a reply.
        public var rendered: String { DiagnosticRenderer(files: files).render(diagnostics) }
    }

    /// Compiles `files` on the caller's thread (never under a lock readers need) and swaps the
    /// result in if it checks; otherwise the current policy stays.
    @discardableResult
    public func reload(files: [SourceFile], options: CheckOptions? = nil) -> ReloadResult {
        let (policy, diagnostics) = Policy.compile(files: files, options: options ?? current.options)
        guard let policy else { return ReloadResult(accepted: false, diagnostics: diagnostics, files: files) }
        replace(with: policy)
        return ReloadResult(accepted: true, diagnostics: diagnostics, files: files)
    }
}
