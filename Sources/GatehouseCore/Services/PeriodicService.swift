import ServiceLifecycle

/// Runs `body` every `interval` on `clock` until the service group shuts down: audit pruning,
/// outbox expiry, the status heartbeat, the JWKS refresh, malloc trimming
/// (docs/architecture.md, "Services"). The clock is injected so that a test advances time
/// instead of sleeping (`ManualClock` in the test support).
public struct PeriodicService<C: Clock>: Service, CustomStringConvertible where C.Duration == Duration {
    public let name: String
    let interval: Duration
    let clock: C
    let atStart: Bool
    let body: @Sendable () async -> Void

    /// `atStart`: run once at once, then every interval; otherwise the first run is after one.
    public init(
        _ name: String, every interval: Duration, clock: C, atStart: Bool = false,
        body: @escaping @Sendable () async -> Void
    ) {
        self.name = name
        self.interval = interval
        self.clock = clock
        self.atStart = atStart
        self.body = body
    }

    public var description: String { name }

    public func run() async throws {
        // A graceful shutdown cancels the wait; a run of `body` under way finishes first only if
        // it does not itself wait on the clock.
        try? await cancelWhenGracefulShutdown { [self] in
            if atStart { await body() }
            while !Task.isCancelled {
                try await clock.sleep(for: interval)
                await body()
            }
        }
    }
}

/// Waits for the group's graceful shutdown, then runs `stop`: the lifecycle of a part that runs
/// on threads of its own (the relay's dispatcher, the audit writer, a plugin instance). Its
/// place in the group's list says when it stops: the group shuts services down in reverse order.
public struct ShutdownStep: Service, CustomStringConvertible {
    public let name: String
    let stop: @Sendable () -> Void

    public init(_ name: String, stop: @escaping @Sendable () -> Void) {
        self.name = name
        self.stop = stop
    }

    public var description: String { name }

    public func run() async throws {
        // Cancellation (the group failing) stops the part just as a graceful shutdown does.
        try? await gracefulShutdown()
        stop()
    }
}
