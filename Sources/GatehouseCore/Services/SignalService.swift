import ServiceLifecycle
import UnixSignals

/// Runs `handler` for every delivery of a signal (SIGHUP: reload) until the group shuts down.
/// A signal that arrives while the handler runs is handled once more after it.
///
/// The signals are trapped by whoever makes the `UnixSignalsSequence`, before anything else
/// starts: a SIGHUP that arrived between "started" and this service's first wait would
/// otherwise take its default action and end the process.
public struct SignalService: Service, CustomStringConvertible {
    let signals: UnixSignalsSequence
    let handler: @Sendable () async -> Void

    public init(_ signals: UnixSignalsSequence, handler: @escaping @Sendable () async -> Void) {
        self.signals = signals
        self.handler = handler
    }

    public var description: String { "signals" }

    public func run() async throws {
        for await _ in signals.cancelOnGracefulShutdown() {
            await handler()
        }
    }
}
