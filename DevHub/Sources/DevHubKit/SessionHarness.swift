import FoundationEssentials
import Logging
import MQTTCodec
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Drives one real ``MQTTSession`` (or, with the `amqp` prelude, one ``AMQPConnection``) with
/// arbitrary bytes, over a socketpair and without TLS: for the fuzz target (`Fuzz/DevHubFuzz`)
/// and for tests that look at the exact bytes DevHub answers. It has its own in-memory store
/// with one device and one enrollment group.
///
/// A run optionally first sends a valid CONNECT (so the input reaches an open hub or DPS
/// session), waits for the CONNACK, sends the input, waits `linger`, half-closes, and returns
/// everything the session wrote until it closed the connection.
public final class SessionHarness: Sendable {
    /// What precedes the input.
    public enum Prelude: UInt8, Sendable, CaseIterable {
        /// Nothing: the input's first packet must be a CONNECT.
        case none
        /// A CONNECT of device ``deviceID`` with a valid SAS token (CleanSession 0).
        case hubDevice
        /// A CONNECT of DPS registration ``registrationID`` with a valid SAS token.
        case dpsRegistration
        /// Nothing, to DevHub's AMQP endpoint (``AMQPConnection``, without TLS): the input is a
        /// whole AMQP connection, from its protocol header (docs/protocols.md §3).
        case amqp
    }

    public static let hubName = "devhub.harness"
    public static let idScope = "0ne00HARNESS"
    public static let deviceID = "harness-device"
    public static let registrationID = "harness-registration"
    public static let deviceKey = SymmetricKeyText(bytes: Array(repeating: 0x42, count: 32))
    public static let groupKey = SymmetricKeyText(bytes: Array(repeating: 0x24, count: 32))

    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let services: SessionServices
    private let log: LogCapture
    public let store: DevHubStore

    public init() throws {
        store = try DevHubStore()
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let log = LogCapture()
        self.log = log
        let logger = Logger(label: "devhub-harness") { _ in LogCapture.Handler(capture: log) }
        let telemetry = TelemetryWriter(store: store, retention: 1000, logger: logger)
        let hub = Hub(
            hubName: Self.hubName, store: store, threadPool: threadPool, telemetry: telemetry,
            logger: logger)
        let dps = DPS(
            idScope: Self.idScope, assignedHub: Self.hubName, store: store, threadPool: threadPool,
            logger: logger)
        services = SessionServices(hub: hub, dps: dps, logger: logger)
        try store.saveDevice(
            DeviceIdentity(deviceID: Self.deviceID, primaryKey: Self.deviceKey), replace: true)
        try store.saveGroup(
            EnrollmentGroup(
                name: "harness-group", attestation: .symmetricKey(primary: Self.groupKey, secondary: nil)))
    }

    deinit {
        try? group.syncShutdownGracefully()
        try? threadPool.syncShutdownGracefully()
    }

    /// The log lines written so far (and clears them).
    public func takeLogLines() -> [String] { log.take() }

    /// A CONNECT for the prelude, with a SAS token valid until 2100.
    public static func connectPacket(for prelude: Prelude) -> [UInt8] {
        let expiry: Int64 = 4_102_444_800
        let connect: Connect
        switch prelude {
        case .none, .amqp:
            return []
        case .hubDevice:
            let token = SASVerifier.makeToken(
                resource: "\(hubName)/devices/\(deviceID)", key: deviceKey.bytes, expiry: expiry)
            connect = Connect(
                clientID: deviceID, cleanSession: false, keepAlive: 0,
                username: "\(hubName)/\(deviceID)/?api-version=2021-04-12", password: Array(token.utf8))
        case .dpsRegistration:
            let key = SASVerifier.deriveDeviceKey(
                groupKey: groupKey.bytes, registrationID: registrationID)
            let token = SASVerifier.makeToken(
                resource: "\(idScope)/registrations/\(registrationID)", key: key, expiry: expiry,
                keyName: "registration")
            connect = Connect(
                clientID: registrationID, cleanSession: true, keepAlive: 0,
                username: "\(idScope)/registrations/\(registrationID)/api-version=2019-03-31",
                password: Array(token.utf8))
        }
        var bytes: [UInt8] = []
        MQTTPacket.connect(connect).encode(into: &bytes)
        return bytes
    }

    /// The outcome of a run: the bytes the session wrote, and whether it closed the
    /// connection after the half-close (false means it hung).
    public struct Outcome: Sendable {
        public var output: [UInt8]
        public var closed: Bool
    }

    /// Runs one session; see the type's documentation.
    public func run(prelude: Prelude, input: [UInt8], linger: Duration = .zero) throws -> Outcome {
        try run(prelude: prelude, inputs: [input], linger: linger)
    }

    /// Runs one session fed `inputs` one after another, waiting `linger` after each (a client
    /// that waits for answers, as AMQP clients wait for credit).
    public func run(prelude: Prelude, inputs: [[UInt8]], linger: Duration) throws -> Outcome {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
            throw DevHubError(.internalError, "socketpair failed: errno \(errno)")
        }
        let peer = fds[1]
        defer { Glibc.close(peer) }
        let services = self.services
        let channel = try NIOPipeBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if prelude == .amqp {
                        try channel.pipeline.syncOperations.addHandler(
                            AMQPConnection(services: services, id: services.hub.nextID()))
                    } else {
                        try channel.pipeline.syncOperations.addHandler(MQTTSession(services: services))
                    }
                }
            }
            .takingOwnershipOfDescriptor(inputOutput: fds[0]).wait()

        var output: [UInt8] = []
        let connect = Self.connectPacket(for: prelude)
        if !connect.isEmpty {
            Self.sendAll(peer, connect)
            // Wait for the CONNACK (4 bytes) so the input meets an open session.
            _ = Self.read(peer, into: &output, until: { $0.count >= 4 }, timeoutMilliseconds: 5000)
        }
        for input in inputs {
            Self.sendAll(peer, input)
            if linger > .zero {
                let milliseconds = Int32(
                    linger.components.seconds * 1000 + linger.components.attoseconds / 1_000_000_000_000_000)
                _ = Self.read(peer, into: &output, until: { _ in false }, timeoutMilliseconds: milliseconds)
            }
        }
        shutdown(peer, Int32(SHUT_WR))
        // 30 s: a session closes within milliseconds, but the parallel test run on two cores
        // can starve the event loop for seconds.
        let closed = Self.read(peer, into: &output, until: { _ in false }, timeoutMilliseconds: 30_000)
        if !closed { channel.close(promise: nil) }
        try? channel.closeFuture.wait()
        return Outcome(output: output, closed: closed)
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent < 0, errno == EINTR { continue }
            guard sent > 0 else { return }  // the session closed the connection
            offset += sent
        }
    }

    /// Reads into `output` until `done` holds (true), EOF (true), or the timeout (false, or true
    /// when `done` can never hold: then the timeout is just the end of a linger).
    private static func read(
        _ fd: Int32, into output: inout [UInt8], until done: ([UInt8]) -> Bool,
        timeoutMilliseconds: Int32
    ) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeoutMilliseconds))
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done(output) {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { return false }
            var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pollfd, 1, Int32(remaining.components.seconds * 1000 + 1))
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return true }  // EOF (or reset): the session closed
            output.append(contentsOf: buffer[0..<count])
        }
        return true
    }
}

/// Log lines kept in memory, for the harness.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ line: String) { lines.withLock { $0.append(line) } }

    func take() -> [String] {
        lines.withLock { lines in
            defer { lines = [] }
            return lines
        }
    }

    struct Handler: LogHandler {
        let capture: LogCapture
        var logLevel: Logger.Level = .debug
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            capture.append("\(event.level): \(event.message)")
        }
    }
}
