import COpenSSL
import CQpidProton
import FoundationEssentials
import GatehousePluginKit
import IoTHubWire
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The upstream role: a pool of AMQP connections to IoT Hub, each carrying up to
/// `devicesPerConnection` device identities, each identity authorised by its own CBS put-token
/// signed by the host (docs/protocols.md §3, docs/architecture.md "Upstream transports").
///
/// Threads: everything of proton and OpenSSL happens on ONE I/O thread, which polls the pool's
/// sockets with poll(2) and drives each connection's `pn_connection_driver_t`. The host's calls
/// (`open`, `close`, `send`, `commandResult`, from any thread) only queue an operation in
/// `inbox` and wake the thread through a pipe; none of them blocks on the network or on proton.
/// The host's callbacks (`delivered`, `link_state`, `command`, `sign_sas`) are made from the I/O
/// thread; the header says each may be.
final class AMQPHub: Sendable {
    enum Op: Sendable {
        case open(String)
        case close(String)
        case send(PluginMessage, token: UInt64)
        case commandResult(token: UInt64, status: Int32, body: [UInt8])
    }

    let settings: AMQPTransport.Settings
    let host: PluginHost
    /// The I/O thread and its inbox (GatehousePluginKit, shared with the `mqtt` transport).
    private let io: PluginIOThread<Op>
    private let upDevices = Mutex<Set<String>>([])
    /// Command tokens, unique across the pool.
    private let nextCommandToken = Atomic<UInt64>(1)
    let tls: SendableContext

    struct SendableContext: @unchecked Sendable {
        // @unchecked: an OpenSSL SSL_CTX is safe to share between connections once configured;
        // it is configured in init, before any connection exists, and never changed after.
        let pointer: OpaquePointer
    }

    init(settings: AMQPTransport.Settings, host: PluginHost) throws(PluginError) {
        self.settings = settings
        self.host = host
        var message = [CChar](repeating: 0, count: 256)
        guard let context = gh_tls_client_context(settings.caFile, settings.hostname, &message, message.count) else {
            throw PluginError(
                "cannot set up TLS: \(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))",
                configKey: settings.caFile == nil ? nil : "ca_file")
        }
        tls = SendableContext(pointer: context)
        do {
            io = try PluginIOThread()
        } catch {
            SSL_CTX_free(context)
            throw error
        }
    }

    deinit {
        SSL_CTX_free(tls.pointer)
    }

    func start() {
        io.start(name: "gatehouse.amqp.hub") { [self] in IOLoop(hub: self).run() }
    }

    func stop(drainMilliseconds: UInt32) {
        io.stop(drainDeadlineMS: Self.nowMS() + Int64(drainMilliseconds))
    }

    var isRunning: Bool { io.isRunning }

    // MARK: - Calls from the host's threads (non-blocking)

    func open(_ device: String) -> PluginStatus {
        enqueue(.open(device))
        return .ok
    }

    func close(_ device: String) -> PluginStatus {
        enqueue(.close(device))
        return .ok
    }

    /// Queues a telemetry message: `.invalid` at once for one IoT Hub can never take (over its
    /// size limit with its properties), `.unavailable` while the device's link is not up.
    func send(_ message: PluginMessage, token: UInt64) -> PluginStatus {
        // No twin links over AMQP (docs/protocols.md §3.4): the gateway's reported properties
        // need `[hub] plugin = "mqtt"`.
        guard !message.isTwinReported else { return .invalid }
        if let problem = Self.telemetryProblem(message) {
            host.log(
                .warning,
                "device \(message.deviceID): a message can never be sent to IoT Hub: \(problem); refusing it "
                    + "(the gateway keeps it as a dead letter)")
            return .invalid
        }
        guard upDevices.withLock({ $0.contains(message.deviceID) }) else { return .unavailable }
        enqueue(.send(message, token: token))
        return .ok
    }

    func commandResult(token: UInt64, status: Int32, body: [UInt8]) {
        enqueue(.commandResult(token: token, status: status, body: body))
    }

    /// IoT Hub's device-to-cloud limit (docs/protocols.md §4), counted as the hub counts it.
    static func telemetryProblem(_ message: PluginMessage) -> String? {
        let size = IoTHubLimits.deviceToCloudMessageSize(
            payloadBytes: message.payload.count, properties: message.properties.map(\.wire))
        guard size > IoTHubLimits.maxDeviceToCloudMessageBytes else { return nil }
        return "\(size) bytes with its properties, over IoT Hub's device-to-cloud limit of "
            + "\(IoTHubLimits.maxDeviceToCloudMessageBytes)"
    }

    private func enqueue(_ op: Op) { io.enqueue(op) }

    /// The I/O thread's clock for timers, timeouts and proton's ticks: monotonic, so a wall
    /// clock stepped by NTP (a gateway that booted without a clock) neither fires every timer
    /// at once nor stalls them. SAS expiries are wall-clock times and read `time(nil)`.
    static func nowMS() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    // MARK: - Called on the I/O thread

    func commandToken() -> UInt64 {
        nextCommandToken.add(1, ordering: .relaxed).newValue
    }

    /// What the host is told of a device's link (`link_state`), each change once: a connection
    /// that keeps failing does not repeat `down` for every device on it at every attempt.
    func reportUp(_ device: DeviceSession) {
        _ = upDevices.withLock { $0.insert(device.deviceID) }
        device.reported = .up
        host.linkState(deviceID: device.deviceID, .up)
    }

    func reportConnecting(_ device: DeviceSession) {
        guard device.reported != .connecting else { return }
        device.reported = .connecting
        host.linkState(deviceID: device.deviceID, .connecting)
    }

    /// `always`: the identity is closed or the plugin stops (reported even when already down).
    func reportDown(_ device: DeviceSession, reason: String, always: Bool = false) {
        _ = upDevices.withLock { $0.remove(device.deviceID) }
        guard always || device.reported != .down else { return }
        device.reported = .down
        host.linkState(deviceID: device.deviceID, .down, reason: reason)
    }

    fileprivate func takeInbox() -> [Op] { io.take() }
    fileprivate func drainWakePipe() { io.drainWake() }
    fileprivate var wakeDescriptor: Int32 { io.wakeDescriptor }
    fileprivate var drainDeadline: Int64 { io.drainDeadlineMS }

    // MARK: - The I/O thread

    /// Everything the I/O thread owns: the pool, its connections, the message codec.
    final class IOLoop {
        unowned let hub: AMQPHub
        var pool: ConnectionPool
        var connections: [Int: HubConnection] = [:]
        let codec = MessageCodec()

        init(hub: AMQPHub) {
            self.hub = hub
            self.pool = ConnectionPool(capacity: hub.settings.devicesPerConnection)
        }

        func run() {
            var lastTick = AMQPHub.nowMS()
            while hub.isRunning {
                poll(timeoutMS: 100)
                let now = AMQPHub.nowMS()
                if now - lastTick >= 250 {
                    lastTick = now
                    for connection in connections.values { connection.tick(nowMS: now) }
                }
                for connection in connections.values { connection.flush(nowMS: now) }
            }
            shutdown()
        }

        /// One round: wait for a socket or the wake-up pipe, take the inbox, read the sockets.
        func poll(timeoutMS: Int32) {
            var fds = [pollfd(fd: hub.wakeDescriptor, events: Int16(POLLIN), revents: 0)]
            var order: [HubConnection] = []
            var buffered = false
            for connection in connections.values {
                guard let fd = connection.descriptor else { continue }
                fds.append(pollfd(fd: fd, events: connection.pollEvents, revents: 0))
                order.append(connection)
                buffered = buffered || connection.hasBufferedInput
            }
            _ = Glibc.poll(&fds, nfds_t(fds.count), buffered ? 0 : timeoutMS)
            if fds[0].revents != 0 { hub.drainWakePipe() }
            let now = AMQPHub.nowMS()
            processInbox(nowMS: now)
            for (index, connection) in order.enumerated() {
                let revents = fds[index + 1].revents
                if revents != 0 || connection.hasBufferedInput { connection.handle(revents: revents, nowMS: now) }
            }
        }

        func processInbox(nowMS: Int64) {
            for op in hub.takeInbox() {
                switch op {
                case .open(let deviceID):
                    guard pool.connection(of: deviceID) == nil else { continue }
                    let (index, _) = pool.assign(deviceID)
                    let connection =
                        connections[index]
                        ?? {
                            let created = HubConnection(index: index, hub: hub, codec: codec)
                            connections[index] = created
                            return created
                        }()
                    let device = DeviceSession(address: HubAddress(hostname: hub.settings.hostname, deviceID: deviceID))
                    connection.add(device, nowMS: nowMS)
                case .close(let deviceID):
                    guard let (index, emptied) = pool.release(deviceID), let connection = connections[index],
                        let device = connection.remove(deviceID)
                    else { continue }
                    giveBack(device, reason: "identity closed")
                    if emptied {
                        connection.close()
                        connection.flush(nowMS: nowMS)
                        connection.shutDown()
                        connections[index] = nil
                    }
                case .send(let message, let token):
                    guard let index = pool.connection(of: message.deviceID), let connection = connections[index],
                        let device = connection.devices[message.deviceID]
                    else {
                        hub.host.delivered(token: token, status: .unavailable)
                        continue
                    }
                    connection.enqueue(
                        DeviceSession.Pending(token: token, bytes: codec.encode(telemetry: message)), for: device)
                case .commandResult(let token, let status, let body):
                    guard let index = owner(of: token), let connection = connections[index] else { continue }
                    connection.commandResult(token: token, status: status, body: body)
                }
            }
        }

        /// The connection whose command `token` is (a pool has a handful of connections).
        private func owner(of token: UInt64) -> Int? {
            connections.first { $0.value.commands[token] != nil }?.key
        }

        /// Reports every message the device still held as not delivered, and the link down.
        func giveBack(_ device: DeviceSession, reason: String) {
            for pending in device.unsettledInOrder { hub.host.delivered(token: pending.token, status: .unavailable) }
            device.waiting.removeAll()
            device.outstanding.removeAll()
            device.sendOrder.removeAll()
            hub.reportDown(device, reason: reason, always: true)
        }

        /// Waits (bounded by the drain deadline) for the hub to settle what is in flight, then
        /// closes every connection and hands back what was not settled.
        func shutdown() {
            let deadline = hub.drainDeadline
            while AMQPHub.nowMS() < deadline,
                connections.values.contains(where: { $0.devices.values.contains { !$0.outstanding.isEmpty } })
            {
                poll(timeoutMS: 20)
                let now = AMQPHub.nowMS()
                for connection in connections.values { connection.flush(nowMS: now) }
            }
            for connection in connections.values {
                connection.close()
                connection.flush(nowMS: AMQPHub.nowMS())
                for device in connection.devices.values { giveBack(device, reason: "gatehoused stopping") }
                connection.shutDown()
            }
            connections.removeAll()
        }
    }
}
