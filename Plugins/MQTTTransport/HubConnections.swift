import COpenSSL
import Foundation
import GatehousePluginKit
import IoTHubWire
import MosquittoClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The upstream role: one MQTT connection per device identity to IoT Hub, on libmosquitto.
///
/// IoT Hub's MQTT endpoint cannot multiplex identities (docs/protocols.md §2.5), so each leaf device
/// gets its own TLS connection with client id `{deviceId}`, username
/// `{hub}/{deviceId}/?api-version=2021-04-12` and a SAS token (signed by the host) as password.
///
/// Threads: every libmosquitto call happens on ONE I/O thread that polls all sockets with
/// poll(2) (any descriptor number) and hands each `MosquittoConnection` what poll reported, so
/// libmosquitto's per-client state is never touched concurrently and a thousand identities cost
/// one thread, not a thousand. Other threads talk to it through `inbox` (a locked queue) and a
/// wake-up pipe.
final class HubConnections: Sendable {
    struct Settings: Sendable {
        var hostname: String
        var address: String
        var port: Int
        var caFile: String?
        var keepAlive: Int32
        var sasTTL: Int64
        var apiVersion: String
    }

    enum Op: Sendable {
        case open(String)
        case close(String)
        case publish(device: String, topic: String, payload: [UInt8], token: UInt64)
        case publishRaw(device: String, topic: String, payload: [UInt8])
    }

    struct PendingMethod: Sendable {
        var device: String
        var requestID: String
    }

    let settings: Settings
    let host: PluginHost
    private let inbox = Mutex<[Op]>([])
    private let upDevices = Mutex<Set<String>>([])
    private let pendingMethods = Mutex<[UInt64: PendingMethod]>([:])
    private let nextCommandToken = Atomic<UInt64>(1)
    private let running = Atomic<Bool>(false)
    private let wakePending = Atomic<Bool>(false)
    private let drainDeadlineMS = Atomic<Int64>(0)
    private let done = DispatchSemaphore(value: 0)
    private let wakePipe: (read: Int32, write: Int32)

    /// The TLS context all links share (see gh_tls_client_context); freed after the last link.
    let tls: SendableContext

    struct SendableContext: @unchecked Sendable {
        // @unchecked: an OpenSSL SSL_CTX is safe to share between connections once configured;
        // it is configured here, before any link exists, and never changed after.
        let pointer: OpaquePointer
    }

    init(settings: Settings, host: PluginHost) throws(PluginError) {
        self.settings = settings
        self.host = host
        var message = [CChar](repeating: 0, count: 256)
        guard let context = gh_tls_client_context(settings.caFile, settings.address, &message, message.count) else {
            throw PluginError(
                "cannot set up TLS: \(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))",
                configKey: settings.caFile == nil ? nil : "ca_file")
        }
        tls = SendableContext(pointer: context)
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0, fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0, fcntl(fds[1], F_SETFL, O_NONBLOCK) == 0 else {
            throw PluginError("cannot create the I/O thread's wake-up pipe: \(String(cString: strerror(errno)))")
        }
        wakePipe = (fds[0], fds[1])
        // libmosquitto's process-wide init here, on the loading thread, not first on the I/O thread.
        Mosquitto.initialize()
    }

    deinit {
        SSL_CTX_free(tls.pointer)
        Glibc.close(wakePipe.read)
        Glibc.close(wakePipe.write)
    }

    func start() {
        running.store(true, ordering: .sequentiallyConsistent)
        let thread = Thread { [self] in
            var loop = IOLoop(owner: self)
            loop.run()
            done.signal()
        }
        thread.name = "gatehouse.mqtt.hub"
        thread.start()
    }

    func stop(drainMilliseconds: UInt32) {
        guard running.load(ordering: .sequentiallyConsistent) else { return }
        drainDeadlineMS.store(Self.nowMS() + Int64(drainMilliseconds), ordering: .sequentiallyConsistent)
        running.store(false, ordering: .sequentiallyConsistent)
        wake()
        done.wait()
    }

    // MARK: Calls from other threads

    func open(_ device: String) -> PluginStatus {
        enqueue(.open(device))
        return .ok
    }

    func close(_ device: String) -> PluginStatus {
        enqueue(.close(device))
        return .ok
    }

    func send(_ message: PluginMessage, token: UInt64) -> PluginStatus {
        guard upDevices.withLock({ $0.contains(message.deviceID) }) else { return .unavailable }
        let topic = IoTHubTopic.telemetry(deviceID: message.deviceID, propertyBag: message.properties.propertyBag)
        enqueue(.publish(device: message.deviceID, topic: topic, payload: message.payload, token: token))
        return .ok
    }

    func commandResult(token: UInt64, status: Int32, body: [UInt8]) {
        guard let pending = pendingMethods.withLock({ $0.removeValue(forKey: token) }) else {
            if status != 200 {
                // C2D over MQTT cannot be rejected: the PUBACK already completed it (§2.3).
                host.log(
                    .warning, "a cloud-to-device message was refused by the gateway (status \(status)) and dropped")
            }
            return
        }
        enqueue(
            .publishRaw(
                device: pending.device,
                topic: IoTHubTopic.methodResponse(status: Int(status), requestID: pending.requestID), payload: body
            ))
    }

    private func enqueue(_ op: Op) {
        inbox.withLock { $0.append(op) }
        wake()
    }

    /// Wakes the I/O thread unless a wake-up is already pending: one pipe write covers every
    /// operation queued before the thread drains the inbox.
    private func wake() {
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wakePipe.write, &byte, 1)
    }

    static func nowMS() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: - The I/O thread

    /// Everything the I/O thread owns. Confined to that thread: never shared, so no locks.
    struct IOLoop {
        let owner: HubConnections
        var links: [String: HubLink] = [:]

        init(owner: HubConnections) { self.owner = owner }

        mutating func run() {
            var lastMisc = ContinuousClock.now
            var drainBuffer = [UInt8](repeating: 0, count: 256)
            while owner.running.load(ordering: .sequentiallyConsistent) {
                var fds = [pollfd(fd: owner.wakePipe.read, events: Int16(POLLIN), revents: 0)]
                var order: [HubLink] = []
                for link in links.values {
                    guard let watched = link.client.pollDescriptor(writable: link.state == .connecting) else {
                        continue
                    }
                    fds.append(watched)
                    order.append(link)
                }
                _ = poll(&fds, nfds_t(fds.count), 100)
                if fds[0].revents != 0 {
                    while read(owner.wakePipe.read, &drainBuffer, drainBuffer.count) > 0 {}
                }
                processInbox()
                for (index, link) in order.enumerated() where !link.closed {
                    let revents = fds[index + 1].revents
                    if link.state == .connecting, revents & Int16(POLLERR | POLLHUP) != 0 {
                        // A non-blocking connect that failed (refused, unreachable): libmosquitto
                        // reports nothing for it in an external loop, so we do.
                        link.connectFailed("connection refused or reset")
                        continue
                    }
                    link.client.handle(revents: revents)
                }
                if ContinuousClock.now - lastMisc >= .milliseconds(500) {
                    lastMisc = .now
                    let now = HubConnections.nowMS()
                    for link in links.values {
                        if link.state == .connected || link.state == .connecting { link.client.loopMisc() }
                        link.tick(nowMS: now)
                    }
                }
            }
            shutdown()
        }

        mutating func processInbox() {
            owner.wakePending.store(false, ordering: .sequentiallyConsistent)
            let ops = owner.inbox.withLock { ops in
                defer { ops.removeAll(keepingCapacity: true) }
                return ops
            }
            for op in ops {
                switch op {
                case .open(let device):
                    if links[device] == nil {
                        guard let link = HubLink(device: device, owner: owner) else { continue }
                        links[device] = link
                        link.connect()
                    }
                case .close(let device):
                    links.removeValue(forKey: device)?.close(reason: "identity closed")
                case .publish(let device, let topic, let payload, let token):
                    guard let link = links[device] else {
                        owner.host.delivered(token: token, status: .unavailable)
                        continue
                    }
                    link.publish(topic: topic, payload: payload, token: token)
                case .publishRaw(let device, let topic, let payload):
                    links[device]?.publish(topic: topic, payload: payload, token: nil)
                }
            }
        }

        /// Waits (bounded) for outstanding acknowledgements, then closes every link.
        mutating func shutdown() {
            let deadline = owner.drainDeadlineMS.load(ordering: .sequentiallyConsistent)
            while HubConnections.nowMS() < deadline, links.values.contains(where: { !$0.outstanding.isEmpty }) {
                var fds: [pollfd] = []
                var order: [HubLink] = []
                for link in links.values {
                    let socket = link.client.socket
                    guard socket >= 0 else { continue }
                    fds.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0))
                    order.append(link)
                }
                guard !fds.isEmpty else { break }
                _ = poll(&fds, nfds_t(fds.count), 50)
                for (index, link) in order.enumerated() where fds[index].revents != 0 {
                    link.client.loopRead()
                }
            }
            for link in links.values { link.close(reason: "gatehoused stopping") }
            links.removeAll()
        }
    }
}

/// One device identity's connection. Confined to the I/O thread (every method is called there,
/// including the connection's events, which arrive inside its libmosquitto calls).
final class HubLink {
    enum State { case idle, connecting, connected, waiting }

    let device: String
    let owner: HubConnections
    let client: MosquittoConnection
    var state = State.idle
    /// Set by `close`: the libmosquitto client is gone and the link takes no more events.
    private(set) var closed = false
    /// libmosquitto message id → the host's token, for every send not yet acknowledged. The
    /// session is persistent, so after a reconnect libmosquitto re-sends these itself and the
    /// PUBACK still finds its token here.
    var outstanding: [Int32: UInt64] = [:]
    var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(60))
    var retryAtMS: Int64 = 0
    var renewAtMS: Int64 = .max
    var renewing = false
    var connectStartedMS: Int64 = 0

    init?(device: String, owner: HubConnections) {
        self.device = device
        self.owner = owner
        do {
            // Clean session 0, as the Azure SDKs do: C2D subscriptions and queued C2D survive.
            client = try MosquittoConnection(clientID: device, cleanSession: false)
            // Telemetry is small and latency matters: no Nagle delay behind a delayed ACK.
            try client.setTCPNoDelay(true)
            // The host bounds what is in flight per device; libmosquitto should not queue on top.
            try client.setMaxInflightMessages(0)
            // The shared context, as is: libmosquitto applies no defaults of its own on top, but
            // still checks the server's host name (tls_insecure stays false).
            try client.setTLSContext(owner.tls.pointer)
        } catch {
            owner.host.log(.error, "libmosquitto could not create a client for device \(device): \(error)")
            return nil
        }
        // libmosquitto's own errors (a TLS handshake refused for a bad certificate, say) say
        // more than the disconnect code that follows them.
        client.logLevels = [.error, .warning]
        // Unowned: the link owns the connection, whose events arrive only inside its calls.
        client.handler = { [unowned self] event in self.on(event) }
    }

    var username: String { "\(owner.settings.hostname)/\(device)/?api-version=\(owner.settings.apiVersion)" }

    /// Signs a fresh token and starts a non-blocking (re)connect.
    func connect() {
        let settings = owner.settings
        let expiry = HubConnections.nowMS() / 1000 + settings.sasTTL
        let token: String
        switch owner.host.signSAS(deviceID: device, resource: "\(settings.hostname)/devices/\(device)", expiry: expiry)
        {
        case .failure(let error):
            fail(reason: "the gateway would not sign a SAS token for this device (\(error.status))")
            return
        case .success(let signed):
            token = signed
        }
        // Renew at 80% of the lifetime: reconnect with a new token before the hub drops us.
        renewAtMS = HubConnections.nowMS() + settings.sasTTL * 800
        do {
            try client.setCredentials(username: username, password: token)
        } catch {
            fail(reason: "cannot set the credentials for this device: \(error)")
            return
        }
        state = .connecting
        connectStartedMS = HubConnections.nowMS()
        owner.host.linkState(deviceID: device, .connecting)
        let reconnect = renewing || retryAtMS > 0
        renewing = false
        do {
            if reconnect {
                try client.reconnectAsync()
            } else {
                try client.connectAsync(host: settings.address, port: settings.port, keepAlive: settings.keepAlive)
            }
        } catch {
            fail(reason: "cannot connect to \(settings.address):\(settings.port): \(error)")
        }
    }

    /// Gives up on a connect in progress and schedules the next try.
    func connectFailed(_ reason: String) {
        client.disconnect()
        fail(reason: "cannot connect to \(owner.settings.address):\(owner.settings.port): \(reason)")
    }

    private func fail(reason: String) {
        state = .waiting
        let delay = backoff.next()
        retryAtMS = HubConnections.nowMS() + delay.milliseconds
        owner.host.linkState(deviceID: device, .down, reason: "\(reason); retry in \(delay.formattedMS)")
    }

    /// Timers: reconnects that are due, connects that hang, token renewals.
    func tick(nowMS: Int64) {
        if state == .connecting, nowMS - connectStartedMS > Int64(owner.settings.keepAlive) * 1000 {
            connectFailed("no CONNACK within \(owner.settings.keepAlive)s")
        } else if state == .waiting, nowMS >= retryAtMS {
            connect()
        } else if state == .connected, nowMS >= renewAtMS {
            renewing = true
            owner.host.log(.info, "renewing the SAS token of device \(device)")
            client.disconnect()
        }
    }

    func publish(topic: String, payload: [UInt8], token: UInt64?) {
        let qos: Int32 = token == nil ? 0 : 1  // method responses go at QoS 0, as the SDKs send them
        let mid = try? client.publish(topic: topic, payload: payload, qos: qos)
        guard let token else { return }
        if let mid {
            outstanding[mid] = token
        } else {
            owner.host.delivered(token: token, status: .unavailable)
        }
    }

    func close(reason: String) {
        if state == .connected { client.disconnect() }
        owner.upDevicesRemove(device)
        for token in outstanding.values { owner.host.delivered(token: token, status: .unavailable) }
        outstanding.removeAll()
        owner.host.linkState(deviceID: device, .down, reason: reason)
        client.close()
        closed = true
    }

    // MARK: libmosquitto's events (on the I/O thread, inside the connection's calls)

    private func on(_ event: MosquittoEvent) {
        switch event {
        case .connected(let code): onConnect(code)
        case .disconnected(let code): onDisconnect(code)
        case .published(let mid): onPublish(mid)
        case .message(let message): owner.received(topic: message.topic, payload: message.payload, device: device)
        case .log(_, let text): owner.host.log(.warning, "device \(device): libmosquitto: \(text)")
        case .subscribed: break
        }
    }

    private func onConnect(_ rc: Int32) {
        guard rc == 0 else {
            client.disconnect()
            fail(reason: "hub refused the connection: \(Mosquitto.connackText(rc))")
            return
        }
        state = .connected
        backoff.reset()
        retryAtMS = 1  // from now on reconnect, keeping the session
        // C2D at QoS 1, methods at QoS 0, as the C SDK subscribes (docs/protocols.md §2.3).
        _ = try? client.subscribe(IoTHubTopic.c2dFilter(deviceID: device), qos: 1)
        _ = try? client.subscribe(IoTHubTopic.methodsFilter, qos: 0)
        owner.upDevicesInsert(device)
        owner.host.linkState(deviceID: device, .up)
    }

    private func onDisconnect(_ rc: Int32) {
        owner.upDevicesRemove(device)
        if renewing {
            // Reconnect from the next tick, not from inside libmosquitto's disconnect handling,
            // which discards packets queued during its callback (the new CONNECT among them).
            state = .waiting
            retryAtMS = HubConnections.nowMS()
            owner.host.linkState(deviceID: device, .down, reason: "renewing the SAS token")
            return
        }
        guard state != .waiting else { return }  // a refused CONNACK already scheduled the retry
        fail(reason: rc == 0 ? "disconnected" : "connection lost: \(Mosquitto.describe(rc))")
    }

    private func onPublish(_ mid: Int32) {
        if let token = outstanding.removeValue(forKey: mid) {
            owner.host.delivered(token: token, status: .ok)
        }
    }
}

extension HubConnections {
    fileprivate func upDevicesInsert(_ device: String) { _ = upDevices.withLock { $0.insert(device) } }
    fileprivate func upDevicesRemove(_ device: String) { _ = upDevices.withLock { $0.remove(device) } }

    /// A message from the hub: a C2D message or a direct-method request, handed to the host.
    fileprivate func received(topic: String, payload: [UInt8], device: String) {
        let token = nextCommandToken.add(1, ordering: .relaxed).newValue
        if let bag = IoTHubTopic.c2dPropertyBag(topic: topic, deviceID: device) {
            host.command(
                PluginCommand(
                    kind: .c2dMessage, deviceID: device, name: "", payload: payload, properties: .init(propertyBag: bag)
                ),
                token: token)
        } else if topic.hasPrefix(IoTHubTopic.methodRequestPrefix) {
            guard let (name, requestID) = IoTHubTopic.parseMethodRequest(topic) else {
                host.log(.warning, "ignoring a malformed method request on \(topic)")
                return
            }
            pendingMethods.withLock { $0[token] = PendingMethod(device: device, requestID: requestID) }
            host.command(
                PluginCommand(kind: .directMethod, deviceID: device, name: name, payload: payload), token: token)
        } else {
            host.log(.debug, "ignoring a hub message on \(topic)")
        }
    }
}
