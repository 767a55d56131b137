import FoundationEssentials
import IoTHubWire
import Logging
import MQTTCodec
import NIOCore
import NIOPosix
import StrictJSON
import Synchronization

// The IoT Hub device endpoint (docs/protocols.md §2): authentication of `{hub}/{deviceId}/?…`
// connections, telemetry, C2D, direct methods and twins.

/// The IoT Hub CONNECT username `{hubHostName}/{deviceId}/?api-version=…` (docs/protocols.md §2.1),
/// or the module form `{hub}/{deviceId}/{moduleId}/?…`. The host and ids are not encoded.
struct HubUsername: Equatable {
    var hostName: String
    var deviceID: String
    var moduleID: String?
    /// The query after `?`, decoded (`api-version`, `DeviceClientType`, `model-id`, …).
    var query: [String: String]

    init?(_ username: String) {
        // `{path}/?{query}`, or `{path}/` with no query.
        let path: Substring
        if let marker = username.firstRange(of: "/?") {
            path = username[..<marker.lowerBound]
            query = PropertyBag.query(ofTopic: String(username[marker.lowerBound...]))
        } else if username.hasSuffix("/") {
            path = username.dropLast()
            query = [:]
        } else {
            return nil
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, !parts.contains(where: \.isEmpty) else {
            return nil
        }
        hostName = String(parts[0])
        deviceID = String(parts[1])
        moduleID = parts.count == 3 ? String(parts[2]) : nil
        guard Hub.isValidDeviceID(deviceID) else { return nil }
    }
}

/// What the hub asks of the connection a device is on, whatever its transport (an MQTT
/// session holds one device, an AMQP connection up to 999). Called on the connection's event
/// loop only, through ``DeviceConnection/execute(_:)``.
protocol DeviceTransport: AnyObject {
    /// Sends the device's queued C2D messages that are not in flight, if it listens for them.
    func deliverC2D(deviceID: String)
    /// Sends a direct method request; false if the device does not listen for methods.
    func sendMethodRequest(deviceID: String, name: String, requestID: String, payload: [UInt8]) -> Bool
    /// Pushes a desired-properties patch (with its `$version`) if the device asked for them.
    func pushDesired(deviceID: String, version: Int, patch: [UInt8])
    /// Ends the device's presence on this connection: replaced by a newer connection, or deleted.
    func dropDevice(deviceID: String, reason: String)
}

/// A live device on a connection, as the rest of DevHub sees it. Everything that touches the
/// transport runs on the connection's event loop through ``execute(_:)``.
final class DeviceConnection: Sendable {
    /// `mqtt` or `amqp`.
    enum Transport: String, Sendable {
        case mqtt, amqp
    }

    let deviceID: String
    /// This device's presence (a new one each time it connects or authenticates).
    let id: UInt64
    /// The network connection: devices that share an AMQP connection share this id.
    let connectionID: UInt64
    let transport: Transport
    /// How the connection authenticated below the device: `SASL MSSBCBS`, `no SASL`, … (AMQP).
    let connectionDetail: String?
    let channel: any Channel
    let endpoint: NIOLoopBound<any DeviceTransport>
    let connectedAt: Date
    let remoteAddress: String
    let cleanSession: Bool
    /// Milliseconds since 1970 of the last packet, and the D2C messages received.
    let lastActivity = Atomic<Int64>(0)
    let messagesReceived = Atomic<Int>(0)
    /// The expiry (seconds since 1970) of the SAS token the device last proved itself with.
    let tokenExpiry = Atomic<Int64>(0)

    init(
        deviceID: String, id: UInt64, connectionID: UInt64? = nil, transport: Transport = .mqtt,
        connectionDetail: String? = nil, channel: any Channel, endpoint: NIOLoopBound<any DeviceTransport>,
        remoteAddress: String, cleanSession: Bool, tokenExpiry: Int64
    ) {
        self.deviceID = deviceID
        self.id = id
        self.connectionID = connectionID ?? id
        self.transport = transport
        self.connectionDetail = connectionDetail
        self.channel = channel
        self.endpoint = endpoint
        self.connectedAt = Date()
        self.remoteAddress = remoteAddress
        self.cleanSession = cleanSession
        self.tokenExpiry.store(tokenExpiry, ordering: .relaxed)
        noteActivity()
    }

    func noteActivity() {
        lastActivity.store(Int64(Date().timeIntervalSince1970 * 1000), ordering: .relaxed)
    }

    func execute(_ body: @escaping @Sendable (any DeviceTransport) -> Void) {
        channel.eventLoop.execute { body(self.endpoint.value) }
    }
}

/// A device's answer to a direct method.
public struct MethodResult: Sendable, Equatable {
    public var status: Int
    public var payload: [UInt8]
}

/// The IoT Hub: its registry lives in the store; this holds the live connections, the
/// persistent sessions' subscriptions and the direct-method calls in flight.
final class Hub: Sendable {
    let hubName: String
    let store: DevHubStore
    let threadPool: NIOThreadPool
    let telemetry: TelemetryWriter
    let logger: Logger

    private struct PendingMethod: Sendable {
        var deviceID: String
        var promise: EventLoopPromise<MethodResult>
    }

    /// Connections by device id (at most one each: a new CONNECT replaces the old one);
    /// subscriptions kept for devices that connected with CleanSession 0; method calls by `$rid`.
    private struct State {
        var connections: [String: DeviceConnection] = [:]
        var persistentSubscriptions: [String: [String: QoS]] = [:]
        var pendingMethods: [String: PendingMethod] = [:]
        var nextID: UInt64 = 0
    }

    private let state = Mutex(State())

    init(
        hubName: String, store: DevHubStore, threadPool: NIOThreadPool, telemetry: TelemetryWriter,
        logger: Logger
    ) {
        self.hubName = hubName
        self.store = store
        self.threadPool = threadPool
        self.telemetry = telemetry
        self.logger = logger
    }

    /// IoT Hub device ids: 1–128 ASCII letters, digits and `-.%_*?!(),:=@$'`.
    static func isValidDeviceID(_ id: String) -> Bool {
        guard (1...128).contains(id.utf8.count) else { return false }
        let allowed = Set("-.%_*?!(),:=@$'".utf8)
        return id.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || allowed.contains(byte)
        }
    }

    /// What a device may subscribe to (docs/protocols.md §2.2): its own C2D topic, methods, twin.
    static func subscriptionPrefixes(deviceID: String) -> [String] {
        [
            IoTHubTopic.c2dPrefix(deviceID: deviceID), IoTHubTopic.methodRequestPrefix,
            IoTHubTopic.twinResponsePrefix, IoTHubTopic.twinDesiredPrefix,
        ]
    }

    func nextID() -> UInt64 {
        state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
    }

    // MARK: Authentication

    func authenticate(_ connect: Connect, username: HubUsername, on eventLoop: any EventLoop)
        -> EventLoopFuture<ConnectDecision>
    {
        func refuse(_ code: ConnAck.ReturnCode, _ reason: String) -> EventLoopFuture<ConnectDecision> {
            eventLoop.makeSucceededFuture(.refuse(code, reason))
        }
        guard username.hostName.lowercased() == hubName.lowercased() else {
            return refuse(
                .notAuthorized, "username names hub \"\(username.hostName)\"; this hub is \"\(hubName)\"")
        }
        guard username.moduleID == nil else {
            return refuse(.notAuthorized, "module identities are not supported")
        }
        guard connect.clientID == username.deviceID else {
            return refuse(
                .identifierRejected,
                "client id \"\(connect.clientID)\" is not the device id in the username")
        }
        guard let password = connect.password else {
            return refuse(.notAuthorized, "no password (X.509 client certificates are not supported)")
        }
        guard let text = String(validating: password, as: UTF8.self), let token = SASToken(text) else {
            return refuse(.badUsernameOrPassword, "the password is not a SAS token")
        }
        let deviceID = username.deviceID
        let expectedResource = "\(hubName)/devices/\(deviceID)"
        return threadPool.runIfActive(eventLoop: eventLoop) { [store] in
            guard let device = try store.device(deviceID) else {
                return .refuse(.notAuthorized, "no device \"\(deviceID)\" in the registry")
            }
            switch SASVerifier.verify(token, expectedResource: expectedResource, keys: device.keys) {
            case .valid: return .hubDevice(device, tokenExpiry: token.expiry)
            case let verdict: return .refuse(.notAuthorized, "SAS token refused: \(verdict)")
            }
        }
    }

    // MARK: Connections

    /// Registers a new connection. Returns whether a persistent session existed, its
    /// subscriptions, and the connection this one replaces (the caller closes it).
    func attach(_ connection: DeviceConnection) -> (
        sessionPresent: Bool, subscriptions: [String: QoS], replaced: DeviceConnection?
    ) {
        state.withLock { state in
            let previous = state.connections.updateValue(connection, forKey: connection.deviceID)
            if connection.cleanSession {
                state.persistentSubscriptions.removeValue(forKey: connection.deviceID)
                return (false, [:], previous)
            }
            let stored = state.persistentSubscriptions[connection.deviceID]
            return (stored != nil, stored ?? [:], previous)
        }
    }

    /// Forgets a closed connection (unless it was already replaced); keeps the subscriptions of
    /// a persistent session. Direct methods waiting on it fail at once.
    func detach(_ connection: DeviceConnection, subscriptions: [String: QoS]) {
        let failed: [PendingMethod] = state.withLock { state in
            guard state.connections[connection.deviceID]?.id == connection.id else { return [] }
            state.connections.removeValue(forKey: connection.deviceID)
            if !connection.cleanSession {
                state.persistentSubscriptions[connection.deviceID] = subscriptions
            }
            let rids = state.pendingMethods.filter { $0.value.deviceID == connection.deviceID }.map(\.key)
            return rids.compactMap { state.pendingMethods.removeValue(forKey: $0) }
        }
        for pending in failed {
            pending.promise.fail(
                DevHubError(.deviceNotOnline, "device \(connection.deviceID) disconnected"))
        }
    }

    func connection(_ deviceID: String) -> DeviceConnection? {
        state.withLock { $0.connections[deviceID] }
    }

    var connections: [DeviceConnection] {
        state.withLock { Array($0.connections.values) }
    }

    /// Closes the device's connection, if any (the device was deleted).
    func disconnect(_ deviceID: String, reason: String) {
        connection(deviceID)?.execute { transport in
            transport.dropDevice(deviceID: deviceID, reason: reason)
        }
    }

    // MARK: Direct methods

    func invokeMethod(
        deviceID: String, name: String, payload: [UInt8], timeout: TimeAmount,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<MethodResult> {
        guard let connection = connection(deviceID) else {
            return eventLoop.makeFailedFuture(
                DevHubError(.deviceNotOnline, "device \(deviceID) is not connected"))
        }
        let rid = String(nextID(), radix: 16)
        let promise = eventLoop.makePromise(of: MethodResult.self)
        state.withLock { $0.pendingMethods[rid] = PendingMethod(deviceID: deviceID, promise: promise) }
        let timer = eventLoop.scheduleTask(in: timeout) { [self] in
            removePending(rid)?.promise.fail(
                DevHubError(
                    .timeout,
                    "device \(deviceID) did not answer method \(name) within \(timeout.nanoseconds / 1_000_000_000) s"
                ))
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        logger.info("invoking method \(name) on \(deviceID) ($rid \(rid))")
        connection.execute { [self] transport in
            if !transport.sendMethodRequest(deviceID: deviceID, name: name, requestID: rid, payload: payload) {
                removePending(rid)?.promise.fail(
                    DevHubError(.deviceNotOnline, "device \(deviceID) has not subscribed to direct methods"))
            }
        }
        return promise.futureResult
    }

    private func removePending(_ rid: String) -> PendingMethod? {
        state.withLock { $0.pendingMethods.removeValue(forKey: rid) }
    }

    /// A device answered `$rid`; answers from another device than the one asked are ignored.
    func completeMethod(deviceID: String, requestID: String, result: MethodResult) {
        let pending: PendingMethod? = state.withLock { state in
            guard state.pendingMethods[requestID]?.deviceID == deviceID else { return nil }
            return state.pendingMethods.removeValue(forKey: requestID)
        }
        guard let pending else {
            logger.notice(
                "device \(deviceID) answered unknown or expired method request $rid \(requestID)")
            return
        }
        pending.promise.succeed(result)
    }

    // MARK: Cloud-to-device messages and desired properties

    func sendC2D(
        deviceID: String, properties: [MessageProperty], payload: [UInt8], on eventLoop: any EventLoop
    ) -> EventLoopFuture<C2DMessage> {
        threadPool.runIfActive(eventLoop: eventLoop) { [store] in
            guard try store.device(deviceID) != nil else {
                throw DevHubError(.notFound, "no device \(deviceID)")
            }
            return try store.enqueueC2D(
                deviceID: deviceID, messageID: UUID().uuidString.lowercased(), properties: properties,
                payload: payload)
        }.map { [self] message in
            connection(deviceID)?.execute { $0.deliverC2D(deviceID: deviceID) }
            return message
        }
    }

    func patchDesired(deviceID: String, patch: JSONValue, on eventLoop: any EventLoop)
        -> EventLoopFuture<DeviceTwin>
    {
        guard patch.isObject else {
            return eventLoop.makeFailedFuture(
                DevHubError(.badRequest, "a desired-properties patch is a JSON object"))
        }
        return threadPool.runIfActive(eventLoop: eventLoop) { [store] in
            guard try store.device(deviceID) != nil else {
                throw DevHubError(.notFound, "no device \(deviceID)")
            }
            return try store.patchTwin(deviceID, desired: true, patch: patch)
        }.map { [self] twin in
            var pushed = patch
            pushed.set("$version", .int(twin.desiredVersion))
            let bytes = pushed.utf8Bytes
            connection(deviceID)?.execute { transport in
                transport.pushDesired(deviceID: deviceID, version: twin.desiredVersion, patch: bytes)
            }
            return twin
        }
    }
}

/// Where a session stands with its C2D queue: messages sent and not yet acknowledged, and
/// whether a fetch from the store is running (or another one is wanted after it).
struct C2DDeliveryState {
    var inFlight = Set<Int64>()
    var fetching = false
    var fetchAgain = false
    /// Settlements recorded so far. Fetches and settlements run on the thread pool concurrently:
    /// a fetch that read the queue before a settlement was written can list the settled message
    /// as still queued after it left `inFlight` (and would send a rejected message again), so a
    /// fetch during which this changed is discarded and repeated.
    var settlements = 0
}

// MARK: - The device side of a session

extension MQTTSession: DeviceTransport {
    func deliverC2D(deviceID: String) { deliverC2D() }

    func sendMethodRequest(deviceID: String, name: String, requestID: String, payload: [UInt8]) -> Bool {
        sendMethodRequest(name: name, requestID: requestID, payload: payload)
    }

    func pushDesired(deviceID: String, version: Int, patch: [UInt8]) {
        sendPublish(topic: IoTHubTopic.twinDesired(version: version), payload: patch, maxQoS: .atMostOnce)
    }

    func dropDevice(deviceID: String, reason: String) {
        replaced = true
        close(reason: reason)
    }
}

extension MQTTSession {
    func openHubSession(_ connect: Connect, device: DeviceIdentity, tokenExpiry: Int64) {
        guard let context else { return }
        let connection = DeviceConnection(
            deviceID: device.deviceID, id: services.hub.nextID(), channel: context.channel,
            endpoint: NIOLoopBound(self, eventLoop: context.eventLoop), remoteAddress: remoteDescription,
            cleanSession: connect.cleanSession, tokenExpiry: tokenExpiry)
        self.connection = connection
        role = .hub(deviceID: device.deviceID)
        will = connect.will
        let (sessionPresent, restored, replaced) = services.hub.attach(connection)
        subscriptions = restored
        if let replaced {
            replaced.execute { transport in
                transport.dropDevice(
                    deviceID: device.deviceID,
                    reason: "a new connection for device \(device.deviceID) replaced this one")
            }
        }
        logger.info(
            "device \(device.deviceID) connected (clean session \(connect.cleanSession), session present \(sessionPresent))"
        )
        finishConnect(sessionPresent: sessionPresent)
        scheduleTokenExpiry(tokenExpiry, deviceID: device.deviceID)
        if !subscriptions.isEmpty { deliverC2D() }
    }

    /// IoT Hub closes a connection whose SAS token expires (docs/protocols.md §3.4): over MQTT a
    /// token cannot be renewed on the connection, so the device reconnects with a new one.
    private func scheduleTokenExpiry(_ expiry: Int64, deviceID: String) {
        guard let context, let delay = DevHubLimits.delay(untilEpochSeconds: expiry) else { return }
        tokenExpiryTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            close(reason: "the SAS token of device \(deviceID) expired at \(expiry)")
        }
    }

    /// The connection closed: leave the hub, and publish the Will unless the device said goodbye.
    func hubSessionEnded() {
        guard let connection else { return }
        // The connection refers back to this session: drop it, or both (and the channel) leak.
        self.connection = nil
        services.hub.detach(connection, subscriptions: subscriptions)
        logger.info("device \(connection.deviceID) disconnected")
        if let will, !disconnectedCleanly, !replaced,
            let bag = telemetryPropertyBag(topic: will.topic, deviceID: connection.deviceID)
        {
            // IoT Hub forwards the Will as telemetry marked iothub-MessageType=Will (§2.1).
            var properties = PropertyBag.decode(bag)
            properties.append(MessageProperty("iothub-MessageType", "Will"))
            services.hub.telemetry.append(
                TelemetryRecord(
                    deviceID: connection.deviceID, topic: will.topic, properties: properties,
                    payload: will.payload,
                    qos: will.qos.rawValue),
                promise: nil)
        }
    }

    /// The property bag of a telemetry topic of `deviceID`, or nil if `topic` is not one.
    func telemetryPropertyBag(topic: String, deviceID: String) -> Substring? {
        IoTHubTopic.telemetryPropertyBag(topic: topic, deviceID: deviceID)
    }

    func handleHubPublish(_ publish: Publish, deviceID: String) {
        connection?.noteActivity()
        let topic = publish.topic
        if let bag = telemetryPropertyBag(topic: topic, deviceID: deviceID) {
            connection?.messagesReceived.add(1, ordering: .relaxed)
            let record = TelemetryRecord(
                deviceID: deviceID, topic: topic, properties: PropertyBag.decode(bag),
                payload: publish.payload,
                qos: publish.qos.rawValue)
            guard let packetID = publish.packetID, let context else {
                services.hub.telemetry.append(record, promise: nil)
                return
            }
            // PUBACK once the message is on disk.
            let promise = context.eventLoop.makePromise(of: Void.self)
            services.hub.telemetry.append(record, promise: promise)
            promise.futureResult.assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success: if phase == .open { send(.puback(packetID)) }
                case .failure: close(reason: "telemetry could not be stored")
                }
            }
            return
        }
        let handler: (Publish, String) -> Void
        if topic.hasPrefix(IoTHubTopic.methodResponsePrefix) {
            handler = handleMethodResponse
        } else if topic.hasPrefix(IoTHubTopic.twinGetPrefix) {
            handler = handleTwinGet
        } else if topic.hasPrefix(IoTHubTopic.twinReportedPrefix) {
            handler = handleReportedPatch
        } else if topic.hasPrefix("devices/") {
            close(reason: "device \(deviceID) published to \"\(topic)\", not one of its own topics")
            return
        } else {
            close(reason: "device \(deviceID) published to unsupported topic \"\(topic)\"")
            return
        }
        if let packetID = publish.packetID { send(.puback(packetID)) }
        handler(publish, deviceID)
    }

    private func handleMethodResponse(_ publish: Publish, _ deviceID: String) {
        guard let (status, rid) = IoTHubTopic.parseMethodResponse(publish.topic) else {
            logger.notice("ignoring malformed method response topic \"\(publish.topic)\"")
            return
        }
        services.hub.completeMethod(
            deviceID: deviceID, requestID: rid,
            result: MethodResult(status: status, payload: publish.payload))
    }

    private func handleTwinGet(_ publish: Publish, _ deviceID: String) {
        guard let context else { return }
        let rid = PropertyBag.query(ofTopic: publish.topic)["rid"] ?? ""
        let store = services.hub.store
        services.hub.threadPool.runIfActive(eventLoop: context.eventLoop) { try store.twin(deviceID) }
            .assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let twin):
                    sendPublish(
                        topic: IoTHubTopic.twinResponse(status: 200, requestID: rid),
                        payload: twin.deviceDocument.utf8Bytes, maxQoS: .atMostOnce)
                case .failure(let error):
                    logger.error("cannot read twin of \(deviceID): \(error)")
                    sendPublish(
                        topic: IoTHubTopic.twinResponse(status: 500, requestID: rid), payload: [],
                        maxQoS: .atMostOnce)
                }
            }
    }

    private func handleReportedPatch(_ publish: Publish, _ deviceID: String) {
        guard let context else { return }
        let rid = PropertyBag.query(ofTopic: publish.topic)["rid"] ?? ""
        guard let patch = try? JSONValue(parsing: publish.payload), patch.isObject else {
            sendPublish(topic: IoTHubTopic.twinResponse(status: 400, requestID: rid), payload: [], maxQoS: .atMostOnce)
            return
        }
        let store = services.hub.store
        services.hub.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try store.patchTwin(deviceID, desired: false, patch: patch)
        }.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let twin):
                sendPublish(
                    topic: IoTHubTopic.twinResponse(status: 204, requestID: rid, version: twin.reportedVersion),
                    payload: [],
                    maxQoS: .atMostOnce)
            case .failure(let error):
                logger.error("cannot patch twin of \(deviceID): \(error)")
                sendPublish(
                    topic: IoTHubTopic.twinResponse(status: 500, requestID: rid), payload: [], maxQoS: .atMostOnce)
            }
        }
    }

    /// Sends `$iothub/methods/POST/{name}/?$rid={rid}`; false if the device has no method
    /// subscription (IoT Hub then answers 404, device not online).
    func sendMethodRequest(name: String, requestID: String, payload: [UInt8]) -> Bool {
        sendPublish(
            topic: IoTHubTopic.methodRequest(name: name, requestID: requestID),
            payload: payload,
            maxQoS: .atMostOnce) != nil
    }

    // MARK: C2D

    private var c2dTopicPrefix: String? {
        guard case .hub(let deviceID) = role else { return nil }
        return IoTHubTopic.c2dPrefix(deviceID: deviceID)
    }

    /// Sends the queued C2D messages not already in flight, if the device subscribed to them.
    func deliverC2D() {
        guard phase == .open, case .hub(let deviceID) = role, let context,
            let prefix = c2dTopicPrefix, subscriptions.keys.contains(where: { $0.hasPrefix(prefix) })
        else { return }
        if c2d.fetching {
            c2d.fetchAgain = true
            return
        }
        c2d.fetching = true
        let store = services.hub.store
        let limit = DevHubLimits.maxInflight
        let settlements = c2d.settlements
        services.hub.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try store.c2dMessages(deviceID: deviceID, queuedOnly: true, limit: limit)
        }.assumeIsolated().whenComplete { [self] result in
            c2d.fetching = false
            guard phase == .open else { return }
            guard c2d.settlements == settlements else {
                deliverC2D()
                return
            }
            switch result {
            case .success(let messages):
                for message in messages where !c2d.inFlight.contains(message.sequence) {
                    guard c2d.inFlight.count < limit else { break }
                    var properties = [
                        MessageProperty("$.mid", message.messageID),
                        MessageProperty("$.to", "/devices/\(deviceID)/messages/deviceBound"),
                    ]
                    properties += message.properties
                    let topic = prefix + PropertyBag.encode(properties)
                    guard
                        let qos = sendPublish(
                            topic: topic, payload: message.payload, maxQoS: .atLeastOnce,
                            kind: .c2d(message.sequence))
                    else { break }
                    c2d.inFlight.insert(message.sequence)
                    logger.info("delivered C2D message \(message.messageID) to \(deviceID)")
                    if qos == .atMostOnce { c2dAcknowledged(message.sequence) }
                }
            case .failure(let error):
                logger.error("cannot read the C2D queue of \(deviceID): \(error)")
            }
            if c2d.fetchAgain {
                c2d.fetchAgain = false
                deliverC2D()
            }
        }
    }

    /// The device acknowledged a C2D message (PUBACK means complete, §2.3).
    func c2dAcknowledged(_ sequence: Int64) {
        guard let context else { return }
        let store = services.hub.store
        services.hub.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try store.markC2DDelivered(sequence: sequence)
        }.assumeIsolated().whenComplete { [self] _ in
            c2d.settlements += 1
            c2d.inFlight.remove(sequence)
            if c2d.inFlight.isEmpty { deliverC2D() }
        }
    }
}
