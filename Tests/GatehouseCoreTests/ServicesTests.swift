import GatehouseCore
import GatehouseTestSupport
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// The daemon's long-running parts are services in one `ServiceGroup`; periodic ones take their
/// clock as a parameter, so these tests move time instead of sleeping.
@Suite("Services: periodic work on an injected clock, the stop order")
struct ServicesTests {
    final class Count: Sendable {
        private let value = Atomic<Int>(0)
        func add() { value.add(1, ordering: .relaxed) }
        var current: Int { value.load(ordering: .relaxed) }
    }

    @Test("a periodic service runs at start, then once each time its clock passes the interval")
    func periodic() async throws {
        let clock = ManualClock()
        let runs = Count()
        let service = PeriodicService("tick", every: .seconds(60), clock: clock, atStart: true) { runs.add() }
        let group = ServiceGroup(configuration: .init(services: [service], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            await clock.waitForSleepers(1)
            #expect(runs.current == 1)
            clock.advance(by: .seconds(59))
            #expect(clock.sleeping == 1)  // not yet due: still asleep
            #expect(runs.current == 1)
            clock.advance(by: .seconds(1))
            await clock.waitForSleepers(1)
            #expect(runs.current == 2)
            // A long pause (a suspended VM) runs the work once, not once per missed interval.
            clock.advance(by: .seconds(600))
            await clock.waitForSleepers(1)
            #expect(runs.current == 3)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(runs.current == 3)
    }

    @Test("the group stops its shutdown steps in reverse order, one after the other")
    func stopOrder() async throws {
        let order = Mutex<[String]>([])
        let names = ["audit writer", "hub transport", "relay", "site transport"]
        let steps = names.map { name in
            ShutdownStep(name) { order.withLock { $0.append(name) } }
        }
        let group = ServiceGroup(configuration: .init(services: steps, logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            await Task.yield()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(order.withLock { $0 } == names.reversed())
    }
}
