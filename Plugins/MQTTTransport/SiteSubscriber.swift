import Dispatch
import FoundationEssentials
import GatehouseBasics
import GatehousePluginKit
import IoTHubWire
import MQTTCodec
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The downstream role: reads leaf devices' telemetry from the site broker and acknowledges each
/// QoS 1 message only after the host made it durable.
///
/// Why not libmosquitto here: Debian 12's libmosquitto 2.0.11 sends the PUBACK for an incoming
/// QoS 1 message before its message callback returns (docs/site-broker.md), so a crash between that
/// PUBACK and the outbox commit would lose an acknowledged message. This client is a small MQTT
/// 3.1.1 subscriber on our own strict codec that owns its acknowledgements:
///
///     read what the socket has → decode every complete PUBLISH → ingest(batch)  [one commit]
///                              → PUBACK each, in one write
///
/// The session is persistent (clean session = 0), so whatever the broker sent and we did not
/// acknowledge is sent again after a reconnect or a restart of gatehoused. Batching what one
/// read returns gives group commit for free: one fsync covers as many messages as the broker
/// had in flight to us (mosquitto's `max_inflight_messages`).
///
/// Poison messages never wedge the session: a PUBLISH whose payload is over `maxMessageBytes`
/// is consumed as it streams in (the decoder skips it, keeping only its first bytes: a 2 MB
/// message is never buffered), handed to the host as a dead letter, and acknowledged once the
/// host made that durable — so the broker stops replaying it first after every reconnect, and
/// the connection stays up for the next messages. A message whose topic names no device goes
/// the same way.
final class SiteSubscriber: Sendable {
    struct Settings: Sendable {
        var host: String
        var port: Int
        var clientID: String
        var username: String?
        var password: [UInt8]?
        var filters: [DeviceTopicFilter]
        var keepAlive: UInt16
        var maxBatch: Int
        /// Whether this client delivers commands to the devices (and so subscribes to their
        /// method responses, `devices/+/methods/res/#`).
        var commands: Bool = true
        /// How long a leaf device has to answer a direct method.
        var methodTimeout: Duration = .seconds(30)
        /// The largest payload taken from the site; larger ones become dead letters.
        var maxMessageBytes: Int = SiteSubscriber.defaultMaxMessageBytes
    }

    /// `[site] max_message_bytes` by default: IoT Hub's device-to-cloud limit (its size counts
    /// the properties too, so a larger payload can never be sent; docs/protocols.md §4).
    static let defaultMaxMessageBytes = IoTHubLimits.maxDeviceToCloudMessageBytes

    /// What a PUBLISH may carry besides its payload: fixed header (5), topic (2 + 65,535) and
    /// packet id (2). The decoder's packet limit is `maxMessageBytes` plus this, so every payload
    /// up to the limit decodes whatever its topic, and anything larger is skipped unbuffered.
    static let publishOverhead = 5 + 2 + 65_535 + 2

    let settings: Settings
    let host: PluginHost
    private let running = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    /// The connection's socket, or -1. Closed under this lock, so `stop` never shuts down a
    /// descriptor number that was closed and reused meanwhile.
    private let socketFD = Mutex<Int32>(-1)
    /// `stop` writes a byte here; every wait of the I/O thread (connect, read, backoff) polls the
    /// read end too, so it ends at once whatever the broker does (docs/architecture.md, "Threads").
    private let stopPipe: (read: Int32, write: Int32)
    /// `deliver` writes a byte here after queueing a command; the I/O thread wakes and writes the
    /// queued packets itself, so the host's thread that delivers never waits on the socket.
    private let wakePipe: (read: Int32, write: Int32)
    /// Commands on their way to devices; the connection's writes are serialised by this lock
    /// (the receive loop's acknowledgements, and the commands `deliver` queued).
    private let outgoing = Mutex(Outgoing())

    /// What `outgoing` guards.
    struct Outgoing {
        /// The connected socket, or -1: `deliver` writes only to a connection that is up.
        var fd: Int32 = -1
        var nextPacketID: UInt16 = 0
        /// C2D messages published at QoS 1, by packet id, waiting for the broker's PUBACK.
        var awaitingAck: [UInt16: UInt64] = [:]
        /// Direct methods sent, by request id, waiting for the device's response.
        var awaitingResponse: [String: PendingMethod] = [:]
        /// Encoded PUBLISH packets `deliver` queued for the I/O thread to write.
        var queued: [UInt8] = []

        mutating func packetID() -> UInt16 {
            repeat {
                nextPacketID = nextPacketID == UInt16.max ? 1 : nextPacketID + 1
            } while awaitingAck[nextPacketID] != nil
            return nextPacketID
        }
    }

    struct PendingMethod {
        var token: UInt64
        var device: String
        var deadline: ContinuousClock.Instant
    }

    /// Where commands go on the site broker (docs/site-broker.md, "Topics").
    static let methodResponseFilter = "devices/+/methods/res/#"

    /// How long a TCP connect to the broker may take before the next address (or the next try
    /// after the backoff) is tried: a broker whose packets are dropped would otherwise hold it for
    /// the kernel's SYN retries, about two minutes.
    static let connectTimeout = Duration.seconds(10)

    init(settings: Settings, host: PluginHost) throws(PluginError) {
        self.settings = settings
        self.host = host
        stopPipe = try Self.makePipe("stop")
        do {
            wakePipe = try Self.makePipe("command")
        } catch {
            close(stopPipe.read)
            close(stopPipe.write)
            throw error
        }
    }

    /// A non-blocking, close-on-exec pipe for waking the I/O thread's poll.
    private static func makePipe(_ purpose: String) throws(PluginError) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw PluginError(
                "cannot create the site subscriber's \(purpose) pipe: \(String(cString: strerror(errno)))")
        }
        guard fds.allSatisfy({ fcntl($0, F_SETFD, FD_CLOEXEC) == 0 && fcntl($0, F_SETFL, O_NONBLOCK) == 0 }) else {
            let reason = String(cString: strerror(errno))
            fds.forEach { close($0) }
            throw PluginError("cannot set up the site subscriber's \(purpose) pipe: \(reason)")
        }
        return (fds[0], fds[1])
    }

    /// Empties a pipe of the bytes written to wake the I/O thread.
    private static func drain(_ fd: Int32) {
        var bytes = [UInt8](repeating: 0, count: 64)
        while read(fd, &bytes, bytes.count) > 0 {}
    }

    deinit {
        for fd in [stopPipe.read, stopPipe.write, wakePipe.read, wakePipe.write] { close(fd) }
    }

    func start() {
        // Empty the stop pipe of an earlier stop.
        Self.drain(stopPipe.read)
        running.store(true, ordering: .sequentiallyConsistent)
        NamedThread.start(name: "gatehouse.mqtt.site") { [self] in
            runLoop()
            done.signal()
        }
    }

    /// Returns within a second or so whatever the socket is doing, unless the host's `ingest` is
    /// still making a batch durable: that batch is acknowledged first (or not at all).
    func stop() {
        guard running.exchange(false, ordering: .sequentiallyConsistent) else { return }
        // Wakes a connect, a wait for the broker, or the backoff sleep.
        var byte: UInt8 = 1
        _ = Glibc.write(stopPipe.write, &byte, 1)
        // The loop then says DISCONNECT; a write stuck on a broker that stopped reading is
        // unblocked by shutting the socket down.
        if done.wait(timeout: .now() + .milliseconds(500)) == .timedOut {
            socketFD.withLock { fd in
                if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
            }
            done.wait()
        }
    }

    // MARK: - Connection loop

    private func runLoop() {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(30))
        while running.load(ordering: .sequentiallyConsistent) {
            let reason = runOneConnection(resetBackoff: { backoff.reset() })
            // The site link, reported with no device id (gatehouse_plugin.h, link_state).
            host.linkState(deviceID: "", .down, reason: reason)
            guard running.load(ordering: .sequentiallyConsistent) else { break }
            let delay = backoff.next()
            host.log(
                .warning,
                "site broker \(settings.host):\(settings.port): \(reason); reconnecting in \(delay.formattedMS)")
            TCPSocket.sleep(delay, interrupt: stopPipe.read)
        }
    }

    /// One connection's life; returns why it ended.
    private func runOneConnection(resetBackoff: () -> Void) -> String {
        let fd: Int32
        switch TCPSocket.connect(
            host: settings.host, port: settings.port, timeout: Self.connectTimeout, interrupt: stopPipe.read)
        {
        case .failure(let error): return error.description
        case .success(let socket): fd = socket
        }
        socketFD.withLock { $0 = fd }
        defer {
            socketFD.withLock {
                $0 = -1
                close(fd)
            }
        }
        var decoder = MQTTDecoder(
            maxPacketSize: settings.maxMessageBytes + Self.publishOverhead,
            oversizedPublishes: .skip(keepingHead: PluginDeadLetter.headLimit))
        let connect = MQTTPacket.connect(
            Connect(
                clientID: settings.clientID, cleanSession: false, keepAlive: settings.keepAlive,
                username: settings.username, password: settings.password, will: nil))
        guard TCPSocket.writeAll(fd, connect.encoded) else { return "connection lost while sending CONNECT" }

        // CONNACK, then SUBSCRIBE/SUBACK.
        switch readEvent(fd, &decoder, timeout: .seconds(10)) {
        case .success(.packet(.connack(let ack))) where ack.returnCode == .accepted:
            break
        case .success(.packet(.connack(let ack))):
            return "broker refused the connection (CONNACK return code \(ack.returnCode.rawValue))"
        case .success(.packet(let other)):
            return "expected CONNACK, got \(other.name)"
        case .success(.skippedPublish):
            return "expected CONNACK, got PUBLISH"
        case .failure(let error):
            return error.description
        }
        var subscriptions = settings.filters.map { TopicSubscription(filter: $0.filter, qos: .atLeastOnce) }
        if settings.commands {
            subscriptions.append(TopicSubscription(filter: Self.methodResponseFilter, qos: .atLeastOnce))
        }
        let subscribe = MQTTPacket.subscribe(Subscribe(packetID: 1, topics: subscriptions))
        guard TCPSocket.writeAll(fd, subscribe.encoded) else { return "connection lost while subscribing" }
        var pending: [Publish] = []
        var pendingSkipped: [SkippedPublish] = []
        var subscribed = false
        while !subscribed {
            switch readEvent(fd, &decoder, timeout: .seconds(10)) {
            case .success(.packet(.suback(let ack))):
                if ack.returnCodes.contains(0x80) {
                    return
                        "broker refused the subscription to \(subscriptions.map(\.filter)) (check the ACL of client \(settings.clientID))"
                }
                subscribed = true
            case .success(.packet(.publish(let publish))):
                // A persistent session may replay before the SUBACK.
                pending.append(publish)
            case .success(.skippedPublish(let skipped)):
                pendingSkipped.append(skipped)
            case .success(.packet(let other)):
                return "expected SUBACK, got \(other.name)"
            case .failure(let error):
                return error.description
            }
        }
        resetBackoff()
        host.log(
            .info,
            "connected to site broker \(settings.host):\(settings.port), subscribed to \(settings.filters.map(\.filter).joined(separator: ", "))"
        )
        host.linkState(deviceID: "", .up)
        // From here on every write goes through `write`, under the lock `deliver` takes too.
        outgoing.withLock { $0.fd = fd }
        if !pending.isEmpty || !pendingSkipped.isEmpty, let problem = commit(pending, skipped: pendingSkipped) {
            failOutstandingCommands(reason: problem)
            return problem
        }
        let reason = receiveLoop(fd, &decoder)
        failOutstandingCommands(reason: reason)
        return reason
    }

    // MARK: - Commands to devices

    /// Publishes an allowed command to its device: a C2D message at QoS 1 on
    /// `devices/{id}/messages/devicebound/{properties}`, a direct method at QoS 0 on
    /// `devices/{id}/methods/POST/{name}/?$rid={rid}`. The outcome follows through
    /// `host.deliverResult`: 200 at the broker's PUBACK (C2D), or the device's answer on
    /// `devices/{id}/methods/res/{status}/?$rid={rid}` (methods; 504 after `methodTimeout`).
    ///
    /// Never blocks: the packet is queued for the I/O thread, which writes it at its next wake
    /// (at once: the wake pipe ends its poll). A connection lost before the write answers 503
    /// through `deliverResult`, like one lost before the PUBACK.
    func deliver(_ command: PluginCommand, token: UInt64) -> PluginStatus {
        guard settings.commands else { return .invalid }
        guard !command.deviceID.isEmpty, !command.deviceID.contains(where: { "/+#".contains($0) }) else {
            return .invalid
        }
        return outgoing.withLock { state -> PluginStatus in
            guard state.fd >= 0 else { return .unavailable }
            let publish: Publish
            switch command.kind {
            case .c2dMessage:
                let id = state.packetID()
                publish = Publish(
                    topic: "devices/\(command.deviceID)/messages/devicebound/" + command.properties.propertyBag,
                    payload: command.payload, qos: .atLeastOnce, retain: false, packetID: id)
                state.awaitingAck[id] = token
            case .directMethod:
                guard !command.name.isEmpty, !command.name.contains(where: { "/+#".contains($0) }) else {
                    return .invalid
                }
                let rid = String(token)
                publish = Publish(
                    topic: "devices/\(command.deviceID)/methods/POST/\(command.name)/?$rid=\(rid)",
                    payload: command.payload, qos: .atMostOnce, retain: false)
                state.awaitingResponse[rid] = PendingMethod(
                    token: token, device: command.deviceID, deadline: .now + settings.methodTimeout)
            }
            state.queued.append(contentsOf: MQTTPacket.publish(publish).encoded)
            var byte: UInt8 = 1
            _ = Glibc.write(wakePipe.write, &byte, 1)  // a full pipe already wakes the thread
            return .ok
        }
    }

    /// Writes the commands `deliver` queued; false if the connection is lost.
    private func flushQueued() -> Bool {
        outgoing.withLock { state in
            guard !state.queued.isEmpty else { return true }
            defer { state.queued.removeAll(keepingCapacity: true) }
            return state.fd >= 0 && TCPSocket.writeAll(state.fd, state.queued)
        }
    }

    /// A PUBACK from the broker: the C2D message with that packet id is on the site broker.
    private func acknowledged(packetID: UInt16) {
        guard let token = outgoing.withLock({ $0.awaitingAck.removeValue(forKey: packetID) }) else { return }
        host.deliverResult(token: token, status: 200, body: Array(#"{"status":200}"#.utf8))
    }

    /// A device's answer to a direct method, `devices/{id}/methods/res/{status}/?$rid={rid}`.
    /// Answers for another device's request, or for none outstanding, are dropped (and logged).
    private func methodResponse(_ publish: Publish) {
        let levels = CompiledTopicFilter.levels(of: publish.topic)
        guard levels.count == 6, levels[2] == "methods", levels[3] == "res", let status = Int32(levels[4]),
            (100...599).contains(status), levels[5].hasPrefix("?")
        else {
            host.log(.warning, "ignoring a malformed method response on \(publish.topic)")
            return
        }
        let device = String(levels[1])
        let rid = [PluginMessage.Property](propertyBag: levels[5].dropFirst()).first { $0.key == "$rid" }?.value ?? ""
        let pending: PendingMethod? = outgoing.withLock { state in
            guard let pending = state.awaitingResponse[rid], pending.device == device else { return nil }
            state.awaitingResponse[rid] = nil
            return pending
        }
        guard let pending else {
            host.log(.warning, "device \(device) answered a method request that is not outstanding (rid \(rid))")
            return
        }
        host.deliverResult(token: pending.token, status: status, body: publish.payload)
    }

    /// Answers 504 for methods whose device did not answer in time.
    private func expireMethods() {
        let now = ContinuousClock.now
        let expired: [PendingMethod] = outgoing.withLock { state in
            let late = state.awaitingResponse.filter { $0.value.deadline <= now }
            for rid in late.keys { state.awaitingResponse[rid] = nil }
            return Array(late.values)
        }
        for pending in expired {
            host.deliverResult(
                token: pending.token, status: 504,
                body: Array(#"{"status":504,"reason":"the device did not answer in time"}"#.utf8))
        }
    }

    /// The connection ended: nothing outstanding can complete on it any more.
    private func failOutstandingCommands(reason: String) {
        let (acks, methods) = outgoing.withLock { state in
            defer {
                state.fd = -1
                state.awaitingAck.removeAll()
                state.awaitingResponse.removeAll()
            }
            state.queued.removeAll()
            return (Array(state.awaitingAck.values), state.awaitingResponse.values.map(\.token))
        }
        let body = Array(#"{"status":503,"reason":"the site broker connection was lost"}"#.utf8)
        for token in acks + methods { host.deliverResult(token: token, status: 503, body: body) }
    }

    /// Reads, decodes, commits and acknowledges until the connection ends.
    private func receiveLoop(_ fd: Int32, _ decoder: inout MQTTDecoder) -> String {
        var buffer = [UInt8](repeating: 0, count: 256 * 1024)
        var lastSent = ContinuousClock.now
        var pingOutstanding = false
        let keepAlive = Duration.seconds(Int(settings.keepAlive))
        while running.load(ordering: .sequentiallyConsistent) {
            // Wait for data, but wake in time to keep the session alive.
            let untilPing = keepAlive - (ContinuousClock.now - lastSent)
            // Wake at least every 250 ms to time out direct methods.
            let wait = min(max(untilPing, .milliseconds(10)), .milliseconds(250))
            let (readable, woken) = TCPSocket.waitReadable(
                fd, timeout: wait, interrupt: stopPipe.read, wake: wakePipe.read)
            if woken {
                Self.drain(wakePipe.read)
                guard flushQueued() else { return "connection lost (command to a device)" }
                lastSent = .now
            }
            expireMethods()
            if !readable {
                guard ContinuousClock.now - lastSent >= keepAlive else { continue }
                if pingOutstanding { return "no PINGRESP within the keep-alive interval" }
                guard write(MQTTPacket.pingreq.encoded) else { return "connection lost (PINGREQ)" }
                lastSent = .now
                pingOutstanding = true
                continue
            }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return "broker closed the connection" }
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return "read failed: \(String(cString: strerror(errno)))"
            }
            buffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            var batch: [Publish] = []
            var skipped: [SkippedPublish] = []
            do {
                while let event = try decoder.nextEvent() {
                    let packet: MQTTPacket
                    switch event {
                    case .skippedPublish(let oversized):
                        // Over the limit: consumed unbuffered; a dead letter, acknowledged with
                        // the batch once the host kept it.
                        skipped.append(oversized)
                        continue
                    case .packet(let decoded):
                        packet = decoded
                    }
                    switch packet {
                    case .publish(let publish) where settings.commands && Self.isMethodResponse(publish.topic):
                        methodResponse(publish)
                        if let id = publish.packetID, publish.qos == .atLeastOnce {
                            guard write(MQTTPacket.puback(id).encoded) else { return "connection lost (PUBACK)" }
                        }
                    case .publish(let publish):
                        batch.append(publish)
                        if batch.count >= settings.maxBatch {
                            if let problem = commit(batch, skipped: skipped) { return problem }
                            batch.removeAll(keepingCapacity: true)
                            skipped.removeAll()
                            lastSent = .now
                        }
                    case .pingresp:
                        pingOutstanding = false
                    case .puback(let id):
                        acknowledged(packetID: id)
                    case .suback, .unsuback:
                        break
                    default:
                        return "unexpected \(packet.name) from the broker"
                    }
                }
            } catch {
                // Commit what decoded cleanly before the bad bytes, then drop the connection.
                if !batch.isEmpty || !skipped.isEmpty, let problem = commit(batch, skipped: skipped) { return problem }
                return "protocol error from the broker: \(error)"
            }
            if !batch.isEmpty || !skipped.isEmpty {
                if let problem = commit(batch, skipped: skipped) { return problem }
                lastSent = .now
            }
        }
        _ = write(MQTTPacket.disconnect.encoded)
        return "stopped"
    }

    /// Writes on the current connection under the lock that `deliver` also takes.
    private func write(_ bytes: [UInt8]) -> Bool {
        outgoing.withLock { state in state.fd >= 0 && TCPSocket.writeAll(state.fd, bytes) }
    }

    static func isMethodResponse(_ topic: String) -> Bool {
        TopicFilter.matches(filter: methodResponseFilter, topic: topic)
    }

    /// Makes a batch durable through the host — its messages in the outbox, the ones that can
    /// never be delivered as dead letters — then acknowledges them all (QoS 1).
    /// Returns a reason to drop the connection, or nil.
    private func commit(_ batch: [Publish], skipped: [SkippedPublish] = []) -> String? {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var messages: [PluginMessage] = []
        var deadLetters: [PluginDeadLetter] = []
        messages.reserveCapacity(batch.count)
        for publish in batch {
            let routed = DeviceTopicFilter.route(publish.topic, filters: settings.filters)
            guard let routed, publish.payload.count <= settings.maxMessageBytes else {
                deadLetters.append(
                    deadLetter(
                        topic: publish.topic, size: publish.payload.count, head: publish.payload, routed: routed,
                        now: now))
                continue
            }
            messages.append(
                PluginMessage(
                    deviceID: routed.deviceID, payload: publish.payload, properties: routed.properties,
                    createdUnixMS: now, topic: publish.topic))
        }
        for oversized in skipped {
            deadLetters.append(
                deadLetter(
                    topic: oversized.topic, size: oversized.payloadSize, head: oversized.head,
                    routed: DeviceTopicFilter.route(oversized.topic, filters: settings.filters), now: now))
        }
        if !messages.isEmpty {
            let status = host.ingest(messages)
            guard status == .ok else {
                // Nothing acknowledged: the broker keeps the messages and resends them after we
                // reconnect (persistent session).
                return
                    "the gateway could not make \(messages.count) message(s) durable (\(status)); not acknowledging them"
            }
        }
        for letter in deadLetters {
            if let problem = keep(letter) { return problem }
        }
        var acks: [UInt8] = []
        acks.reserveCapacity((batch.count + skipped.count) * 4)
        for oversized in skipped where oversized.qos == .atLeastOnce {
            if let id = oversized.packetID { MQTTPacket.puback(id).encode(into: &acks) }
        }
        for publish in batch where publish.qos != .atMostOnce {
            guard let id = publish.packetID else { continue }
            if publish.qos == .atLeastOnce {
                MQTTPacket.puback(id).encode(into: &acks)
            } else {
                // QoS 2 from the broker: we subscribe with QoS 1, so the broker never sends it;
                // a PUBREC keeps a misbehaving broker's flow going.
                MQTTPacket.pubrec(id).encode(into: &acks)
            }
        }
        if !acks.isEmpty, !write(acks) {
            return "connection lost while acknowledging (the broker will redeliver; duplicates are expected)"
        }
        return nil
    }

    /// A message that can never be delivered: over the size limit, or no device in its topic.
    /// Its bytes beyond the head are already gone; none of them is ever logged.
    private func deadLetter(
        topic: String, size: Int, head: [UInt8], routed: (deviceID: String, properties: [PluginMessage.Property])?,
        now: Int64
    ) -> PluginDeadLetter {
        let device = routed?.deviceID ?? Self.deviceLevel(of: topic) ?? ""
        if size > settings.maxMessageBytes {
            return PluginDeadLetter(
                deviceID: device, topic: topic, size: size, reason: .tooLarge,
                detail: "\(size) bytes, over [site] max_message_bytes (\(settings.maxMessageBytes))",
                head: Array(head.prefix(PluginDeadLetter.headLimit)), receivedUnixMS: now)
        }
        return PluginDeadLetter(
            deviceID: device, topic: topic, size: size, reason: .noDevice,
            detail: "the topic has no device id where [site] topics expect it",
            head: Array(head.prefix(PluginDeadLetter.headLimit)), receivedUnixMS: now)
    }

    /// The `+` level of a method response (`devices/{id}/methods/res/…`), the one topic outside
    /// the telemetry filters that names a device.
    private static func deviceLevel(of topic: String) -> String? {
        guard isMethodResponse(topic) else { return nil }
        let levels = CompiledTopicFilter.levels(of: topic)
        return levels.count > 1 && !levels[1].isEmpty ? String(levels[1]) : nil
    }

    /// Hands a dead letter to the host; returns a reason to drop the connection (and not
    /// acknowledge), or nil when it may be acknowledged.
    private func keep(_ letter: PluginDeadLetter) -> String? {
        let what =
            "device \(letter.deviceID.isEmpty ? "-" : letter.deviceID), topic \(letter.topic), \(letter.size) bytes"
        let status = host.deadLetter(letter)
        if status == .ok {
            host.log(
                .warning,
                "dead letter (\(letter.reason)): \(what) — \(letter.detail); kept and acknowledged, so the "
                    + "broker stops redelivering it")
            return nil
        }
        guard host.keepsDeadLetters else {
            // A host without dead letters cannot keep it; blocking the session would wedge
            // every device behind it.
            host.log(
                .error,
                "dropped a message that can never be delivered (\(letter.reason)): \(what) — \(letter.detail); "
                    + "this gatehoused keeps no dead letters")
            return nil
        }
        return "the gateway could not keep a dead letter (\(status)): \(what); not acknowledging it"
    }

    private func readEvent(_ fd: Int32, _ decoder: inout MQTTDecoder, timeout: Duration) -> Result<
        MQTTDecoder.Event, TCPSocket.Failure
    > {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            do {
                if let event = try decoder.nextEvent() { return .success(event) }
            } catch {
                return .failure(.init(description: "protocol error from the broker: \(error)"))
            }
            guard running.load(ordering: .sequentiallyConsistent) else {
                return .failure(.init(description: "stopped"))
            }
            let left = deadline - .now
            guard left > .zero else { return .failure(.init(description: "timed out waiting for the broker")) }
            guard TCPSocket.waitReadable(fd, timeout: left, interrupt: stopPipe.read) else { continue }
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { return .failure(.init(description: "broker closed the connection")) }
            buffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        }
    }
}
