/// Which connection carries which device identity: at most `capacity` identities a connection
/// (IoT Hub takes at most 999 CBS tokens on one connection; the C# SDK stops at 995:
/// docs/protocols.md §3.3). A new identity goes to the lowest-numbered connection with room, so
/// a site fills one connection before it opens the next, and a slot a closed identity left is
/// reused. Pure: the I/O thread owns it.
struct ConnectionPool: Sendable {
    static let defaultCapacity = 995

    let capacity: Int
    private(set) var slots: [Set<String>] = []
    private var slotOf: [String: Int] = [:]

    init(capacity: Int = Self.defaultCapacity) {
        precondition(capacity >= 1)
        self.capacity = capacity
    }

    /// The connection of `device`, assigning one if it has none. `opened` is true when the
    /// connection did not exist before (the caller starts it).
    mutating func assign(_ device: String) -> (index: Int, opened: Bool) {
        if let index = slotOf[device] { return (index, false) }
        let index = slots.firstIndex { $0.count < capacity } ?? slots.count
        let opened = index == slots.count
        if opened { slots.append([]) }
        slots[index].insert(device)
        slotOf[device] = index
        return (index, opened)
    }

    /// Removes `device`; returns its connection's index, and whether that connection is now empty.
    @discardableResult
    mutating func release(_ device: String) -> (index: Int, emptied: Bool)? {
        guard let index = slotOf.removeValue(forKey: device) else { return nil }
        slots[index].remove(device)
        return (index, slots[index].isEmpty)
    }

    func connection(of device: String) -> Int? { slotOf[device] }

    func devices(on index: Int) -> Set<String> { index < slots.count ? slots[index] : [] }

    var deviceCount: Int { slotOf.count }
}

/// Reconnect delays that double from `initial` up to `maximum`, each drawn at random from the
/// upper half of the current step ("equal jitter"), so a thousand identities refused at once, or
/// gateways that lost the hub together, do not come back in lockstep.
struct Backoff: Sendable {
    let initial: Duration
    let maximum: Duration
    private var step: Duration

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
        self.step = initial
    }

    /// The next delay; `unit` is a random number in 0..<1 (injected by tests).
    mutating func next(unit: Double = Double.random(in: 0..<1)) -> Duration {
        let current = step
        step = min(step * 2, maximum)
        return current / 2 + current * (0.5 * unit)
    }

    mutating func reset() { step = initial }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
