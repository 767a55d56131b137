import CQpidProton
import FoundationEssentials
import Logging
import NIOCore

/// Proton's delivery outcomes (macros, which Swift imports as `Int32`).
enum ProtonOutcome {
    static let accepted = UInt64(PN_ACCEPTED)
    static let rejected = UInt64(PN_REJECTED)
    static let released = UInt64(PN_RELEASED)
    static let modified = UInt64(PN_MODIFIED)
}

/// Limits of the AMQP endpoint (docs/protocols.md §3.3).
enum AMQPLimits {
    /// CBS identities one connection may carry (IoT Hub's, per the C# SDK).
    static let maxIdentities = 999
    /// Links one identity may hold at once (the SDKs attach six).
    static let maxLinksPerIdentity = 16
    /// Links (including refused ones not yet detached by the client) on one connection.
    static let maxLinks = maxIdentities * 8 + 64
    /// The largest frame DevHub takes; bigger transfers come in several frames.
    static let maxFrameSize: UInt32 = 65_536
    static let channelMax: UInt16 = 2047
    /// Sent in `open`; proton closes a connection silent for that long.
    static let idleTimeoutMilliseconds: UInt32 = 240_000
    /// A message (a telemetry batch with its envelope) larger than this is refused.
    static let maxMessageBytes = DevHubLimits.maxPacketSize
    /// Credit DevHub gives each receiving link; it is refilled as messages are settled, so it
    /// also bounds the work (token checks, telemetry writes) one link has in flight.
    static let receiverCredit: Int32 = 100
    /// Messages queued for a sending link that has no credit.
    static let maxOutbox = 1000
    /// A connection that has not sent its protocol header, SASL and `open` by then is closed.
    static let handshakeTimeout: TimeAmount = .seconds(10)
    /// A connection with no valid CBS token by then is closed.
    static let authenticationTimeout: TimeAmount = .seconds(60)
}

/// One AMQP 1.0 connection to DevHub's IoT Hub endpoint (docs/protocols.md §3), from the first
/// byte to the close: a `ChannelHandler` behind TLS, on the connection's event loop.
///
/// The protocol header and SASL are ``AMQPSASLNegotiator``'s; then a proton connection driver
/// (`pn_connection_driver_t`, no SASL layer, no TLS) takes the stream. Proton is never called
/// from another thread: work that finishes elsewhere (token checks, telemetry writes) comes back
/// through the event loop, and every such entry point ends with ``process()``, which runs
/// proton's events and writes what proton produced.
///
/// Phases: negotiating (the negotiator) → proton (``driver`` set) → closed (``torn`` set, the
/// driver destroyed once no event is being handled).
///
/// Each device authenticated by a CBS put-token is an ``Identity`` with its own
/// ``DeviceConnection`` in the hub, sharing this connection's id; its links are checked
/// against it, and close when its token expires without renewal.
final class AMQPConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A link DevHub accepted (or refused and waits to hear detached), by what it carries.
    final class LinkState {
        enum Role: Equatable {
            /// `$cbs`: put-token requests (DevHub receives) and responses (DevHub sends).
            case cbsRequests, cbsResponses
            case telemetry, cloudToDevice
            /// Direct methods: requests DevHub sends, responses it receives.
            case methodRequests, methodResponses
            /// Twin: requests DevHub receives, responses (and desired patches) it sends.
            case twinRequests, twinResponses
            /// Refused at attach; kept until the client detaches it.
            case refused
        }

        let link: OpaquePointer
        let role: Role
        let deviceID: String?
        /// False once DevHub closed it or it went away: nothing is sent or settled on it then.
        var open = true
        /// Our sending links: whether the client asked for settled deliveries.
        var presettle = false
        var nextTag: UInt64 = 0
        /// Our receiving links: deliveries read and not yet settled.
        var unsettled: Int32 = 0
        /// Our sending links: encoded messages waiting for credit, with their C2D sequence.
        var outbox: [(bytes: [UInt8], c2dSequence: Int64?)] = []
        /// The C2D link: unsettled deliveries → the message's sequence.
        var c2dInFlight: [OpaquePointer: Int64] = [:]
        /// The client's address of the link's far end (CBS replies are matched on it).
        let remoteAddress: String?

        init(link: OpaquePointer, role: Role, deviceID: String?, remoteAddress: String?) {
            self.link = link
            self.role = role
            self.deviceID = deviceID
            self.remoteAddress = remoteAddress
        }
    }

    /// A device authenticated on this connection by its CBS token.
    final class Identity {
        let connection: DeviceConnection
        var expiry: Int64
        var expiryTimer: Scheduled<Void>?
        var links = Set<OpaquePointer>()
        var c2d = C2DDeliveryState()
        var c2dLink: LinkState?
        var methodRequestLink: LinkState?
        var twinResponseLink: LinkState?
        /// The device asked for desired-property patches (twin `PUT`).
        var desiredSubscribed = false

        init(connection: DeviceConnection, expiry: Int64) {
            self.connection = connection
            self.expiry = expiry
        }
    }

    /// A direct method request sent and not answered.
    struct MethodCall {
        var deviceID: String
        var requestID: String
        var sentAt: Date
    }

    let services: SessionServices
    let id: UInt64
    var logger: Logger
    var context: ChannelHandlerContext?
    var remoteDescription = "?"
    var negotiator = AMQPSASLNegotiator()
    var driver: UnsafeMutablePointer<pn_connection_driver_t>?
    var links: [OpaquePointer: LinkState] = [:]
    var identities: [String: Identity] = [:]
    /// Put-tokens for devices not yet on this connection whose check is running.
    var pendingNewIdentities = 0
    var everAuthenticated = false
    /// The client's `open` arrived.
    var remoteOpened = false
    /// DevHub's `$cbs` senders, oldest first: put-token responses go out on them.
    var cbsResponseLinks: [LinkState] = []
    /// Method calls by correlation id (its text form).
    var methodCalls: [String: MethodCall] = [:]
    var handshakeTimer: Scheduled<Void>?
    var authenticationTimer: Scheduled<Void>?
    var tickTimer: Scheduled<Void>?
    var tickDeadline: Int64 = 0
    /// Set while proton's events are handled: re-entrant calls of ``process()`` return, and the
    /// driver is not destroyed under the loop.
    var processing = false
    var processScheduled = false
    var torn = false

    init(services: SessionServices, id: UInt64) {
        self.services = services
        self.id = id
        self.logger = services.logger
        logger[metadataKey: "amqp"] = "\(id)"
    }

    var hub: Hub { services.hub }

    /// How the connection authenticated below CBS, for the control API.
    var authenticationDetail: String {
        negotiator.mechanism.map { "SASL \($0)" } ?? "no SASL"
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let address = context.channel.remoteAddress {
            remoteDescription = "\(address.ipAddress ?? "?"):\(address.port ?? 0)"
        }
        logger[metadataKey: "peer"] = "\(remoteDescription)"
        handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: AMQPLimits.handshakeTimeout) {
            [self] in
            if !remoteOpened {
                close(reason: "no AMQP open within \(AMQPLimits.handshakeTimeout.nanoseconds / 1_000_000_000) s")
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        tearDown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        tearDown()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // TLS failures and resets: the client's business. The C SDK drops TCP without `close`.
        logger.debug("connection error: \(error)")
        close(reason: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !torn else { return }
        let bytes = Array(unwrapInboundIn(data).readableBytesView)
        guard driver == nil else {
            feed(bytes)
            return
        }
        switch negotiator.feed(bytes) {
        case .reply(let reply):
            write(reply)
        case .startAMQP(let reply, let remaining):
            write(reply)
            startProton()
            feed(remaining)
        case .fail(let reply, let reason):
            write(reply)
            close(reason: reason)
        }
    }

    private func write(_ bytes: [UInt8]) {
        guard let context, !bytes.isEmpty else { return }
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    /// Closes the connection, logging `reason` if given.
    func close(reason: String?) {
        guard let context else { return }
        if let reason { logger.notice("closing AMQP connection: \(reason)") }
        context.close(promise: nil)
    }

    // MARK: Proton

    private func startProton() {
        guard let transport = pn_transport() else {
            close(reason: "cannot allocate a proton transport")
            return
        }
        pn_transport_set_server(transport)
        pn_transport_require_auth(transport, false)
        pn_transport_require_encryption(transport, false)  // TLS is NIO's, below
        pn_transport_set_max_frame(transport, AMQPLimits.maxFrameSize)
        _ = pn_transport_set_channel_max(transport, AMQPLimits.channelMax)
        pn_transport_set_idle_timeout(transport, AMQPLimits.idleTimeoutMilliseconds)
        let driver = UnsafeMutablePointer<pn_connection_driver_t>.allocate(capacity: 1)
        guard pn_connection_driver_init(driver, nil, transport) == 0 else {
            driver.deallocate()
            close(reason: "cannot start a proton connection driver")
            return
        }
        self.driver = driver
        logger.debug("AMQP connection open (\(authenticationDetail))")
        authenticationTimer = context?.eventLoop.assumeIsolated().scheduleTask(
            in: AMQPLimits.authenticationTimeout
        ) { [self] in
            if !everAuthenticated {
                close(
                    reason:
                        "no valid CBS token within \(AMQPLimits.authenticationTimeout.nanoseconds / 1_000_000_000) s")
            }
        }
        process()  // PN_CONNECTION_INIT binds the transport
    }

    /// Hands bytes to proton, as much as its input buffer takes each time.
    private func feed(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count, let driver, !torn {
            let buffer = pn_connection_driver_read_buffer(driver)
            guard buffer.size > 0, let start = buffer.start else {
                // Proton has stopped reading (the transport is closing): the rest is dropped.
                logger.debug(
                    "proton takes no more input: \(bytes.count - offset) bytes dropped (read closed: \(pn_connection_driver_read_closed(driver)))"
                )
                break
            }
            let count = min(buffer.size, bytes.count - offset)
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(start).copyMemory(from: raw.baseAddress! + offset, byteCount: count)
            }
            pn_connection_driver_read_done(driver, count)
            offset += count
            process()
        }
    }

    /// Runs proton's pending events, writes its output, and arms its timer. Every entry point
    /// into this connection (reads, timers, completions from other threads) ends here.
    func process() {
        guard let driver, !processing, !torn else { return }
        processing = true
        while let event = pn_connection_driver_next_event(driver) {
            handle(event)
        }
        processing = false
        if torn {
            destroyDriver()
            return
        }
        writeOutput()
        scheduleTick()
    }

    /// ``process()`` once the event loop has run what is already queued: completions that come
    /// together (a committed telemetry batch, token checks) share one pass and one flush.
    func processSoon() {
        guard !processScheduled, let context else { return }
        processScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            processScheduled = false
            process()
        }
    }

    private func writeOutput() {
        guard let driver, let context else { return }
        var wrote = false
        while true {
            let output = pn_connection_driver_write_buffer(driver)
            guard output.size > 0, let start = output.start else { break }
            var buffer = context.channel.allocator.buffer(capacity: output.size)
            buffer.writeBytes(UnsafeRawBufferPointer(start: start, count: output.size))
            context.write(wrapOutboundOut(buffer), promise: nil)
            pn_connection_driver_write_done(driver, output.size)
            wrote = true
        }
        if wrote { context.flush() }
        // A failed write closes the channel inside `flush()`: channelInactive → tearDown may
        // already have destroyed the driver (a peer killed mid-stream made DevHub read freed
        // memory here). Only the driver still installed may be used.
        guard let driver = self.driver, !torn else { return }
        if pn_connection_driver_write_closed(driver) {
            context.close(promise: nil)
        }
    }

    private static func nowMilliseconds() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds / 1_000_000) + 1
    }

    /// Proton's idle-timeout bookkeeping: it wants `pn_transport_tick` called by a deadline.
    private func scheduleTick() {
        guard let driver, let context else { return }
        let now = Self.nowMilliseconds()
        let deadline = pn_transport_tick(driver.pointee.transport, now)
        guard deadline > 0, deadline != tickDeadline else { return }
        tickDeadline = deadline
        tickTimer?.cancel()
        tickTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(max(1, deadline - now))) {
            [self] in
            tickDeadline = 0
            process()
        }
    }

    /// The channel is gone: the identities leave the hub, proton is freed (after the event loop
    /// that may be running returns).
    private func tearDown() {
        guard !torn else { return }
        torn = true
        handshakeTimer?.cancel()
        authenticationTimer?.cancel()
        tickTimer?.cancel()
        for identity in identities.values {
            identity.expiryTimer?.cancel()
            hub.detach(identity.connection, subscriptions: [:])
            logger.info("device \(identity.connection.deviceID) disconnected (AMQP connection closed)")
        }
        identities = [:]
        for state in links.values { state.open = false }
        links = [:]
        cbsResponseLinks = []
        methodCalls = [:]
        if !processing { destroyDriver() }
    }

    private func destroyDriver() {
        guard let driver else { return }
        pn_connection_driver_destroy(driver)
        driver.deallocate()
        self.driver = nil
    }

    // MARK: Events

    private func handle(_ event: OpaquePointer) {
        switch pn_event_type(event) {
        case PN_CONNECTION_REMOTE_OPEN:
            let connection = pn_event_connection(event)
            remoteOpened = true
            handshakeTimer?.cancel()
            pn_connection_set_container(connection, "DevHub")
            pn_connection_open(connection)
        case PN_CONNECTION_REMOTE_CLOSE:
            pn_connection_close(pn_event_connection(event))
        case PN_SESSION_REMOTE_OPEN:
            pn_session_open(pn_event_session(event))
        case PN_SESSION_REMOTE_CLOSE:
            guard let session = pn_event_session(event) else { return }
            for (link, _) in links where pn_link_session(link) == session { linkGone(link) }
            pn_session_close(session)
            pn_session_free(session)
        case PN_LINK_REMOTE_OPEN:
            if let link = pn_event_link(event) { attach(link) }
        case PN_LINK_REMOTE_CLOSE, PN_LINK_REMOTE_DETACH:
            if let link = pn_event_link(event), links[link] != nil { linkGone(link) }
        case PN_LINK_FLOW:
            if let link = pn_event_link(event), let state = links[link], state.open, pn_link_is_sender(link) {
                drain(state)
                if state.role == .cloudToDevice, let deviceID = state.deviceID, let identity = identities[deviceID] {
                    deliverC2D(identity)
                }
            }
        case PN_DELIVERY:
            if let delivery = pn_event_delivery(event) { self.delivery(delivery) }
        case PN_TRANSPORT_ERROR:
            let condition = pn_transport_condition(pn_event_transport(event))
            let name = pn_condition_get_name(condition).map { String(cString: $0) } ?? "?"
            let description = pn_condition_get_description(condition).map { String(cString: $0) } ?? ""
            logger.notice("AMQP transport error \(name): \(description.prefix(300))")
        case PN_TRANSPORT_CLOSED:
            close(reason: nil)
        default:
            break
        }
    }

    private static func address(_ terminus: OpaquePointer?) -> String? {
        pn_terminus_get_address(terminus).map { String(cString: $0) }
    }

    /// The client attached a link: accept it for a role, or refuse it with a condition.
    private func attach(_ link: OpaquePointer) {
        let weSend = pn_link_is_sender(link)
        let source = Self.address(pn_link_remote_source(link))
        let target = Self.address(pn_link_remote_target(link))
        pn_terminus_copy(pn_link_source(link), pn_link_remote_source(link))
        pn_terminus_copy(pn_link_target(link), pn_link_remote_target(link))
        guard links.count < AMQPLimits.maxLinks else {
            close(reason: "more than \(AMQPLimits.maxLinks) links")
            return
        }
        let address = (weSend ? source : target) ?? ""
        let role: LinkState.Role
        var deviceID: String?
        if address == "$cbs" {
            role = weSend ? .cbsResponses : .cbsRequests
        } else {
            guard let parsed = AMQPDeviceAddress(linkAddress: address) else {
                refuse(link, "amqp:not-found", "no node \"\(address.prefix(200))\" on this hub")
                return
            }
            if let host = parsed.hostName, host.lowercased() != hub.hubName.lowercased() {
                refuse(
                    link, "amqp:not-found",
                    "the address names hub \"\(host.prefix(100))\"; this hub is \"\(hub.hubName)\"")
                return
            }
            guard parsed.moduleID == nil else {
                refuse(link, "amqp:not-implemented", "module identities are not supported")
                return
            }
            guard let identity = identities[parsed.deviceID] else {
                refuse(
                    link, "amqp:unauthorized-access",
                    "no valid CBS token for device \(parsed.deviceID) on this connection (put-token to $cbs first)")
                return
            }
            guard identity.links.count < AMQPLimits.maxLinksPerIdentity else {
                refuse(
                    link, "amqp:resource-limit-exceeded",
                    "device \(parsed.deviceID) has \(AMQPLimits.maxLinksPerIdentity) links")
                return
            }
            switch (parsed.endpoint, weSend) {
            case (.telemetry, false): role = .telemetry
            case (.cloudToDevice, true): role = .cloudToDevice
            case (.methods, true): role = .methodRequests
            case (.methods, false): role = .methodResponses
            case (.twin, false): role = .twinRequests
            case (.twin, true): role = .twinResponses
            default:
                refuse(link, "amqp:not-allowed", "\(address.prefix(200)) cannot be attached in this direction")
                return
            }
            deviceID = parsed.deviceID
        }
        let state = LinkState(link: link, role: role, deviceID: deviceID, remoteAddress: weSend ? target : source)
        links[link] = state
        if weSend {
            pn_link_set_snd_settle_mode(link, pn_link_remote_snd_settle_mode(link))
            state.presettle = pn_link_remote_snd_settle_mode(link) == PN_SND_SETTLED
            pn_link_open(link)
        } else {
            pn_link_set_rcv_settle_mode(link, PN_RCV_FIRST)
            // The C SDK fails every send if this is 1024 or less (docs/protocols.md §3.4).
            pn_link_set_max_message_size(link, UInt64(AMQPLimits.maxMessageBytes))
            pn_link_open(link)
            pn_link_flow(link, AMQPLimits.receiverCredit)
        }
        if role == .cbsResponses { cbsResponseLinks.append(state) }
        guard let deviceID, let identity = identities[deviceID] else { return }
        identity.links.insert(link)
        switch role {
        case .cloudToDevice:
            identity.c2dLink = state
            deliverC2D(identity)
        case .methodRequests: identity.methodRequestLink = state
        case .twinResponses: identity.twinResponseLink = state
        default: break
        }
        logger.debug("device \(deviceID) attached \(role) link \(address)")
    }

    private func refuse(_ link: OpaquePointer, _ name: String, _ description: String) {
        logger.notice("refused link: \(description)")
        links[link] = LinkState(link: link, role: .refused, deviceID: nil, remoteAddress: nil)
        links[link]?.open = false
        pn_link_open(link)
        let condition = pn_link_condition(link)
        pn_condition_set_name(condition, name)
        pn_condition_set_description(condition, description)
        pn_link_close(link)
    }

    /// The client detached a link (or its session ended): forget it and free it.
    private func linkGone(_ link: OpaquePointer) {
        if let state = links.removeValue(forKey: link) {
            state.open = false
            if let deviceID = state.deviceID, let identity = identities[deviceID] {
                identity.links.remove(link)
                if identity.c2dLink === state {
                    identity.c2dLink = nil
                    // Unsettled messages go back to the queue, for the next link.
                    identity.c2d.inFlight.subtract(state.c2dInFlight.values)
                }
                if identity.methodRequestLink === state { identity.methodRequestLink = nil }
                if identity.twinResponseLink === state { identity.twinResponseLink = nil }
            }
        }
        if pn_link_state(link) & PN_LOCAL_CLOSED == 0 { pn_link_close(link) }
        pn_link_free(link)
    }

    /// Closes one of DevHub's links with an error condition (the client detaches it in reply).
    func closeLink(_ state: LinkState, _ name: String, _ description: String) {
        guard state.open else { return }
        state.open = false
        let condition = pn_link_condition(state.link)
        pn_condition_set_name(condition, name)
        pn_condition_set_description(condition, description)
        pn_link_close(state.link)
    }

    // MARK: Deliveries

    private func delivery(_ delivery: OpaquePointer) {
        guard let link = pn_delivery_link(delivery), let state = links[link], state.open else { return }
        if pn_link_is_sender(link) {
            settled(delivery, on: state)
            return
        }
        guard pn_delivery_readable(delivery) else { return }
        if pn_delivery_aborted(delivery) {
            pn_delivery_settle(delivery)
            refill(state)
            return
        }
        if pn_delivery_partial(delivery) {
            if pn_delivery_pending(delivery) > AMQPLimits.maxMessageBytes {
                closeLink(
                    state, "amqp:link:message-size-exceeded",
                    "a message over \(AMQPLimits.maxMessageBytes) bytes")
            }
            return
        }
        let size = pn_delivery_pending(delivery)
        var bytes = [UInt8](repeating: 0, count: size)
        let read = bytes.withUnsafeMutableBytes { raw in
            pn_link_recv(link, raw.baseAddress?.assumingMemoryBound(to: CChar.self), size)
        }
        pn_link_advance(link)
        state.unsettled += 1
        guard read >= 0 else {
            settle(delivery, on: state, ProtonOutcome.rejected, condition: ("amqp:decode-error", "unreadable transfer"))
            return
        }
        if read < size { bytes.removeLast(size - read) }
        switch state.role {
        case .cbsRequests: handlePutToken(bytes, delivery: delivery, on: state)
        case .telemetry: handleTelemetry(bytes, delivery: delivery, on: state)
        case .methodResponses: handleMethodResponse(bytes, delivery: delivery, on: state)
        case .twinRequests: handleTwinRequest(bytes, delivery: delivery, on: state)
        default:
            settle(delivery, on: state, ProtonOutcome.rejected, condition: ("amqp:not-allowed", "not a receiving link"))
        }
    }

    /// Settles a delivery DevHub received (if its link is still there) and refills the credit.
    func settle(
        _ delivery: OpaquePointer, on state: LinkState, _ outcome: UInt64, condition: (String, String)? = nil
    ) {
        guard state.open else { return }
        if let (name, description) = condition {
            let local = pn_disposition_condition(pn_delivery_local(delivery))
            pn_condition_set_name(local, name)
            pn_condition_set_description(local, description)
        }
        pn_delivery_update(delivery, outcome)
        pn_delivery_settle(delivery)
        state.unsettled -= 1
        refill(state)
    }

    private func refill(_ state: LinkState) {
        guard state.open else { return }
        let outstanding = pn_link_credit(state.link) + state.unsettled
        if outstanding <= AMQPLimits.receiverCredit / 2 {
            pn_link_flow(state.link, AMQPLimits.receiverCredit - outstanding)
        }
    }

    /// The client settled (or changed the state of) a delivery DevHub sent.
    private func settled(_ delivery: OpaquePointer, on state: LinkState) {
        guard pn_delivery_updated(delivery) else { return }
        let outcome = pn_delivery_remote_state(delivery)
        let terminal = [ProtonOutcome.accepted, ProtonOutcome.rejected, ProtonOutcome.released, ProtonOutcome.modified]
            .contains(outcome)
        guard terminal || pn_delivery_settled(delivery) else {
            pn_delivery_clear(delivery)
            return
        }
        if state.role == .cloudToDevice, let sequence = state.c2dInFlight.removeValue(forKey: delivery),
            let deviceID = state.deviceID
        {
            c2dSettled(sequence, outcome: terminal ? outcome : ProtonOutcome.accepted, deviceID: deviceID)
        }
        pn_delivery_settle(delivery)
    }

    /// Queues an encoded message on one of DevHub's sending links and sends what credit allows.
    func enqueue(_ bytes: [UInt8], on state: LinkState, c2dSequence: Int64? = nil) {
        guard state.open else { return }
        if state.outbox.count >= AMQPLimits.maxOutbox {
            logger.warning("dropping a message for a link without credit (\(AMQPLimits.maxOutbox) waiting)")
            return
        }
        state.outbox.append((bytes, c2dSequence))
        drain(state)
    }

    private func drain(_ state: LinkState) {
        while state.open, !state.outbox.isEmpty, pn_link_credit(state.link) > 0 {
            let (bytes, sequence) = state.outbox.removeFirst()
            var tag = state.nextTag.bigEndian
            state.nextTag += 1
            let delivery = withUnsafeBytes(of: &tag) { raw in
                pn_delivery(state.link, pn_dtag(raw.baseAddress!.assumingMemoryBound(to: CChar.self), 8))
            }
            guard let delivery else { return }
            _ = bytes.withUnsafeBytes { raw in
                pn_link_send(state.link, raw.baseAddress?.assumingMemoryBound(to: CChar.self), raw.count)
            }
            pn_link_advance(state.link)
            if state.presettle {
                pn_delivery_settle(delivery)
                if let sequence, let deviceID = state.deviceID {
                    c2dSettled(sequence, outcome: ProtonOutcome.accepted, deviceID: deviceID)
                }
            } else if let sequence {
                state.c2dInFlight[delivery] = sequence
            }
        }
    }
}
