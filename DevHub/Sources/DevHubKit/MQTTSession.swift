import FoundationEssentials
import IoTHubWire
import Logging
import MQTTCodec
import NIOCore

/// Limits every session applies.
public enum DevHubLimits {
    /// IoT Hub's 256 KiB message limit plus room for the topic, its property bag and headers.
    public static let maxPacketSize = IoTHubLimits.maxDeviceToCloudMessageBytes + 16_384
    /// A connection that has not sent CONNECT by then is closed.
    static let connectTimeout: TimeAmount = .seconds(10)
    /// Packets a client may pipeline after CONNECT before its CONNACK is sent.
    static let maxPacketsBeforeConnAck = 64
    /// Subscriptions a session may hold (IoT Hub documents five; its own SDKs use four).
    static let maxSubscriptions = 8
    /// QoS 1 messages DevHub sends to one device without their PUBACK.
    static let maxInflight = 100

    /// The time from now to `seconds` since 1970 (zero if past); nil beyond ten years, which
    /// no timer needs to wait for.
    static func delay(untilEpochSeconds seconds: Int64, now: Date = Date()) -> TimeAmount? {
        let milliseconds = ((Double(seconds) - now.timeIntervalSince1970) * 1000).rounded(.up)
        guard milliseconds < 10 * 365 * 86_400 * 1000 else { return nil }
        return .milliseconds(max(0, Int64(milliseconds)))
    }
}

/// What every session shares.
struct SessionServices: Sendable {
    let hub: Hub
    let dps: DPS
    let logger: Logger
}

/// The decision about a CONNECT, made by the hub or DPS endpoint.
enum ConnectDecision: Sendable {
    /// `tokenExpiry`: the SAS token's `se`; the connection is closed then.
    case hubDevice(DeviceIdentity, tokenExpiry: Int64)
    case dpsRegistration(DPSEnrollmentMatch)
    /// Refused with this CONNACK code; `reason` is for the log (it never holds a secret).
    case refuse(ConnAck.ReturnCode, String)
}

/// One MQTT connection, from the first byte to the close: a `ChannelHandler` running on the
/// connection's event loop, behind TLS.
///
/// Phases and their transitions:
/// - `awaitingConnect` → (CONNECT) `authenticating`; anything else → `closed`.
/// - `authenticating` → (the endpoint accepts) `open`, replaying pipelined packets;
///   (it refuses) CONNACK with the refusal code, then `closed`.
/// - `open` → (DISCONNECT, protocol error, keep-alive timeout, takeover, TCP close) `closed`.
///
/// Once the CONNECT is accepted the session has a ``Role``: an IoT Hub device
/// (`HubEndpoint.swift`) or a DPS registration (`DPSEndpoint.swift`), which decides what it
/// may subscribe and publish.
final class MQTTSession: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Phase { case awaitingConnect, authenticating, open, closed }

    enum Role {
        case hub(deviceID: String)
        case dps(registrationID: String, enrollment: DPSEnrollmentMatch)
    }

    /// What an unacknowledged QoS 1 message sent to the client was.
    enum Outbound {
        case c2d(Int64)
        case other
    }

    let services: SessionServices
    var logger: Logger
    var decoder = MQTTDecoder(maxPacketSize: DevHubLimits.maxPacketSize)
    var context: ChannelHandlerContext?
    var phase = Phase.awaitingConnect
    var role: Role?
    var bufferedPackets: [MQTTPacket] = []
    /// Granted subscriptions: topic filter → granted QoS.
    var subscriptions: [String: QoS] = [:]
    var nextPacketID: UInt16 = 0
    var inflight: [UInt16: Outbound] = [:]
    var keepAlive: UInt16 = 0
    var lastRead = NIODeadline.now()
    var connectTimer: Scheduled<Void>?
    var keepAliveTimer: Scheduled<Void>?
    var tokenExpiryTimer: Scheduled<Void>?
    /// Writes made while reading are flushed once, at `channelReadComplete`.
    var inRead = false
    var needsFlush = false
    var remoteDescription = "?"
    /// Whether the session reached `open` (its end then needs the endpoint's bookkeeping).
    var opened = false

    // IoT Hub device role (HubEndpoint.swift).
    var connection: DeviceConnection?
    var will: Connect.Will?
    var cleanSession = true
    var disconnectedCleanly = false
    var replaced = false
    var c2d = C2DDeliveryState()

    init(services: SessionServices) {
        self.services = services
        self.logger = services.logger
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let address = context.channel.remoteAddress {
            remoteDescription = "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        }
        logger[metadataKey: "peer"] = "\(remoteDescription)"
        connectTimer = context.eventLoop.assumeIsolated().scheduleTask(in: DevHubLimits.connectTimeout) {
            [self] in
            if phase == .awaitingConnect || phase == .authenticating {
                close(
                    reason: "no CONNECT within \(DevHubLimits.connectTimeout.nanoseconds / 1_000_000_000) s")
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        connection = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        let wasOpen = opened
        phase = .closed
        connectTimer?.cancel()
        keepAliveTimer?.cancel()
        tokenExpiryTimer?.cancel()
        if wasOpen, case .hub = role { hubSessionEnded() }
        if wasOpen, case .dps(let registrationID, _) = role {
            logger.debug("DPS registration \(registrationID) disconnected")
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard phase != .closed else { return }
        lastRead = .now()
        buffer.withUnsafeReadableBytes { decoder.append($0) }
        inRead = true
        defer { inRead = false }
        while phase != .closed {
            let packet: MQTTPacket?
            do {
                packet = try decoder.next()
            } catch {
                protocolViolation(error)
                return
            }
            guard let packet else { break }
            handle(packet)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // TLS handshake failures and resets land here; they are the client's business.
        logger.debug("connection error: \(error)")
        close(reason: nil)
    }

    // MARK: Packets

    private func handle(_ packet: MQTTPacket) {
        switch phase {
        case .awaitingConnect:
            guard case .connect(let connect) = packet else {
                close(reason: "first packet was \(packet.name), not CONNECT (MQTT 3.1.1 §3.1)")
                return
            }
            beginConnect(connect)
        case .authenticating:
            if case .connect = packet {
                close(reason: "second CONNECT (MQTT 3.1.1 §3.1.0)")
            } else if bufferedPackets.count >= DevHubLimits.maxPacketsBeforeConnAck {
                close(reason: "more than \(DevHubLimits.maxPacketsBeforeConnAck) packets before CONNACK")
            } else {
                bufferedPackets.append(packet)
            }
        case .open:
            dispatch(packet)
        case .closed:
            break
        }
    }

    private func protocolViolation(_ error: MQTTProtocolError) {
        if phase == .awaitingConnect, let code = error.connAckReturnCode {
            send(.connack(ConnAck(returnCode: code)))
        }
        close(reason: "malformed packet: \(error)")
    }

    private func beginConnect(_ connect: Connect) {
        guard let context else { return }
        phase = .authenticating
        keepAlive = connect.keepAlive
        cleanSession = connect.cleanSession
        let decision: EventLoopFuture<ConnectDecision>
        let username = connect.username ?? ""
        if let dpsUsername = DPSUsername(username) {
            logger[metadataKey: "registration"] = "\(dpsUsername.registrationID)"
            decision = services.dps.authenticate(connect, username: dpsUsername, on: context.eventLoop)
        } else if let hubUsername = HubUsername(username) {
            logger[metadataKey: "device"] = "\(hubUsername.deviceID)"
            decision = services.hub.authenticate(connect, username: hubUsername, on: context.eventLoop)
        } else {
            let shown = connect.username == nil ? "no username" : "username \"\(username.prefix(200))\""
            decision = context.eventLoop.makeSucceededFuture(
                .refuse(
                    .badUsernameOrPassword,
                    "\(shown) is neither {hub}/{deviceId}/?api-version=… nor {idScope}/registrations/{id}/api-version=…"
                ))
        }
        decision.assumeIsolated().whenComplete { [self] result in
            guard phase == .authenticating else { return }
            switch result {
            case .success(.hubDevice(let device, let tokenExpiry)):
                openHubSession(connect, device: device, tokenExpiry: tokenExpiry)
            case .success(.dpsRegistration(let match)):
                openDPSSession(connect, enrollment: match)
            case .success(.refuse(let code, let reason)):
                refuse(code, reason: reason)
            case .failure(let error):
                logger.error("cannot check CONNECT: \(error)")
                refuse(.serverUnavailable, reason: "internal error")
            }
        }
    }

    private func refuse(_ code: ConnAck.ReturnCode, reason: String) {
        logger.notice("refused CONNECT (CONNACK \(code.rawValue) \(code)): \(reason)")
        send(.connack(ConnAck(sessionPresent: false, returnCode: code)))
        close(reason: nil)
    }

    /// Moves to `open`: CONNACK, keep-alive, then the packets pipelined behind CONNECT.
    func finishConnect(sessionPresent: Bool) {
        guard context != nil else { return }
        phase = .open
        opened = true
        connectTimer?.cancel()
        send(.connack(ConnAck(sessionPresent: sessionPresent, returnCode: .accepted)))
        if keepAlive > 0 { scheduleKeepAliveCheck() }
        let pipelined = bufferedPackets
        bufferedPackets = []
        for packet in pipelined where phase == .open { dispatch(packet) }
        flushIfNeeded()
    }

    /// Closes the connection once nothing has been read for 1.5 × the keep-alive (the
    /// service's rule, MQTT 3.1.1 §3.1.2.10); checks twice per keep-alive period.
    private func scheduleKeepAliveCheck() {
        guard let context else { return }
        let limit = TimeAmount.milliseconds(Int64(keepAlive) * 1500)
        let period = TimeAmount.milliseconds(max(500, Int64(keepAlive) * 500))
        keepAliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: period) { [self] in
            guard phase == .open else { return }
            if NIODeadline.now() - lastRead > limit {
                close(reason: "keep-alive of \(keepAlive) s expired")
            } else {
                scheduleKeepAliveCheck()
            }
        }
    }

    private func dispatch(_ packet: MQTTPacket) {
        switch packet {
        case .publish(let publish):
            guard publish.qos != .exactlyOnce else {
                close(reason: "PUBLISH with QoS 2, which IoT Hub does not support")
                return
            }
            switch role {
            case .hub(let deviceID): handleHubPublish(publish, deviceID: deviceID)
            case .dps(let registrationID, let enrollment):
                handleDPSPublish(publish, registrationID: registrationID, enrollment: enrollment)
            case nil: close(reason: "PUBLISH without a role")
            }
        case .puback(let packetID):
            guard let outbound = inflight.removeValue(forKey: packetID) else { return }
            if case .c2d(let sequence) = outbound { c2dAcknowledged(sequence) }
        case .subscribe(let subscribe):
            handleSubscribe(subscribe)
        case .unsubscribe(let unsubscribe):
            for filter in unsubscribe.filters { subscriptions.removeValue(forKey: filter) }
            send(.unsuback(unsubscribe.packetID))
        case .pingreq:
            send(.pingresp)
        case .disconnect:
            disconnectedCleanly = true
            close(reason: nil)
        default:
            close(reason: "unexpected \(packet.name) from a client")
        }
    }

    private func handleSubscribe(_ subscribe: Subscribe) {
        var codes: [UInt8] = []
        var added: [String] = []
        for topic in subscribe.topics {
            guard let allowed = allowedSubscriptionPrefixes(),
                allowed.contains(where: { topic.filter.hasPrefix($0) })
            else {
                logger.notice(
                    "refused subscription to \"\(topic.filter)\": not one of this identity's topics")
                codes.append(SubAck.failure)
                continue
            }
            guard
                subscriptions[topic.filter] != nil || subscriptions.count < DevHubLimits.maxSubscriptions
            else {
                logger.notice(
                    "refused subscription to \"\(topic.filter)\": more than \(DevHubLimits.maxSubscriptions)")
                codes.append(SubAck.failure)
                continue
            }
            // QoS 2 is granted as QoS 1 (docs/protocols.md §2.3).
            let granted = min(topic.qos, .atLeastOnce)
            subscriptions[topic.filter] = granted
            codes.append(granted.rawValue)
            added.append(topic.filter)
        }
        send(.suback(SubAck(packetID: subscribe.packetID, returnCodes: codes)))
        if !added.isEmpty { subscriptionsAdded(added) }
    }

    /// The topic-filter prefixes this session may subscribe under.
    private func allowedSubscriptionPrefixes() -> [String]? {
        switch role {
        case .hub(let deviceID): Hub.subscriptionPrefixes(deviceID: deviceID)
        case .dps: [DPS.responsePrefix]
        case nil: nil
        }
    }

    private func subscriptionsAdded(_ filters: [String]) {
        if case .hub = role { deliverC2D() }
    }

    // MARK: Sending

    /// Sends an application message if the client subscribed to a matching filter, at the
    /// lower of the granted QoS and `maxQoS`. Returns the QoS used, or nil if not subscribed.
    @discardableResult
    func sendPublish(topic: String, payload: [UInt8], maxQoS: QoS, kind: Outbound = .other) -> QoS? {
        guard phase == .open else { return nil }
        var granted: QoS?
        for (filter, qos) in subscriptions where TopicFilter.matches(filter: filter, topic: topic) {
            granted = max(granted ?? .atMostOnce, qos)
        }
        guard let granted else {
            logger.debug("not sending \(topic): no matching subscription")
            return nil
        }
        let qos = min(granted, maxQoS)
        var packetID: UInt16?
        if qos == .atLeastOnce {
            guard let id = allocatePacketID() else { return nil }
            packetID = id
            inflight[id] = kind
        }
        send(.publish(Publish(topic: topic, payload: payload, qos: qos, packetID: packetID)))
        return qos
    }

    private func allocatePacketID() -> UInt16? {
        guard inflight.count < Int(UInt16.max) - 1 else { return nil }
        repeat {
            nextPacketID = nextPacketID == UInt16.max ? 1 : nextPacketID + 1
        } while inflight[nextPacketID] != nil
        return nextPacketID
    }

    func send(_ packet: MQTTPacket) {
        guard let context, context.channel.isActive else { return }
        var bytes: [UInt8] = []
        packet.encode(into: &bytes)
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.write(wrapOutboundOut(buffer), promise: nil)
        if inRead {
            needsFlush = true
        } else {
            context.flush()
        }
    }

    private func flushIfNeeded() {
        if needsFlush, !inRead {
            needsFlush = false
            context?.flush()
        }
    }

    /// Closes the connection, logging `reason` (a protocol or policy violation) if given.
    func close(reason: String?) {
        guard let context else { return }
        if let reason { logger.warning("closing connection: \(reason)") }
        // channelInactive finishes the bookkeeping for a session that was open.
        phase = .closed
        context.flush()
        context.close(promise: nil)
    }
}
