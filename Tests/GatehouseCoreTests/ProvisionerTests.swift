import Dispatch
import Foundation
import GatehouseStore
import GatehouseTestSupport
import Logging
import Synchronization
import Testing

@testable import GatehouseCore
@testable import GatehouseProvisioning

/// The provisioner's bounded concurrency, with a stand-in for DPS that holds every registration
/// until the test lets it go.
@Suite("Provisioner", .serialized)
struct ProvisionerTests {
    static func threads() -> Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("Threads:") }
            .flatMap { Int($0.split(separator: "\t").last?.trimmingCharacters(in: .whitespaces) ?? "") } ?? 0
    }

    @Test(
        "500 devices waiting for DPS hold no thread each: `concurrency` registrations run at once, each device once",
        arguments: [4, 32])
    func boundedWithoutParkedThreads(concurrency: Int) throws {
        let dir = TempDir("gatehouse-provisioner")
        let store = try StateStore(path: dir.file("state.db"), durability: .normal)
        var settings = GatewayConfig.Provisioning(idScope: "0ne00TEST", allow: ["dev-*"])
        settings.concurrency = concurrency
        let release = DispatchSemaphore(value: 0)
        let running = Atomic<Int>(0)
        let peak = Atomic<Int>(0)
        let registered = Mutex<[String]>([])
        let provisioner = try Provisioner(
            settings: settings, signer: NoSigner(), store: store,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        ) { id, _, _ throws(ProvisioningError) in
            let now = running.add(1, ordering: .sequentiallyConsistent).newValue
            _ = peak.max(now, ordering: .sequentiallyConsistent)
            release.wait()
            running.subtract(1, ordering: .sequentiallyConsistent)
            registered.withLock { $0.append(id) }
            return DPSAssignment(assignedHub: "hub", deviceID: id)
        }
        let before = Self.threads()
        let ready = DispatchSemaphore(value: 0)
        let devices = (0..<500).map { String(format: "dev-%03d", $0) }
        for device in devices { provisioner.ensure(device) { ready.signal() } }
        #expect(waitUntil(timeout: .seconds(10)) { running.load(ordering: .sequentiallyConsistent) == concurrency })
        Thread.sleep(forTimeInterval: 0.5)
        // The waiting registrations are queued work, not threads parked on a semaphore.
        let during = Self.threads()
        print(
            "provisioner test, concurrency \(concurrency): threads before \(before), while the rest wait \(during), running \(running.load(ordering: .sequentiallyConsistent))"
        )
        #expect(
            during - before <= concurrency + 8,
            "\(during - before) more threads while \(500 - concurrency) registrations wait")
        for _ in devices { release.signal() }
        for _ in devices { #expect(ready.wait(timeout: .now() + .seconds(20)) == .success) }
        #expect(peak.load(ordering: .sequentiallyConsistent) == concurrency)
        #expect(registered.withLock { $0.sorted() } == devices)
        let states = try store.devices().map(\.provisioning)
        #expect(states.count == 500 && states.allSatisfy { $0 == "assigned" })
    }
}
