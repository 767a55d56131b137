import CQpidProton
import GatehousePluginKit
import HubTLS
import StrictJSON

#if canImport(Glibc)
    import Glibc
#endif

/// One AMQP connection to IoT Hub carrying up to `devicesPerConnection` device identities
/// (docs/protocols.md §3): TCP, TLS (`TLSSocket`), the SASL exchange (`SASLNegotiation`), then
/// qpid-proton's engine through a `pn_connection_driver_t` fed by the I/O thread. One session
/// carries the `$cbs` links and every device's links (docs/protocols.md §3.4).
///
/// Confined to the I/O thread: proton's objects are used from that thread only, and every
/// event is handled inside `handle(revents:)`, `pump()` or `tick(nowMS:)`.
///
/// Connection states:
///
///     idle(retry at) ──connect──▶ tls ──handshake──▶ sasl ──outcome 0──▶ amqp ──(error, close)──▶ idle
///                                  └─────────────(failure)─────────┴───────────────────────────────▶ idle
///
/// The backoff between attempts is jittered and reset once the hub accepted a put-token on the
/// connection (it proved itself).
final class HubConnection {
    enum Phase: Equatable {
        case idle
        case tls
        case sasl
        case amqp
    }

    /// What a link is for.
    enum LinkRole {
        case cbsSender, cbsReceiver
        case telemetry(String), cloudToDevice(String), methodRequests(String), methodResponses(String)

        var device: String? {
            switch self {
            case .cbsSender, .cbsReceiver: nil
            case .telemetry(let id), .cloudToDevice(let id), .methodRequests(let id), .methodResponses(let id): id
            }
        }
    }

    /// A command handed to the host's gate, waiting for its result.
    enum PendingCommand {
        case cloudToDevice(device: String, delivery: OpaquePointer)
        case method(device: String, correlationID: AMQPScalar)
    }

    /// Credit a device's receivers keep open: C2D messages and method requests in the gate at
    /// once (IoT Hub's C2D queue holds 50 a device).
    static let receiverCredit: UInt32 = 16
    /// CBS responses in flight at once (the C SDK's figure).
    static let cbsCredit: UInt32 = 10_000
    /// Put-tokens in flight at once on one connection. proton keeps every delivery it ever had
    /// at once in a pool for the connection's life, with its buffer, and the attach frames of
    /// the devices whose tokens were answered together sit in the transport's output buffer,
    /// which does not shrink: 995 put-tokens sent together left about 1.6 KB a device behind
    /// (measured with heaptrack, docs/benchmarks.md "Upstream transports"). Sixty-four at a time
    /// still pipeline the hub's round trips.
    static let putTokensInFlight = 64
    /// Telemetry messages in flight at once on one connection (the host bounds each device's
    /// own share, `[outbox] inflight_per_device`), for the same reason: proton's delivery pool
    /// keeps the connection's high-water mark. 512 at once cover a hub round trip of 100 ms at
    /// 5,000 msg/s.
    static let telemetryInFlight = 512
    /// How long a put-token or an attach may go unanswered.
    static let requestTimeoutMS: Int64 = 30_000
    /// A link up this long, with nothing rejected, has proved itself.
    static let provenAfterMS: Int64 = 10_000
    /// After a refusal, the next one needs an accepted message in between, or this long.
    static let refusalCooldownMS: Int64 = 300_000

    let index: Int
    unowned let hub: AMQPHub
    let codec: MessageCodec
    private(set) var phase = Phase.idle
    var devices: [String: DeviceSession] = [:]

    private var socket: TLSSocket?
    private var sasl: SASLNegotiation?
    private var driver: UnsafeMutablePointer<pn_connection_driver_t>?
    private var session: OpaquePointer?
    private var cbsSender: OpaquePointer?
    private var cbsReceiver: OpaquePointer?
    private var linkRoles: [OpaquePointer: LinkRole] = [:]
    private var putTokens: [UInt64: String] = [:]
    /// Telemetry messages sent on this connection and not yet settled.
    private var telemetryUnsettled = 0
    /// Devices with messages waiting for room among `telemetryInFlight`, in the order they
    /// waited (`throttledHead` is the first not yet woken).
    private var throttled: [DeviceSession] = []
    private var throttledHead = 0
    private var nextMessageID: UInt64 = 0
    private(set) var commands: [UInt64: PendingCommand] = [:]
    /// SASL bytes to write before the AMQP stream starts.
    private var rawOutput: [UInt8] = []
    private var receiveBuffer = [UInt8](repeating: 0, count: 16 * 1024)
    private var blockedOnWrite = false
    private var remoteOpened = false
    /// Why the connection is failing (an AMQP error condition, a socket error), for the log.
    private var failure: String?

    var backoff = Backoff(initial: .milliseconds(500), maximum: .seconds(60))
    var retryAtMS: Int64 = 0
    private var connectStartedMS: Int64 = 0
    private var proven = false

    var settings: AMQPTransport.Settings { hub.settings }
    var host: PluginHost { hub.host }

    init(index: Int, hub: AMQPHub, codec: MessageCodec) {
        self.index = index
        self.hub = hub
        self.codec = codec
    }

    deinit { releaseTransport() }

    var label: String { "hub connection \(index + 1)" }

    // MARK: - The socket, for the poll loop

    var descriptor: Int32? { socket.map { $0.fd >= 0 ? $0.fd : nil } ?? nil }

    var pollEvents: Int16 {
        guard let socket else { return 0 }
        switch phase {
        case .tls: return socket.pollEvents
        default: return Int16(POLLIN) | (blockedOnWrite || hasOutput ? Int16(POLLOUT) : 0)
        }
    }

    /// Whether OpenSSL holds bytes poll(2) cannot see: the loop then does not wait.
    var hasBufferedInput: Bool { socket?.hasPending ?? false }

    private var hasOutput: Bool {
        if !rawOutput.isEmpty { return true }
        guard let driver, phase == .amqp else { return false }
        return pn_connection_driver_write_buffer(driver).size > 0
    }

    // MARK: - Connecting

    func connect(nowMS: Int64) {
        guard phase == .idle else { return }
        connectStartedMS = nowMS
        failure = nil
        do throws(TransportFailure) {
            socket = try TLSSocket(
                address: settings.address, port: settings.port, context: hub.tls.pointer, serverName: settings.hostname)
            phase = .tls
        } catch {
            fail(error.description, nowMS: nowMS)
        }
    }

    /// After the TLS handshake: SASL (or straight to AMQP).
    private func secured(nowMS: Int64) {
        if settings.sasl == .none {
            startAMQP(leftover: [])
        } else {
            let negotiation = SASLNegotiation(mode: settings.sasl)
            rawOutput.append(contentsOf: negotiation.opening)
            sasl = negotiation
            phase = .sasl
        }
    }

    private func startAMQP(leftover: [UInt8]) {
        sasl = nil
        let driver = UnsafeMutablePointer<pn_connection_driver_t>.allocate(capacity: 1)
        driver.initialize(to: pn_connection_driver_t())
        guard pn_connection_driver_init(driver, nil, nil) == 0, let connection = driver.pointee.connection,
            let transport = driver.pointee.transport
        else {
            driver.deallocate()
            fail("cannot set up an AMQP connection", nowMS: AMQPHub.nowMS())
            return
        }
        self.driver = driver
        phase = .amqp
        remoteOpened = false
        pn_connection_set_container(connection, "gatehouse-\(getpid())-\(index + 1)")
        pn_connection_set_hostname(connection, settings.hostname)
        pn_transport_set_idle_timeout(transport, pn_millis_t(settings.idleTimeoutMS))
        pn_connection_open(connection)
        let session = pn_session(connection)
        self.session = session
        pn_session_open(session)
        let sender = pn_sender(session, CBS.senderLinkName)
        pn_terminus_set_address(pn_link_source(sender), CBS.node)
        pn_terminus_set_address(pn_link_target(sender), CBS.node)
        pn_link_open(sender)
        let receiver = pn_receiver(session, CBS.receiverLinkName)
        pn_terminus_set_address(pn_link_source(receiver), CBS.node)
        pn_terminus_set_address(pn_link_target(receiver), CBS.node)
        pn_link_open(receiver)
        pn_link_flow(receiver, Int32(Self.cbsCredit))
        cbsSender = sender
        cbsReceiver = receiver
        linkRoles[sender!] = .cbsSender
        linkRoles[receiver!] = .cbsReceiver
        if !leftover.isEmpty { feed(leftover) }
        // Put-tokens go out at once, `putTokensInFlight` at a time: proton holds them until the
        // hub gives the CBS link credit.
        authorizeWaiting(nowMS: AMQPHub.nowMS())
    }

    /// Sends the put-tokens of devices that wait for their first one, as far as
    /// `putTokensInFlight` allows (each answer calls it again).
    private func authorizeWaiting(nowMS: Int64) {
        for device in devices.values where device.state == .waiting {
            guard putTokens.count < Self.putTokensInFlight else { return }
            authorize(device, nowMS: nowMS)
        }
    }

    /// The connection failed: free everything of it, put every device back to waiting (their
    /// messages kept), and schedule the next attempt.
    private func fail(_ reason: String, nowMS: Int64) {
        let wasOpen = phase == .amqp && remoteOpened
        releaseTransport()
        let delay = backoff.next()
        retryAtMS = nowMS + delay.milliseconds
        host.log(
            wasOpen ? .warning : .info,
            "\(label) to \(settings.address):\(settings.port): \(reason); \(devices.count) device(s) on it, "
                + "retry in \(delay.milliseconds) ms")
        for device in devices.values {
            device.requeueOutstanding()
            device.dropLinks()
            device.renewal = nil
            device.state = .waiting
            hub.reportDown(device, reason: "\(reason); retry in \(delay.milliseconds) ms")
        }
    }

    /// Frees the socket and proton's objects (links, deliveries and all).
    private func releaseTransport() {
        socket?.close()
        socket = nil
        sasl = nil
        rawOutput.removeAll()
        if let driver {
            pn_connection_driver_destroy(driver)
            driver.deinitialize(count: 1)
            driver.deallocate()
        }
        driver = nil
        session = nil
        cbsSender = nil
        cbsReceiver = nil
        linkRoles.removeAll()
        putTokens.removeAll()
        telemetryUnsettled = 0
        for device in throttled { device.throttled = false }
        throttled = []
        throttledHead = 0
        commands.removeAll()
        nextMessageID = 0
        blockedOnWrite = false
        phase = .idle
        proven = false
    }

    // MARK: - I/O

    /// What poll(2) reported for the socket (or that OpenSSL holds input).
    func handle(revents: Int16, nowMS: Int64) {
        guard let socket else { return }
        if phase == .tls {
            do throws(TransportFailure) {
                if revents & Int16(POLLERR | POLLHUP) != 0, socket.phase == .connecting {
                    _ = try socket.advance()
                    throw TransportFailure("connection refused or reset")
                }
                if try socket.advance() { secured(nowMS: nowMS) } else { return }
            } catch {
                fail("cannot connect: \(error.description)", nowMS: nowMS)
                return
            }
        }
        if revents & Int16(POLLOUT) != 0 { blockedOnWrite = false }
        readAvailable(nowMS: nowMS)
    }

    /// Reads what the socket holds into SASL or proton, and handles the events.
    private func readAvailable(nowMS: Int64) {
        while let socket, phase == .sasl || phase == .amqp {
            if phase == .sasl {
                let io = receiveBuffer.withUnsafeMutableBytes { socket.read(into: $0) }
                guard case .bytes(let count) = io else {
                    if io != .wouldBlock { fail("the hub closed the connection during SASL (\(io))", nowMS: nowMS) }
                    return
                }
                for step in sasl?.receive(receiveBuffer[0..<count]) ?? [] {
                    switch step {
                    case .send(let bytes): rawOutput.append(contentsOf: bytes)
                    case .failed(let reason):
                        fail("SASL: \(reason)", nowMS: nowMS)
                        return
                    case .done(let leftover):
                        // proton's transport (no SASL layer) writes the AMQP header itself.
                        startAMQP(leftover: leftover)
                    }
                }
                continue
            }
            guard let driver else { return }
            let buffer = pn_connection_driver_read_buffer(driver)
            guard buffer.size > 0, let start = buffer.start else { break }
            let io = socket.read(into: UnsafeMutableRawBufferPointer(start: start, count: buffer.size))
            switch io {
            case .bytes(let count):
                pn_connection_driver_read_done(driver, count)
                pump()
            case .wouldBlock:
                pump()
                return
            case .closed:
                failure = failure ?? "the hub closed the connection"
                pn_connection_driver_read_close(driver)
                pump()
                return
            case .failed(let reason):
                failure = failure ?? reason
                pn_connection_driver_close(driver)
                pump()
                return
            }
        }
    }

    private func feed(_ bytes: [UInt8]) {
        guard let driver else { return }
        var offset = 0
        while offset < bytes.count {
            let buffer = pn_connection_driver_read_buffer(driver)
            guard buffer.size > 0, let start = buffer.start else { break }
            let count = min(buffer.size, bytes.count - offset)
            bytes[offset..<(offset + count)].withUnsafeBytes {
                UnsafeMutableRawBufferPointer(start: start, count: count).copyMemory(from: $0)
            }
            pn_connection_driver_read_done(driver, count)
            offset += count
            pump()
        }
    }

    /// Writes what SASL or proton has for the peer, as far as the socket takes it.
    func flush(nowMS: Int64) {
        guard let socket, phase == .sasl || phase == .amqp, !blockedOnWrite else { return }
        while !rawOutput.isEmpty {
            let io = rawOutput.withUnsafeBytes { socket.write($0) }
            switch io {
            case .bytes(let count): rawOutput.removeFirst(count)
            case .wouldBlock:
                blockedOnWrite = true
                return
            case .closed, .failed:
                fail("cannot write to the hub (\(io))", nowMS: nowMS)
                return
            }
        }
        guard let driver, phase == .amqp else { return }
        pump()
        while true {
            let buffer = pn_connection_driver_write_buffer(driver)
            guard buffer.size > 0, let start = buffer.start else { break }
            switch socket.write(UnsafeRawBufferPointer(start: start, count: buffer.size)) {
            case .bytes(let count): pn_connection_driver_write_done(driver, count)
            case .wouldBlock:
                blockedOnWrite = true
                return
            case .closed, .failed(_):
                failure = failure ?? "cannot write to the hub"
                pn_connection_driver_write_close(driver)
                pn_connection_driver_read_close(driver)
            }
            pump()
            if self.driver == nil { return }
        }
        if self.driver != nil, pn_connection_driver_finished(driver) {
            fail(failure ?? "the connection closed", nowMS: nowMS)
        }
    }

    /// Handles every event proton has.
    func pump() {
        guard let driver else { return }
        while let event = pn_connection_driver_next_event(driver) {
            handle(event)
            if self.driver == nil { return }
        }
    }

    // MARK: - Timers

    func tick(nowMS: Int64) {
        switch phase {
        case .idle:
            if !devices.isEmpty, nowMS >= retryAtMS { connect(nowMS: nowMS) }
            return
        case .tls, .sasl:
            if nowMS - connectStartedMS > Self.requestTimeoutMS {
                fail("no answer within \(Self.requestTimeoutMS / 1000) s", nowMS: nowMS)
            }
            return
        case .amqp:
            break
        }
        guard let driver, let transport = driver.pointee.transport else { return }
        _ = pn_transport_tick(transport, pn_timestamp_t(nowMS))
        pump()
        for device in devices.values { tick(device, nowMS: nowMS) }
    }

    private func tick(_ device: DeviceSession, nowMS: Int64) {
        switch device.state {
        case .authorizing, .attaching:
            if nowMS - device.requestSentMS > Self.requestTimeoutMS {
                refuse(device, reason: "the hub did not answer within \(Self.requestTimeoutMS / 1000) s", nowMS: nowMS)
            }
        case .refused, .waiting:
            if nowMS >= device.retryAtMS { authorize(device, nowMS: nowMS) }
        case .up:
            if let renewal = device.renewal, nowMS - device.requestSentMS > Self.requestTimeoutMS {
                putTokens[renewal] = nil
                device.renewal = nil
                device.renewAtMS = nowMS + 10_000
                host.log(.warning, "device \(device.deviceID): no answer to its token renewal; trying again")
            } else if device.renewal == nil, nowMS >= device.renewAtMS {
                authorize(device, nowMS: nowMS)
            }
            if !device.proven, device.outstanding.isEmpty, nowMS - device.upSinceMS >= Self.provenAfterMS {
                device.proven = true
                device.backoff.reset()
            }
            if nowMS >= device.pausedUntilMS { transmit(device) }
        }
    }

    // MARK: - Devices

    /// A device assigned to this connection.
    func add(_ device: DeviceSession, nowMS: Int64) {
        devices[device.deviceID] = device
        switch phase {
        case .idle: if nowMS >= retryAtMS { connect(nowMS: nowMS) }
        case .amqp: authorize(device, nowMS: nowMS)
        case .tls, .sasl: break
        }
    }

    /// Closes a device's links and forgets it; returns it with its unsettled messages.
    func remove(_ deviceID: String) -> DeviceSession? {
        guard let device = devices.removeValue(forKey: deviceID) else { return nil }
        telemetryUnsettled -= device.outstanding.count
        device.throttled = false  // its place in `throttled` is skipped: it is no longer ours
        closeLinks(of: device)
        if let renewal = device.renewal { putTokens[renewal] = nil }
        if case .authorizing(let request) = device.state { putTokens[request] = nil }
        return device
    }

    /// Closes the connection politely (stop, or no device left): AMQP close, then the socket.
    func close() {
        if let driver, phase == .amqp, let connection = driver.pointee.connection {
            pn_connection_close(connection)
            pump()
        }
    }

    func shutDown() {
        releaseTransport()
    }

    /// Sends a put-token for `device`: its first (then its links follow) or a renewal. With
    /// `putTokensInFlight` already out it sends nothing: the device keeps its state and the next
    /// answer (`authorizeWaiting`) or tick tries again.
    func authorize(_ device: DeviceSession, nowMS: Int64) {
        guard phase == .amqp, let sender = cbsSender, putTokens.count < Self.putTokensInFlight else { return }
        let renewing = device.state == .up
        let expiry = Int64(time(nil)) + settings.sasTTL  // seconds since the epoch (the SAS `se`)
        let token: String
        switch host.signSAS(deviceID: device.deviceID, resource: device.address.audience, expiry: expiry) {
        case .failure(let error):
            refuse(
                device, reason: "the gateway would not sign a SAS token for this device (\(error.status))", nowMS: nowMS
            )
            return
        case .success(let signed):
            token = signed
        }
        let id = nextMessageID
        nextMessageID += 1
        var bytes = codec.encode(PutTokenRequest(messageID: id, audience: device.address.audience, token: token))
        codec.wipe()
        send(bytes, tag: id, on: sender)
        bytes.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        putTokens[id] = device.deviceID
        device.requestSentMS = nowMS
        if renewing {
            device.renewal = id
        } else {
            device.state = .authorizing(request: id)
            hub.reportConnecting(device)
        }
    }

    /// The hub's answer to a put-token.
    private func tokenAnswered(_ response: PutTokenResponse, nowMS: Int64) {
        guard let deviceID = putTokens.removeValue(forKey: response.correlationID) else { return }
        defer { authorizeWaiting(nowMS: nowMS) }
        guard let device = devices[deviceID] else { return }
        let renewal = device.renewal == response.correlationID
        guard response.succeeded else {
            let reason =
                "the hub refused the device's token (\(response.statusCode)"
                + (response.statusDescription.isEmpty ? ")" : ": \(response.statusDescription))")
            if renewal { device.renewal = nil }
            refuse(device, reason: reason, nowMS: nowMS)
            return
        }
        if !proven {
            proven = true
            backoff.reset()
        }
        // Renew at 80% of the lifetime, as the SDKs do (docs/protocols.md §3.4).
        device.renewAtMS = nowMS + settings.sasTTL * 800
        if renewal {
            device.renewal = nil
            return
        }
        guard case .authorizing(let request) = device.state, request == response.correlationID else { return }
        attach(device, nowMS: nowMS)
    }

    /// Opens the device's links once its token is in force (docs/protocols.md §3.2, §3.4).
    private func attach(_ device: DeviceSession, nowMS: Int64) {
        guard let session else { return }
        let address = device.address
        let telemetry = pn_sender(session, address.telemetryLinkName)!
        pn_terminus_set_address(pn_link_target(telemetry), address.telemetry)
        pn_link_set_snd_settle_mode(telemetry, PN_SND_UNSETTLED)
        pn_link_set_rcv_settle_mode(telemetry, PN_RCV_FIRST)
        pn_link_open(telemetry)

        let c2d = pn_receiver(session, address.cloudToDeviceLinkName)!
        pn_terminus_set_address(pn_link_source(c2d), address.cloudToDevice)
        pn_link_set_rcv_settle_mode(c2d, PN_RCV_FIRST)
        pn_link_open(c2d)
        pn_link_flow(c2d, Int32(Self.receiverCredit))

        if settings.methods.attaches(address.deviceID) {
            let requests = pn_receiver(session, address.methodRequestsLinkName)!
            pn_terminus_set_address(pn_link_source(requests), address.methods)
            pn_terminus_set_address(pn_link_target(requests), "requests")
            methodLinkProperties(requests, address: address)
            pn_link_open(requests)
            pn_link_flow(requests, Int32(Self.receiverCredit))

            let responses = pn_sender(session, address.methodResponsesLinkName)!
            pn_terminus_set_address(pn_link_source(responses), "responses")
            pn_terminus_set_address(pn_link_target(responses), address.methods)
            methodLinkProperties(responses, address: address)
            pn_link_open(responses)
            device.methodRequests = requests
            device.methodResponses = responses
            linkRoles[requests] = .methodRequests(device.deviceID)
            linkRoles[responses] = .methodResponses(device.deviceID)
        }

        device.telemetry = telemetry
        device.cloudToDevice = c2d
        linkRoles[telemetry] = .telemetry(device.deviceID)
        linkRoles[c2d] = .cloudToDevice(device.deviceID)
        device.state = .attaching
        device.requestSentMS = nowMS
    }

    /// `com.microsoft:channel-correlation-id` (the same on both method links) and the API
    /// version, as the C SDK attaches them.
    private func methodLinkProperties(_ link: OpaquePointer, address: HubAddress) {
        let properties = pn_link_properties(link)
        pn_data_put_map(properties)
        pn_data_enter(properties)
        withBytes("com.microsoft:channel-correlation-id") { pn_data_put_symbol(properties, $0) }
        withBytes(address.methodsChannelCorrelationID) { pn_data_put_string(properties, $0) }
        withBytes("com.microsoft:api-version") { pn_data_put_symbol(properties, $0) }
        withBytes(settings.apiVersion) { pn_data_put_string(properties, $0) }
        pn_data_exit(properties)
    }

    /// The device's token or links were refused (or timed out): its links close, its messages
    /// wait, it tries again after its own backoff. The connection and its other devices go on.
    func refuse(_ device: DeviceSession, reason: String, nowMS: Int64) {
        // A put-token that timed out frees its place among those in flight.
        if case .authorizing(let request) = device.state { putTokens[request] = nil }
        if let renewal = device.renewal { putTokens[renewal] = nil }
        closeLinks(of: device)
        telemetryUnsettled -= device.outstanding.count
        device.requeueOutstanding()
        device.renewal = nil
        device.state = .refused
        let delay = device.backoff.next()
        device.retryAtMS = nowMS + delay.milliseconds
        host.log(.warning, "device \(device.deviceID): \(reason); retry in \(delay.milliseconds) ms")
        hub.reportDown(device, reason: "\(reason); retry in \(delay.milliseconds) ms")
    }

    /// Detaches and frees the device's links; its commands in the gate can no longer be settled.
    private func closeLinks(of device: DeviceSession) {
        for link in device.links {
            linkRoles[link] = nil
            pn_link_close(link)
            pn_link_free(link)
        }
        device.dropLinks()
        commands = commands.filter { _, command in
            switch command {
            case .cloudToDevice(let owner, _), .method(let owner, _): owner != device.deviceID
            }
        }
    }

    // MARK: - Telemetry

    /// Queues an encoded message for `device` and sends what it may.
    func enqueue(_ pending: DeviceSession.Pending, for device: DeviceSession) {
        device.waiting.append(pending)
        if device.state == .up, AMQPHub.nowMS() >= device.pausedUntilMS { transmit(device) }
    }

    /// Hands the device's waiting messages to proton, in order, as far as `telemetryInFlight`
    /// allows (proton holds what the link's credit does not yet allow; the host bounds what a
    /// device has in flight). A device that has to wait is woken, in turn, by `settled`.
    func transmit(_ device: DeviceSession) {
        guard device.state == .up, let link = device.telemetry, hub.isRunning else { return }
        guard !device.waiting.isEmpty else { return }
        let room = Self.telemetryInFlight - telemetryUnsettled
        let count = min(room, device.waiting.count)
        for next in device.waiting.prefix(count) {
            send(next.bytes, tag: next.token, on: link)
            device.outstanding[next.token] = next
            device.sendOrder.append(next.token)
        }
        telemetryUnsettled += max(count, 0)
        if count == device.waiting.count {
            device.waiting = []
        } else {
            if count > 0 { device.waiting.removeFirst(count) }
            if !device.throttled {
                device.throttled = true
                throttled.append(device)
            }
        }
    }

    /// Gives the room a settlement freed to the devices that waited for it, in turn.
    private func wakeThrottled() {
        while throttledHead < throttled.count, telemetryUnsettled < Self.telemetryInFlight {
            let device = throttled[throttledHead]
            throttledHead += 1
            device.throttled = false
            if devices[device.deviceID] === device, device.state == .up { transmit(device) }
        }
        if throttledHead == throttled.count {
            throttled.removeAll(keepingCapacity: true)
            throttledHead = 0
        } else if throttledHead > 256, throttledHead * 2 > throttled.count {
            throttled.removeFirst(throttledHead)
            throttledHead = 0
        }
    }

    private func send(_ bytes: [UInt8], tag: UInt64, on link: OpaquePointer) {
        var tagBytes = tag.bigEndian
        withUnsafeBytes(of: &tagBytes) { raw in
            _ = pn_delivery(link, pn_dtag(raw.baseAddress!.assumingMemoryBound(to: CChar.self), 8))
        }
        bytes.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { _ = pn_link_send(link, $0.baseAddress, raw.count) }
        }
        pn_link_advance(link)
    }

    private static func tag(of delivery: OpaquePointer) -> UInt64? {
        let tag = pn_delivery_tag(delivery)
        guard tag.size == 8, let start = tag.start else { return nil }
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: UnsafeRawBufferPointer(start: start, count: 8)) }
        return UInt64(bigEndian: value)
    }

    /// The hub settled a telemetry message (docs/architecture.md, "Failure model"):
    /// - `accepted`: delivered; it may leave the outbox.
    /// - `released`, or `modified` without undeliverable-here, or a `rejected` whose condition
    ///   says the hub is busy or throttling: not taken this time; sent again after a pause.
    /// - `rejected` otherwise (or `modified` undeliverable-here): the hub refuses this message.
    ///   After `max_delivery_attempts` rejections in a row it is reported refused and becomes a
    ///   dead letter; a device whose previous refusal had no accepted message since (and is
    ///   under 5 minutes old) keeps it waiting instead: a hub that refuses everything must not
    ///   turn the outbox into dead letters.
    private func settled(_ delivery: OpaquePointer, device: DeviceSession, nowMS: Int64) {
        guard let token = Self.tag(of: delivery) else {
            pn_delivery_settle(delivery)
            return
        }
        let state = pn_delivery_remote_state(delivery)
        let remote = pn_delivery_remote(delivery)
        let condition = Self.condition(pn_disposition_condition(remote))
        let undeliverableHere = pn_disposition_is_undeliverable(remote)
        pn_delivery_settle(delivery)
        guard let pending = device.settle(token) else { return }
        telemetryUnsettled -= 1
        defer { wakeThrottled() }
        switch Int(state) {
        case Int(PN_ACCEPTED):
            device.rejections[token] = nil
            device.acceptedSinceRefusal = true
            if !device.proven {
                device.proven = true
                device.backoff.reset()
            }
            host.delivered(token: token, status: .ok)
        case Int(PN_REJECTED) where !Self.isTransient(condition.name),
            Int(PN_MODIFIED) where undeliverableHere:
            rejected(pending, device: device, condition: condition, nowMS: nowMS)
        default:
            // Released, modified, a transient rejection, or settled with no outcome: again, later.
            device.waiting.insert(pending, at: 0)
            let delay = device.backoff.next()
            device.pausedUntilMS = nowMS + delay.milliseconds
            host.log(
                .info,
                "device \(device.deviceID): the hub did not take a message (\(Self.outcomeName(state))"
                    + (condition.name.isEmpty ? "" : ", \(condition.name)") + "); sending it again in "
                    + "\(delay.milliseconds) ms")
        }
    }

    private func rejected(
        _ pending: DeviceSession.Pending, device: DeviceSession, condition: (name: String, text: String), nowMS: Int64
    ) {
        let count = device.rejections[pending.token, default: 0] + 1
        let why =
            condition.name.isEmpty ? "" : " (\(condition.name)\(condition.text.isEmpty ? "" : ": \(condition.text)"))"
        let cooling =
            device.lastRefusalMS.map { !device.acceptedSinceRefusal && nowMS - $0 < Self.refusalCooldownMS } ?? false
        guard count >= settings.maxDeliveryAttempts, !cooling else {
            device.rejections[pending.token] = count
            device.waiting.insert(pending, at: 0)
            let delay = device.backoff.next()
            device.pausedUntilMS = nowMS + delay.milliseconds
            host.log(
                .warning,
                "device \(device.deviceID): the hub rejected a message of \(pending.bytes.count) bytes\(why), "
                    + (cooling
                        ? "but it refused another one recently and accepted nothing since: the hub may be "
                            + "refusing everything, so this one waits"
                        : "\(count) of \(settings.maxDeliveryAttempts) before it is refused"))
            return
        }
        device.rejections[pending.token] = nil
        device.lastRefusalMS = nowMS
        device.acceptedSinceRefusal = false
        host.log(
            .warning,
            "device \(device.deviceID): the hub rejected a message of \(pending.bytes.count) bytes \(count) times\(why); "
                + "reporting it refused (the gateway keeps it as a dead letter) and sending the device's next messages")
        host.delivered(token: pending.token, status: .refused)
    }

    /// Conditions that say "not now" rather than "never this message".
    static func isTransient(_ name: String) -> Bool {
        let lowered = name.lowercased()
        return lowered == "amqp:resource-limit-exceeded" || lowered == "amqp:internal-error"
            || lowered.hasPrefix("com.microsoft:server-busy") || lowered.hasPrefix("com.microsoft:timeout")
            || lowered.contains("throttl") || lowered.contains("quota")
    }

    static func outcomeName(_ state: UInt64) -> String {
        switch Int(state) {
        case Int(PN_ACCEPTED): "accepted"
        case Int(PN_REJECTED): "rejected"
        case Int(PN_RELEASED): "released"
        case Int(PN_MODIFIED): "modified"
        case 0: "no outcome"
        default: "outcome 0x\(String(state, radix: 16))"
        }
    }

    static func condition(_ condition: OpaquePointer?) -> (name: String, text: String) {
        guard let condition, pn_condition_is_set(condition) else { return ("", "") }
        return (
            pn_condition_get_name(condition).map { String(cString: $0) } ?? "",
            pn_condition_get_description(condition).map { String(cString: $0) } ?? ""
        )
    }

    // MARK: - Commands

    /// The gate's answer (`command_result`) for a command of this connection.
    /// C2D: 2xx → `accepted` (complete); 4xx (the gate refused it) → `rejected`, with the reason;
    /// anything else (the site could not take it) → `released`, so the hub offers it again.
    /// Methods: the response with the status and body.
    func commandResult(token: UInt64, status: Int32, body: [UInt8]) {
        guard let command = commands.removeValue(forKey: token) else { return }
        switch command {
        case .cloudToDevice(let deviceID, let delivery):
            let link = pn_delivery_link(delivery)
            let outcome = Self.cloudToDeviceOutcome(status: status)
            if outcome == UInt64(PN_REJECTED) {
                let condition = pn_disposition_condition(pn_delivery_local(delivery))
                pn_condition_set_name(condition, "amqp:not-allowed")
                pn_condition_set_description(condition, Self.refusalText(status: status, body: body))
                host.log(
                    .info, "device \(deviceID): a cloud-to-device message refused by the gateway (\(status)): rejected")
            } else if outcome == UInt64(PN_RELEASED) {
                host.log(.info, "device \(deviceID): a cloud-to-device message not delivered (\(status)): released")
            }
            pn_delivery_update(delivery, outcome)
            pn_delivery_settle(delivery)
            if let link { pn_link_flow(link, 1) }
        case .method(let deviceID, let correlationID):
            guard let device = devices[deviceID], let link = device.methodResponses else { return }
            let response = codec.encodeMethodResponse(correlationID: correlationID, status: status, body: body)
            send(response, tag: token, on: link)
        }
    }

    /// How a C2D message is settled for the gate's status (gatehouse_plugin.h, `command_result`):
    /// 2xx accepted, 4xx rejected (the gate refused it and would again), anything else released.
    static func cloudToDeviceOutcome(status: Int32) -> UInt64 {
        switch status {
        case 200..<300: UInt64(PN_ACCEPTED)
        case 400..<500: UInt64(PN_REJECTED)
        default: UInt64(PN_RELEASED)
        }
    }

    /// "refused by the gateway (403): <reason>" from the gate's JSON body, one line, bounded.
    static func refusalText(status: Int32, body: [UInt8]) -> String {
        var reason = ""
        if let text = (try? JSONValue(parsing: body))?["reason"]?.stringValue {
            reason = String(text.prefix(200).map { $0.isNewline || $0 == "\t" ? " " : $0 })
        }
        return "refused by the gateway (\(status))" + (reason.isEmpty ? "" : ": \(reason)")
    }

    private func received(_ delivery: OpaquePointer, role: LinkRole, nowMS: Int64) {
        guard pn_delivery_readable(delivery), !pn_delivery_partial(delivery), let link = pn_delivery_link(delivery)
        else { return }
        var bytes = [UInt8](repeating: 0, count: pn_delivery_pending(delivery))
        let count = bytes.withUnsafeMutableBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { pn_link_recv(link, $0.baseAddress, raw.count) }
        }
        pn_link_advance(link)
        let message = count >= 0 ? codec.decode(Array(bytes.prefix(max(count, 0)))) : nil
        switch role {
        case .cbsReceiver:
            pn_delivery_update(delivery, UInt64(PN_ACCEPTED))
            pn_delivery_settle(delivery)
            pn_link_flow(link, 1)
            guard let message else { return }
            let id: UInt64? =
                switch message.correlationID {
                case .uint(let value): value
                case .int(let value): UInt64(exactly: value)
                case .string(let text): UInt64(text)
                default: nil
                }
            let properties = Dictionary(
                message.applicationProperties.map { ($0.0, $0.1) }, uniquingKeysWith: { first, _ in first })
            guard let response = PutTokenResponse(correlationID: id, properties: properties) else {
                host.log(.warning, "\(label): an answer from the CBS node that is not a put-token response")
                return
            }
            tokenAnswered(response, nowMS: nowMS)
        case .cloudToDevice(let deviceID):
            guard let message else {
                let condition = pn_disposition_condition(pn_delivery_local(delivery))
                pn_condition_set_name(condition, "amqp:decode-error")
                pn_delivery_update(delivery, UInt64(PN_REJECTED))
                pn_delivery_settle(delivery)
                pn_link_flow(link, 1)
                host.log(.warning, "device \(deviceID): a cloud-to-device message that does not decode: rejected")
                return
            }
            let token = hub.commandToken()
            commands[token] = .cloudToDevice(device: deviceID, delivery: delivery)
            host.command(
                PluginCommand(
                    kind: .c2dMessage, deviceID: deviceID, name: "", payload: message.body,
                    properties: Self.commandProperties(message)),
                token: token)
        case .methodRequests(let deviceID):
            pn_delivery_update(delivery, UInt64(PN_ACCEPTED))
            pn_delivery_settle(delivery)
            pn_link_flow(link, 1)
            guard let message, let name = message.property("IoThub-methodname")?.text else {
                host.log(.warning, "device \(deviceID): ignoring a method request without a method name")
                return
            }
            let token = hub.commandToken()
            commands[token] = .method(device: deviceID, correlationID: message.correlationID)
            host.command(
                PluginCommand(kind: .directMethod, deviceID: deviceID, name: name, payload: message.body), token: token)
        default:
            pn_delivery_settle(delivery)
        }
    }

    /// A C2D message's properties as the gate reads them over MQTT (docs/protocols.md §2.2):
    /// the system properties under their `$.` names, then the application properties.
    static func commandProperties(_ message: ReceivedMessage) -> [PluginMessage.Property] {
        var properties: [PluginMessage.Property] = []
        if let id = message.messageID.text { properties.append(.init("$.mid", id)) }
        if let id = message.correlationID.text { properties.append(.init("$.cid", id)) }
        if let to = message.to { properties.append(.init("$.to", to)) }
        if !message.userID.isEmpty {
            properties.append(.init("$.uid", String(decoding: message.userID, as: UTF8.self)))
        }
        if let type = message.contentType { properties.append(.init("$.ct", type)) }
        if let encoding = message.contentEncoding { properties.append(.init("$.ce", encoding)) }
        if message.absoluteExpiryMS > 0 { properties.append(.init("$.exp", String(message.absoluteExpiryMS))) }
        for (key, value) in message.applicationProperties {
            properties.append(.init(key, value.text ?? ""))
        }
        return properties
    }

    // MARK: - Events

    private func handle(_ event: OpaquePointer) {
        let nowMS = AMQPHub.nowMS()
        switch pn_event_type(event) {
        case PN_CONNECTION_REMOTE_OPEN:
            remoteOpened = true
            host.log(.info, "\(label): connected to \(settings.hostname) (\(devices.count) device(s) to authorise)")
        case PN_CONNECTION_REMOTE_CLOSE:
            let (name, text) = Self.condition(pn_connection_remote_condition(pn_event_connection(event)))
            failure =
                "the hub closed the connection" + (name.isEmpty ? "" : " (\(name)\(text.isEmpty ? "" : ": \(text)"))")
            pn_connection_close(pn_event_connection(event))
        case PN_TRANSPORT_ERROR:
            let (name, text) = Self.condition(pn_transport_condition(pn_event_transport(event)))
            failure = failure ?? "AMQP transport error \(name)\(text.isEmpty ? "" : ": \(text)")"
        case PN_LINK_REMOTE_OPEN:
            guard let link = pn_event_link(event), let role = linkRoles[link] else { return }
            linkOpened(link, role: role, nowMS: nowMS)
        case PN_LINK_REMOTE_CLOSE, PN_LINK_REMOTE_DETACH:
            guard let link = pn_event_link(event), let role = linkRoles[link] else { return }
            let (name, text) = Self.condition(pn_link_remote_condition(link))
            let why = name.isEmpty ? "" : " (\(name)\(text.isEmpty ? "" : ": \(text)"))"
            if let deviceID = role.device, let device = devices[deviceID] {
                refuse(device, reason: "the hub detached the device's link \(Self.linkName(link))\(why)", nowMS: nowMS)
            } else if role.device == nil {
                failure = "the hub detached the CBS link\(why)"
                if let connection = driver?.pointee.connection { pn_connection_close(connection) }
            }
        case PN_DELIVERY:
            guard let delivery = pn_event_delivery(event), let link = pn_delivery_link(delivery),
                let role = linkRoles[link]
            else { return }
            if pn_link_is_sender(link) {
                guard pn_delivery_updated(delivery) else { return }
                switch role {
                case .telemetry(let deviceID):
                    if let device = devices[deviceID] {
                        settled(delivery, device: device, nowMS: nowMS)
                    } else {
                        pn_delivery_settle(delivery)
                    }
                case .cbsSender:
                    let state = pn_delivery_remote_state(delivery)
                    if state != UInt64(PN_ACCEPTED), state != 0 {
                        host.log(
                            .warning, "\(label): the CBS node did not take a put-token (\(Self.outcomeName(state)))")
                    }
                    pn_delivery_settle(delivery)
                default:
                    pn_delivery_settle(delivery)
                }
            } else {
                received(delivery, role: role, nowMS: nowMS)
            }
        default:
            break
        }
    }

    private func linkOpened(_ link: OpaquePointer, role: LinkRole, nowMS: Int64) {
        guard case .telemetry(let deviceID) = role, let device = devices[deviceID], device.state == .attaching else {
            return
        }
        // A refused attach comes back without a target, and a detach follows.
        guard pn_terminus_get_address(pn_link_remote_target(link)) != nil else { return }
        device.state = .up
        device.upSinceMS = nowMS
        device.proven = false
        hub.reportUp(device)
        transmit(device)
    }

    static func linkName(_ link: OpaquePointer) -> String {
        pn_link_name(link).map { String(cString: $0) } ?? "?"
    }
}
