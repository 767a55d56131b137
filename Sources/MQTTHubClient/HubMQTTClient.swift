import HubTLS
import MQTTCodec

#if canImport(Glibc)
    import Glibc
#endif

/// One device identity's MQTT 3.1.1 connection to IoT Hub: `TLSSocket` for the bytes, MQTTCodec
/// for the packets, driven by the hub links' I/O thread (`HubConnections.IOLoop`). Confined to
/// that thread.
///
/// Written here rather than on libmosquitto because the relay's hot path is this connection's
/// telemetry (docs/benchmarks.md, "Where the relay's time goes"): libmosquitto encrypts one TLS
/// record per PUBLISH, reads each PUBACK's record in two read(2)s, allocates and copies every
/// message, and writes a byte to its own wake-up socket per packet, which nothing reads
/// without its threaded loop (a failed write(2) a message once it is full). Here every
/// PUBLISH the link hands over in one pass of the loop is encoded into `output` and sent in
/// one `SSL_write` (records of up to 16 KiB), and reads take whatever the socket holds
/// (read-ahead) and decode every packet in it.
///
/// What it does, and what it leaves to `HubLink`: the CONNECT (clean session 0, as the Azure
/// SDKs connect), subscriptions, QoS 0 and 1 publishes with packet ids, PUBACKs for the hub's
/// QoS 1 messages (sent at once, as libmosquitto and the C SDK do: MQTT cannot reject a C2D
/// message), keepalive (PINGREQ after `keepAlive` seconds without sending, the connection
/// lost when its PINGRESP has not come `keepAlive` seconds later). It resends nothing: after a
/// drop the link decides what goes again, on a new connection with new packet ids.
///
/// Events reach `handler` on the I/O thread, inside `handle(revents:)`, `tick` or
/// `disconnect()`. Nothing here logs or puts in an error the password, a topic or a payload.
public final class HubMQTTClient {
    public enum Event {
        /// The CONNACK: accepted, or the hub's refusal.
        case connected(ConnAck.ReturnCode)
        /// The connection failed before a CONNACK (TCP, TLS, the hub closing it): why.
        case connectFailed(String)
        /// An accepted connection ended: `nil` after our own `disconnect()`, otherwise why.
        case disconnected(String?)
        /// The PUBACK of QoS 1 message `packetID`.
        case acknowledged(UInt16)
        /// A message from the hub (C2D, a method request, a twin response), already acknowledged.
        case message(topic: String, payload: [UInt8])
        /// A message from the hub over the size limit, acknowledged and dropped.
        case oversized(topic: String, bytes: Int)
    }

    public struct Credentials {
        public var clientID: String
        public var username: String
        public var password: String
        public var keepAlive: UInt16

        public init(clientID: String, username: String, password: String, keepAlive: UInt16) {
            self.clientID = clientID
            self.username = username
            self.password = password
            self.keepAlive = keepAlive
        }
    }

    /// The largest packet taken from the hub: a C2D message is at most 64 KiB and a method
    /// request's payload 128 KiB (docs/protocols.md §2); anything larger is acknowledged and
    /// dropped, so the hub does not send it again on every reconnect.
    public static let maxIncomingPacket = 256 * 1024
    /// Plaintext handed to OpenSSL per `SSL_write`: a few records, bounded so one busy link
    /// does not hold the loop.
    public static let writeChunk = 64 * 1024

    /// Receives every event, on the driving thread, inside the call that produced it.
    public var handler: (Event) -> Void = { _ in }

    public init() {}

    private var socket: TLSSocket?
    private var credentials: Credentials?
    private var decoder = MQTTDecoder(maxPacketSize: maxIncomingPacket, oversizedPublishes: .skip(keepingHead: 0))
    /// Encoded packets not yet taken by OpenSSL; `outputSent` of them are.
    private var output: [UInt8] = []
    private var outputSent = 0
    public private(set) var isConnected = false
    private var nextPacketID: UInt16 = 1
    /// Keepalive's clock (`monotonicMS`): when bytes last left, when bytes last came, when the
    /// outstanding PINGREQ was queued.
    private var lastSentMS: Int64 = 0
    private var lastReceivedMS: Int64 = 0
    private var pingSentMS: Int64?
    /// `readAll` stopped at its bound with input possibly left inside OpenSSL, where poll(2)
    /// cannot see it.
    private var readBoundHit = false

    /// The descriptor to poll, -1 while there is no connection.
    public var descriptor: Int32 { socket?.fd ?? -1 }

    /// Whether there is a connection (in progress or up).
    public var isOpen: Bool { socket != nil }

    /// What poll(2) should wait for; nil without a connection.
    public var pollEvents: Int16? {
        guard let socket else { return nil }
        guard socket.phase == .open else { return socket.pollEvents }
        return Int16(POLLIN) | (hasOutput ? Int16(POLLOUT) : 0)
    }

    private var hasOutput: Bool { outputSent < output.count }

    /// Starts a non-blocking connect; `.connected` or `.connectFailed` follows as the loop drives
    /// the connection. Throws when the connection cannot even be started (the name does not
    /// resolve, no socket).
    public func connect(
        address: String, port: Int, context: OpaquePointer, serverName: String, credentials: Credentials
    ) throws(TransportFailure) {
        close()
        socket = try TLSSocket(address: address, port: port, context: context, serverName: serverName, readAhead: true)
        self.credentials = credentials
    }

    /// Queues a PUBLISH; returns its packet id (QoS 1) or 0 (QoS 0). It leaves at the next
    /// `flush()`. Throws for a message MQTT cannot carry (a topic over 65,535 bytes), which
    /// sending again cannot help, and when there is no accepted connection.
    @discardableResult
    public func publish(topic: String, payload: [UInt8], qos: QoS) throws(PublishRefusal) -> UInt16 {
        guard isConnected else { throw .notConnected }
        // MQTT's limits (§1.5.3, §2.2.3): a topic of 65,535 bytes, a Remaining Length of
        // 268,435,455 (topic length, topic, packet id, payload).
        let topicBytes = topic.utf8.count
        guard topicBytes <= 65_535, 2 + topicBytes + 2 + payload.count <= 268_435_455 else { throw .tooLarge }
        let id: UInt16? = qos == .atMostOnce ? nil : takePacketID()
        MQTTPacket.publish(Publish(topic: topic, payload: payload, qos: qos, packetID: id)).encode(into: &output)
        return id ?? 0
    }

    public enum PublishRefusal: Error {
        case notConnected
        case tooLarge
    }

    /// Queues a SUBSCRIBE. Its SUBACK is not waited for: IoT Hub grants the filters the SDKs
    /// ask for, and what a refused one would have brought simply does not come.
    public func subscribe(_ filter: String, qos: QoS) {
        guard isConnected else { return }
        MQTTPacket.subscribe(Subscribe(packetID: takePacketID(), topics: [TopicSubscription(filter: filter, qos: qos)]))
            .encode(into: &output)
    }

    /// Sends what is queued: one `SSL_write` of up to `writeChunk` bytes at a time until OpenSSL
    /// or the socket has no more room (then POLLOUT is asked for).
    public func flush() {
        guard let socket, socket.phase == .open, hasOutput else { return }
        while hasOutput {
            let end = min(output.count, outputSent + Self.writeChunk)
            let result = output.withUnsafeBytes { socket.write(UnsafeRawBufferPointer(rebasing: $0[outputSent..<end])) }
            switch result {
            case .bytes(let count):
                outputSent += count
                lastSentMS = Self.monotonicMS()
            case .wouldBlock:
                // OpenSSL keeps what it took; the rest waits for POLLOUT (`pollEvents`).
                return
            case .closed:
                lost("the hub closed the connection")
                return
            case .failed(let reason):
                lost("connection lost: \(reason)")
                return
            }
        }
        output.removeAll(keepingCapacity: output.capacity <= 2 * Self.writeChunk)
        outputSent = 0
    }

    /// Drives the connection with what poll(2) reported for `descriptor`.
    public func handle(revents: Int16) {
        guard let socket else { return }
        if socket.phase != .open {
            // A connect that failed reports itself through SO_ERROR, a handshake through OpenSSL.
            do throws(TransportFailure) {
                guard try socket.advance() else { return }
            } catch {
                connectFailed(error.description)
                return
            }
            sendConnect()
            flush()
            return
        }
        if revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 || readBoundHit { readAll() }
        // What the read queued (PUBACKs) leaves with the loop's next `flush()`, before it polls.
        if self.socket != nil, revents & Int16(POLLOUT) != 0 { flush() }
    }

    /// Keepalive, on the monotonic clock: a PINGREQ when nothing was sent for `keepAlive`
    /// seconds; the connection lost when that PINGREQ is `keepAlive` seconds old and nothing at
    /// all came from the hub meanwhile (a hub busy acknowledging a backlog is alive, even if the
    /// PINGRESP waits behind it). Call it every second or so.
    public func tick() {
        guard isConnected, let keepAlive = credentials.map({ Int64($0.keepAlive) * 1000 }), keepAlive > 0 else {
            return
        }
        let nowMS = Self.monotonicMS()
        if let sent = pingSentMS {
            if nowMS - sent >= keepAlive, nowMS - lastReceivedMS >= keepAlive {
                lost("the hub did not answer a keepalive ping")
            }
        } else if nowMS - lastSentMS >= keepAlive {
            pingSentMS = nowMS
            MQTTPacket.pingreq.encode(into: &output)
            flush()
        }
    }

    /// Sends DISCONNECT (best effort) and closes the connection; an accepted connection reports
    /// `.disconnected(nil)` before this returns. Does nothing without a connection.
    public func disconnect() {
        guard socket != nil else { return }
        let wasConnected = isConnected
        if wasConnected {
            MQTTPacket.disconnect.encode(into: &output)
            flush()
            // A connection the write found broken has reported itself (`lost`).
            guard socket != nil else { return }
        }
        close()
        if wasConnected { handler(.disconnected(nil)) }
    }

    /// Closes the connection without a word and without an event.
    public func close() {
        socket?.close()
        socket = nil
        isConnected = false
        decoder = MQTTDecoder(maxPacketSize: Self.maxIncomingPacket, oversizedPublishes: .skip(keepingHead: 0))
        output = []
        outputSent = 0
        readBoundHit = false
        pingSentMS = nil
    }

    /// Gives back the output buffer's memory while the link is idle (1,000 quiet identities hold
    /// none).
    public func trimBuffers() {
        if !hasOutput, output.capacity > 0 {
            output = []
            outputSent = 0
        }
    }

    // MARK: - Inside

    private func takePacketID() -> UInt16 {
        let id = nextPacketID
        nextPacketID = nextPacketID == .max ? 1 : nextPacketID + 1
        return id
    }

    private func sendConnect() {
        guard let credentials else { return }
        MQTTPacket.connect(
            Connect(
                clientID: credentials.clientID, cleanSession: false, keepAlive: credentials.keepAlive,
                username: credentials.username, password: Array(credentials.password.utf8))
        ).encode(into: &output)
    }

    /// Whether OpenSSL may hold input that poll(2) cannot see (`readAll` stopped at its bound):
    /// the loop must not wait before handling this connection again. Not `SSL_has_pending`,
    /// which is also true for half a record, whose rest only poll(2) can wait for.
    public var hasBufferedInput: Bool { readBoundHit }

    /// Reads until the socket and OpenSSL are empty, decoding as it goes; at most 32 reads
    /// (512 KiB) a call, so one busy connection does not hold the others.
    private func readAll() {
        // A scratch buffer on the stack: the decoder keeps only partial packets.
        withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 1) { buffer in
            var reads = 0
            readBoundHit = false
            while let socket {
                guard reads < 32 else {
                    readBoundHit = true
                    return
                }
                reads += 1
                switch socket.read(into: buffer) {
                case .bytes(let count):
                    lastReceivedMS = Self.monotonicMS()
                    decoder.append(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                    guard decodeAll() else { return }
                case .wouldBlock:
                    return
                case .closed:
                    lost(isConnected ? "the hub closed the connection" : "the hub closed the connection before CONNACK")
                    return
                case .failed(let reason):
                    lost("connection lost: \(reason)")
                    return
                }
            }
        }
    }

    /// Handles every whole packet received; false once the connection is gone.
    private func decodeAll() -> Bool {
        while socket != nil {
            let event: MQTTDecoder.Event?
            do throws(MQTTProtocolError) {
                event = try decoder.nextEvent()
            } catch {
                lost("the hub broke the MQTT protocol: \(error.code)")
                return false
            }
            guard let event else { return true }
            switch event {
            case .packet(let packet): handle(packet)
            case .skippedPublish(let skipped):
                guard isConnected, skipped.qos != .exactlyOnce else {
                    lost(isConnected ? "the hub sent a QoS 2 message" : "the hub sent PUBLISH before CONNACK")
                    return false
                }
                if let id = skipped.packetID, skipped.qos == .atLeastOnce {
                    MQTTPacket.puback(id).encode(into: &output)
                }
                handler(.oversized(topic: skipped.topic, bytes: skipped.packetSize))
            }
        }
        return false
    }

    private func handle(_ packet: MQTTPacket) {
        switch packet {
        case .connack(let ack) where !isConnected:
            guard ack.returnCode == .accepted else {
                close()
                handler(.connected(ack.returnCode))
                return
            }
            isConnected = true
            lastSentMS = Self.monotonicMS()
            handler(.connected(ack.returnCode))
        case _ where !isConnected:
            lost("the hub sent \(packet.name) before CONNACK")
        case .puback(let id):
            handler(.acknowledged(id))
        case .publish(let publish):
            switch publish.qos {
            case .atMostOnce: break
            case .atLeastOnce: MQTTPacket.puback(publish.packetID ?? 0).encode(into: &output)
            case .exactlyOnce:
                // Never subscribed at QoS 2: a hub that sends one breaks the protocol.
                lost("the hub sent a QoS 2 message")
                return
            }
            handler(.message(topic: publish.topic, payload: publish.payload))
        case .pingresp:
            pingSentMS = nil
        case .suback, .unsuback:
            break
        default:
            lost("the hub sent an unexpected \(packet.name)")
        }
    }

    private func connectFailed(_ reason: String) {
        close()
        handler(.connectFailed(reason))
    }

    private func lost(_ reason: String) {
        let wasConnected = isConnected
        close()
        handler(wasConnected ? .disconnected(reason) : .connectFailed(reason))
    }

    /// Milliseconds on the monotonic clock: keepalive must not jump with the wall clock (an NTP
    /// step on a gateway without a real-time clock).
    static func monotonicMS() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
