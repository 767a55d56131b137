import ServiceLifecycle
import UnixSignals

/// Runs `handler` for every delivery of `signal` (SIGHUP: reload) until the group shuts down.
/// A signal that arrives while the handler runs is handled once more after it.
public struct SignalService: Service, CustomStringConvertible {
    let signal: UnixSignal
    let handler: @Sendable () async -> Void

    public init(signal: UnixSignal, handler: @escaping @Sendable () async -> Void) {
        self.signal = signal
        self.handler = handler
    }

    public var description: String { "signal \(signal)" }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: signal)
        for await _ in signals.cancelOnGracefulShutdown() {
            await handler()
        }
    }
}
