import COpenSSL
import FoundationEssentials
import GatehousePluginKit
import HubTLS
import IoTHubWire
import MQTTCodec
import MQTTHubClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The upstream role: one MQTT connection per device identity to IoT Hub (`HubMQTTClient`).
///
/// IoT Hub's MQTT endpoint cannot multiplex identities (docs/protocols.md §2.5), so each leaf device
/// gets its own TLS connection with client id `{deviceId}`, username
/// `{hub}/{deviceId}/?api-version=2021-04-12` and a SAS token (signed by the host) as password.
///
/// Threads: every connection is driven by ONE I/O thread that polls all sockets with poll(2)
/// (any descriptor number) and hands each `HubMQTTClient` what poll reported, so a
/// connection's state is never touched concurrently and a thousand identities cost one thread,
/// not a thousand. Other threads talk to it through `inbox` (a locked queue) and a
/// wake-up pipe.
///
/// Poison messages (docs/architecture.md, "Failure model"): `send` refuses at once
/// (`.invalid`) a message that breaks IoT Hub's documented limits (`IoTHubLimits`), and a link
/// reports `delivered(.refused)` for a message the hub keeps refusing — each fresh connection,
/// accepted and authenticated, dropped by the hub right after that message was sent alone,
/// `maxDeliveryAttempts` times in a row (see `HubLink`). A link that is merely down never
/// refuses anything: its messages wait, and the reconnect backoff grows until a connection
/// proves itself.
final class HubConnections: Sendable {
    struct Settings: Sendable {
        var hostname: String
        var address: String
        var port: Int
        var caFile: String?
        var keepAlive: Int32
        var sasTTL: Int64
        var apiVersion: String
        /// How many fresh connections in a row the hub may drop at one message, acknowledging
        /// nothing, before that message is reported refused (`delivered(.refused)`).
        var maxDeliveryAttempts: Int = 3
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
    /// The I/O thread and its inbox (GatehousePluginKit, shared with the `amqp` transport).
    private let io: PluginIOThread<Op>
    private let upDevices = Mutex<Set<String>>([])
    private let pendingMethods = Mutex<[UInt64: PendingMethod]>([:])
    private let nextCommandToken = Atomic<UInt64>(1)

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
        io.start(name: "gatehouse.mqtt.hub") { [self] in
            var loop = IOLoop(owner: self)
            loop.run()
        }
    }

    func stop(drainMilliseconds: UInt32) {
        io.stop(drainDeadlineMS: Self.nowMS() + Int64(drainMilliseconds))
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

    /// Queues a telemetry message for its device's link: `.invalid` at once for one IoT Hub can
    /// never take (checked before the link's state: a message's size does not depend on it),
    /// `.unavailable` while the link is not up.
    func send(_ message: PluginMessage, token: UInt64) -> PluginStatus {
        if message.isTwinReported {
            // The device's own reported properties (docs/protocols.md §2, twin); IoT Hub takes a
            // reported-properties document of at most 32 KiB.
            guard message.payload.count <= 32 * 1024 else { return .invalid }
            guard upDevices.withLock({ $0.contains(message.deviceID) }) else { return .unavailable }
            let topic = IoTHubTopic.twinReportedPrefix + "?$rid=\(token)"
            enqueue(.publish(device: message.deviceID, topic: topic, payload: message.payload, token: token))
            return .ok
        }
        let topic = IoTHubTopic.telemetry(deviceID: message.deviceID, propertyBag: message.properties.propertyBag)
        if let problem = IoTHubLimits.telemetryProblem(
            payloadBytes: message.payload.count, properties: message.properties.map(\.wire), topic: topic)
        {
            host.log(
                .warning,
                "device \(message.deviceID): a message can never be sent to IoT Hub: \(problem); refusing it "
                    + "(the gateway keeps it as a dead letter)")
            return .invalid
        }
        guard upDevices.withLock({ $0.contains(message.deviceID) }) else { return .unavailable }
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
        io.enqueue(op)
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
            while owner.io.isRunning {
                var fds = [pollfd(fd: owner.io.wakeDescriptor, events: Int16(POLLIN), revents: 0)]
                var order: [HubLink] = []
                var inputWaits = false
                for link in links.values {
                    // What this pass queued leaves now: one SSL_write a link (`HubMQTTClient`).
                    link.client.flush()
                    guard let events = link.client.pollEvents else { continue }
                    fds.append(pollfd(fd: link.client.descriptor, events: events, revents: 0))
                    order.append(link)
                    inputWaits = inputWaits || link.client.hasBufferedInput
                }
                _ = poll(&fds, nfds_t(fds.count), inputWaits ? 0 : 100)
                if fds[0].revents != 0 { owner.io.drainWake() }
                processInbox()
                for (index, link) in order.enumerated() where !link.closed {
                    let revents = fds[index + 1].revents
                    guard revents != 0 || link.client.hasBufferedInput else { continue }
                    link.client.handle(revents: revents)
                }
                if ContinuousClock.now - lastMisc >= .milliseconds(500) {
                    lastMisc = .now
                    let now = HubConnections.nowMS()
                    for link in links.values { link.tick(nowMS: now) }
                }
            }
            shutdown()
        }

        mutating func processInbox() {
            for op in owner.io.take() {
                switch op {
                case .open(let device):
                    if links[device] == nil {
                        let link = HubLink(device: device, owner: owner)
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
            let deadline = owner.io.drainDeadlineMS
            while HubConnections.nowMS() < deadline, links.values.contains(where: \.hasOutstanding) {
                var fds: [pollfd] = []
                var order: [HubLink] = []
                for link in links.values {
                    link.client.flush()
                    guard let events = link.client.pollEvents else { continue }
                    fds.append(pollfd(fd: link.client.descriptor, events: events, revents: 0))
                    order.append(link)
                }
                guard !fds.isEmpty else { break }
                _ = poll(&fds, nfds_t(fds.count), 50)
                for (index, link) in order.enumerated() where fds[index].revents != 0 {
                    link.client.handle(revents: fds[index].revents)
                }
            }
            for link in links.values { link.close(reason: "gatehoused stopping") }
            links.removeAll()
        }
    }
}

/// One device identity's connection. Confined to the I/O thread (every method is called there,
/// including the connection's events, which arrive inside its `HubMQTTClient` calls).
///
/// The link keeps every message `send` accepted until the hub acknowledges it: `waiting` (not
/// yet handed to the connection) and `outstanding` (published, no PUBACK yet). When a
/// connection drops, the outstanding ones go back to the front of `waiting`, in order; the
/// client resends nothing by itself, so the link decides what is sent again, and how many at
/// once.
///
/// Poison detection. A connection the hub accepted (CONNACK 0) that drops before any PUBACK,
/// within `attributionWindowMS` of a message being sent, "failed at its first message". With
/// several messages outstanding the culprit is unknown: they all become `suspects`, and while
/// there are suspects the link sends one message at a time. With one outstanding, the drop
/// counts against it (`refusals`); at `maxDeliveryAttempts` it is reported
/// `delivered(.refused)` and the device's next messages go on. A PUBACK clears its message of
/// suspicion. The reconnect backoff is reset only once a connection proved itself (a PUBACK, or
/// `provenAfterMS` up with nothing unanswered), never merely because the hub accepted it.
///
/// A hub that drops every message (a quota, an outage behind a working CONNACK) must not turn
/// the outbox into dead letters: after one refusal, the next needs proof that the hub takes
/// this device's messages — a PUBACK since — or `refusalCooldownMS` without one. Until then the
/// message waits, counted, and the backoff keeps growing.
final class HubLink {
    enum State { case idle, connecting, connected, waiting }

    /// A message `send` accepted, until the hub acknowledges it.
    struct Pending {
        var topic: String
        var payload: [UInt8]
        var token: UInt64
        /// When it was last handed to the connection (ms since 1970).
        var sentMS: Int64 = 0
    }

    /// A drop this soon after the only outstanding message was sent is counted against it.
    static let attributionWindowMS: Int64 = 10_000
    /// A connection up this long, with nothing left unanswered, has proved itself.
    static let provenAfterMS: Int64 = 10_000
    /// After a refusal, the next one needs a PUBACK in between, or this long.
    static let refusalCooldownMS: Int64 = 300_000

    let device: String
    let owner: HubConnections
    let client = HubMQTTClient()
    var state = State.idle
    /// Set by `close`: the connection is gone and the link takes no more events.
    private(set) var closed = false
    /// Accepted, not yet handed to the connection, in the order `send` accepted them.
    var waiting: [Pending] = []
    /// Published on this connection and not yet acknowledged, by packet id, and those ids in
    /// publish order.
    var outstanding: [UInt16: Pending] = [:]
    var publishOrder: [UInt16] = []
    /// Messages the hub may be refusing (see the type's comment): sent one at a time.
    var suspects = Set<UInt64>()
    /// How many fresh connections in a row the hub dropped right after each message.
    var refusals: [UInt64: Int] = [:]
    /// When this link last reported a message refused, and whether the hub acknowledged any
    /// message since.
    var lastRefusalMS: Int64?
    var acknowledgedSinceRefusal = false
    /// The current connection: when the hub accepted it, and whether it proved itself.
    var connectedAtMS: Int64 = 0
    var proven = false
    /// Whether this connection subscribed to twin responses (at its first reported patch).
    var twinSubscribed = false
    var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(60))
    var retryAtMS: Int64 = 0
    var renewAtMS: Int64 = .max
    var renewing = false
    var connectStartedMS: Int64 = 0
    /// When `flush` last had telemetry to send (ms since 1970).
    var lastPublishMS: Int64 = 0
    /// A link with nothing to send for this long gives its write buffer back.
    static let idleAfterMS: Int64 = 5_000

    init(device: String, owner: HubConnections) {
        self.device = device
        self.owner = owner
        // Unowned: the link owns the connection, whose events arrive only inside its calls.
        client.handler = { [unowned self] event in self.on(event) }
    }

    var username: String { "\(owner.settings.hostname)/\(device)/?api-version=\(owner.settings.apiVersion)" }

    /// Signs a fresh token and starts a non-blocking connect (clean session 0: the hub keeps the
    /// identity's subscriptions and queued C2D messages across connections).
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
        state = .connecting
        connectStartedMS = HubConnections.nowMS()
        owner.host.linkState(deviceID: device, .connecting)
        renewing = false
        do throws(TransportFailure) {
            try client.connect(
                address: settings.address, port: settings.port, context: owner.tls.pointer,
                // The name the certificate is checked against (`tls`'s context): the address, as
                // libmosquitto sent it before.
                serverName: settings.address,
                credentials: .init(
                    clientID: device, username: username, password: token,
                    keepAlive: UInt16(clamping: settings.keepAlive)))
        } catch {
            fail(reason: "cannot connect to \(settings.address):\(settings.port): \(error)")
        }
    }

    /// Gives up on a connect in progress and schedules the next try.
    func connectFailed(_ reason: String) {
        client.close()
        fail(reason: "cannot connect to \(owner.settings.address):\(owner.settings.port): \(reason)")
    }

    private func fail(reason: String) {
        state = .waiting
        let delay = backoff.next()
        retryAtMS = HubConnections.nowMS() + delay.milliseconds
        owner.host.linkState(deviceID: device, .down, reason: "\(reason); retry in \(delay.formattedMS)")
    }

    /// Timers: reconnects that are due, connects that hang, token renewals, a connection that
    /// proved itself by staying up.
    func tick(nowMS: Int64) {
        client.tick()
        if state == .connecting, nowMS - connectStartedMS > Int64(owner.settings.keepAlive) * 1000 {
            connectFailed("no CONNACK within \(owner.settings.keepAlive)s")
        } else if state == .waiting, nowMS >= retryAtMS {
            connect()
        } else if state == .connected, nowMS >= renewAtMS {
            renewing = true
            owner.host.log(.info, "renewing the SAS token of device \(device)")
            client.disconnect()
        } else if state == .connected, !proven, outstanding.isEmpty, nowMS - connectedAtMS >= Self.provenAfterMS {
            proven = true
            backoff.reset()
        }
        if state == .connected, nowMS - lastPublishMS >= Self.idleAfterMS { client.trimBuffers() }
    }

    /// Queues a telemetry message (`token`) or sends a method response (QoS 0, no token).
    func publish(topic: String, payload: [UInt8], token: UInt64?) {
        if topic.hasPrefix(IoTHubTopic.twinReportedPrefix), !twinSubscribed {
            // Twin responses, subscribed to only by an identity that reports (the gateway's own):
            // a thousand leaf links subscribe to nothing more.
            client.subscribe(IoTHubTopic.twinResponsePrefix + "#", qos: .atMostOnce)
            twinSubscribed = true
        }
        guard let token else {
            // Method responses go at QoS 0, as the SDKs send them; lost with the connection.
            _ = try? client.publish(topic: topic, payload: payload, qos: .atMostOnce)
            return
        }
        waiting.append(Pending(topic: topic, payload: payload, token: token))
        flush()
    }

    /// Hands waiting messages to the connection: all of them, or one at a time while there are
    /// suspects. The PUBLISHes of one pass of the I/O loop leave together (`HubMQTTClient`);
    /// `tick` gives the write buffer back once the link is idle, so 1,000 quiet identities hold
    /// none.
    private func flush() {
        guard state == .connected, owner.isRunning else { return }
        if !waiting.isEmpty { lastPublishMS = HubConnections.nowMS() }
        while !waiting.isEmpty {
            if !suspects.isEmpty, !outstanding.isEmpty { return }
            var next = waiting.removeFirst()
            do throws(HubMQTTClient.PublishRefusal) {
                let id = try client.publish(topic: next.topic, payload: next.payload, qos: .atLeastOnce)
                next.sentMS = HubConnections.nowMS()
                outstanding[id] = next
                publishOrder.append(id)
            } catch .tooLarge {
                owner.host.log(
                    .warning,
                    "device \(device): MQTT cannot carry a message of \(next.payload.count) bytes on its topic; "
                        + "reporting it refused")
                forget(next.token)
                owner.host.delivered(token: next.token, status: .refused)
            } catch {
                // The connection is going; its drop puts everything back in order.
                waiting.insert(next, at: 0)
                return
            }
        }
    }

    private func forget(_ token: UInt64) {
        suspects.remove(token)
        refusals[token] = nil
    }

    func close(reason: String) {
        // This reports the link down itself: the connection's own `.disconnected` is not needed.
        client.handler = { _ in }
        client.disconnect()
        owner.upDevicesRemove(device)
        let tokens = publishOrder.compactMap { outstanding[$0]?.token } + waiting.map(\.token)
        outstanding.removeAll()
        publishOrder.removeAll()
        waiting.removeAll()
        suspects.removeAll()
        refusals.removeAll()
        for token in tokens { owner.host.delivered(token: token, status: .unavailable) }
        owner.host.linkState(deviceID: device, .down, reason: reason)
        closed = true
    }

    /// Whether anything sent waits for the hub's acknowledgement (the drain at stop).
    var hasOutstanding: Bool { !outstanding.isEmpty }

    // MARK: The connection's events (on the I/O thread, inside the connection's calls)

    private func on(_ event: HubMQTTClient.Event) {
        switch event {
        case .connected(let code): onConnect(code)
        case .connectFailed(let reason):
            fail(reason: "cannot connect to \(owner.settings.address):\(owner.settings.port): \(reason)")
        case .disconnected(let reason): onDisconnect(reason)
        case .acknowledged(let id): onPublish(id)
        case .message(let topic, let payload): owner.received(topic: topic, payload: payload, device: device)
        case .oversized(let topic, let bytes):
            owner.host.log(
                .warning,
                "device \(device): the hub sent a message of \(bytes) bytes on \(topic), over the limit of "
                    + "\(HubMQTTClient.maxIncomingPacket); acknowledged and dropped")
        }
    }

    private func onConnect(_ code: ConnAck.ReturnCode) {
        guard code == .accepted else {
            fail(reason: "hub refused the connection: \(Self.connackText(code))")
            return
        }
        state = .connected
        connectedAtMS = HubConnections.nowMS()
        proven = false  // accepted is not proven: the backoff is reset only once it is
        // C2D at QoS 1, methods at QoS 0, as the C SDK subscribes (docs/protocols.md §2.3).
        client.subscribe(IoTHubTopic.c2dFilter(deviceID: device), qos: .atLeastOnce)
        client.subscribe(IoTHubTopic.methodsFilter, qos: .atMostOnce)
        owner.upDevicesInsert(device)
        owner.host.linkState(deviceID: device, .up)
        flush()
    }

    /// An accepted connection ended: `reason` nil after our own DISCONNECT (a token renewal).
    private func onDisconnect(_ reason: String?) {
        twinSubscribed = false
        owner.upDevicesRemove(device)
        let wasConnected = state == .connected
        let unanswered = publishOrder.compactMap { outstanding[$0] }
        // Everything unacknowledged goes back, in order, ahead of what waits.
        outstanding.removeAll()
        publishOrder.removeAll()
        if !unanswered.isEmpty { waiting.insert(contentsOf: unanswered, at: 0) }
        if wasConnected, reason != nil, !renewing, !proven, !unanswered.isEmpty {
            judge(unanswered, droppedAtMS: HubConnections.nowMS())
        }
        if renewing {
            // Reconnect from the next tick, not from inside the connection's event.
            state = .waiting
            retryAtMS = HubConnections.nowMS()
            owner.host.linkState(deviceID: device, .down, reason: "renewing the SAS token")
            return
        }
        guard state != .waiting else { return }  // a refused CONNACK already scheduled the retry
        fail(reason: reason ?? "disconnected")
    }

    /// A connection the hub accepted dropped before acknowledging anything, with `unanswered`
    /// messages out: the culprit is among them (see the type's comment).
    private func judge(_ unanswered: [Pending], droppedAtMS: Int64) {
        guard unanswered.count == 1, let only = unanswered.first else {
            // Which one? Send them one at a time from now on to find out.
            suspects.formUnion(unanswered.map(\.token))
            return
        }
        guard droppedAtMS - only.sentMS <= Self.attributionWindowMS else { return }
        suspects.insert(only.token)
        let count = refusals[only.token, default: 0] + 1
        guard count >= owner.settings.maxDeliveryAttempts else {
            refusals[only.token] = count
            owner.host.log(
                .warning,
                "device \(device): the hub closed the connection right after a message of \(only.payload.count) bytes, "
                    + "acknowledging nothing (\(count) of \(owner.settings.maxDeliveryAttempts) before it is refused)")
            return
        }
        if let last = lastRefusalMS, !acknowledgedSinceRefusal, droppedAtMS - last < Self.refusalCooldownMS {
            refusals[only.token] = count
            owner.host.log(
                .warning,
                "device \(device): the hub keeps closing the connection right after a message of "
                    + "\(only.payload.count) bytes (\(count) times), but it refused another one \((droppedAtMS - last) / 1000)s "
                    + "ago and has acknowledged nothing since: the hub may be refusing everything, so this one waits")
            return
        }
        lastRefusalMS = droppedAtMS
        acknowledgedSinceRefusal = false
        // The culprit is out of the way: the device's next message goes at the next attempt's
        // pace, not at the end of a long backoff.
        backoff.reset()
        waiting.removeAll { $0.token == only.token }
        forget(only.token)
        owner.host.log(
            .warning,
            "device \(device): the hub closed \(count) fresh connections in a row right after a message of "
                + "\(only.payload.count) bytes; reporting it refused (the gateway keeps it as a dead letter) and "
                + "sending the device's next messages")
        owner.host.delivered(token: only.token, status: .refused)
    }

    /// CONNACK return codes in the words libmosquitto and the Azure SDKs use for them.
    static func connackText(_ code: ConnAck.ReturnCode) -> String {
        switch code {
        case .unacceptableProtocolVersion: "Connection Refused: unacceptable protocol version."
        case .identifierRejected: "Connection Refused: identifier rejected."
        case .serverUnavailable: "Connection Refused: broker unavailable."
        case .badUsernameOrPassword: "Connection Refused: bad user name or password."
        case .notAuthorized: "Connection Refused: not authorised."
        default: "Connection Refused: unknown reason (\(code.rawValue))."
        }
    }

    private func onPublish(_ mid: UInt16) {
        guard let pending = outstanding.removeValue(forKey: mid) else { return }
        publishOrder.removeAll { $0 == mid }
        forget(pending.token)
        acknowledgedSinceRefusal = true
        if !proven {
            proven = true
            backoff.reset()
        }
        owner.host.delivered(token: pending.token, status: .ok)
        flush()
    }
}

extension HubConnections {
    /// False once `stop` began: links then hand nothing new to their connections.
    fileprivate var isRunning: Bool { io.isRunning }
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
        } else if topic.hasPrefix(IoTHubTopic.twinResponsePrefix) {
            // $iothub/twin/res/{status}/?$rid=…: only a refusal is worth a line.
            let status = topic.dropFirst(IoTHubTopic.twinResponsePrefix.count).prefix { $0 != "/" }
            if !status.hasPrefix("2") {
                host.log(.warning, "device \(device): the hub refused a reported-properties patch (status \(status))")
            }
        } else {
            host.log(.debug, "ignoring a hub message on \(topic)")
        }
    }
}
