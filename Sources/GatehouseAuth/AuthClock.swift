import FoundationEssentials

/// Wall-clock time for `exp`/`nbf` and the key-refresh schedule, injected so tests set it.
/// (Swift's `Clock` measures durations between instants; a JWT needs Unix time.)
public struct AuthClock: Sendable {
    public let now: @Sendable () -> Date

    public init(now: @escaping @Sendable () -> Date) { self.now = now }

    public static let system = AuthClock { Date() }
}
