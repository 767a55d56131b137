import CMosquitto

#if canImport(Glibc)
    import Glibc
#endif

/// libmosquitto's process-wide set-up and its texts for result codes.
public enum Mosquitto {
    /// `mosquitto_lib_init`, once per process image. Every `MosquittoConnection` runs it first;
    /// call it earlier to choose the thread it runs on. It is never undone (connections may live
    /// until the process exits).
    public static func initialize() { _ = libraryInitialized }

    private static let libraryInitialized: Void = { _ = mosquitto_lib_init() }()

    /// A libmosquitto result code as text. `MOSQ_ERR_ERRNO` becomes the text of the current
    /// `errno`, so call this right after the call that failed (`MosquittoError` does).
    public static func describe(_ rc: Int32) -> String {
        rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
    }

    /// A CONNACK return code as text, e.g. "Connection Refused: not authorised.".
    public static func connackText(_ code: Int32) -> String {
        String(cString: mosquitto_connack_string(code))
    }
}

/// A libmosquitto call that failed: its result code and the text for it, taken at the moment it
/// failed (for `MOSQ_ERR_ERRNO`, that moment's `errno`). It never carries a topic, a payload, a
/// username or a password, so callers may put it in logs and error messages as is.
public struct MosquittoError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The `mosq_err_t` value (`MOSQ_ERR_ERRNO`: see `description`).
    public var code: Int32
    public var description: String

    init(_ code: Int32) {
        self.code = code
        self.description = Mosquitto.describe(code)
    }

    /// Whether `publish` refused the message itself (a topic libmosquitto will not send, a
    /// payload or packet too large, a bad argument) rather than the connection: sending it again
    /// cannot help.
    public var refusesTheMessage: Bool {
        [
            MOSQ_ERR_INVAL, MOSQ_ERR_PAYLOAD_SIZE, MOSQ_ERR_MALFORMED_UTF8, MOSQ_ERR_OVERSIZE_PACKET,
            MOSQ_ERR_QOS_NOT_SUPPORTED,
        ].contains { $0.rawValue == code }
    }
}

/// An MQTT message as libmosquitto handed it to the message callback, copied out of its buffers.
public struct MosquittoMessage: Sendable, Equatable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int32
    public var retain: Bool

    public init(topic: String, payload: [UInt8], qos: Int32 = 0, retain: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// What libmosquitto's callbacks report, one case per callback.
public enum MosquittoEvent: Sendable, Equatable {
    /// The CONNACK: 0 accepted, otherwise the refusal (`Mosquitto.connackText`).
    case connected(code: Int32)
    /// The connection is closed: 0 after our own `disconnect()`, otherwise why (a `mosq_err_t`,
    /// e.g. `MOSQ_ERR_CONN_LOST` or `MOSQ_ERR_KEEPALIVE`).
    case disconnected(code: Int32)
    /// The SUBACK of subscription `mid`: the granted QoS per filter, 128 (0x80) for a refusal.
    case subscribed(mid: Int32, granted: [Int32])
    /// Message `mid` is done: QoS 0 once written, QoS 1 at its PUBACK, QoS 2 at its PUBCOMP.
    case published(mid: Int32)
    /// A message arrived on a subscription.
    case message(MosquittoMessage)
    /// One of libmosquitto's own log lines, for the levels in `MosquittoConnection.logLevels`.
    case log(level: MosquittoLogLevel, text: String)
}

/// libmosquitto's log levels (`MOSQ_LOG_*`).
public struct MosquittoLogLevel: OptionSet, Sendable, Hashable {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }
    public static let info = MosquittoLogLevel(rawValue: MOSQ_LOG_INFO)
    public static let notice = MosquittoLogLevel(rawValue: MOSQ_LOG_NOTICE)
    public static let warning = MosquittoLogLevel(rawValue: MOSQ_LOG_WARNING)
    public static let error = MosquittoLogLevel(rawValue: MOSQ_LOG_ERR)
    public static let debug = MosquittoLogLevel(rawValue: MOSQ_LOG_DEBUG)
}

/// One libmosquitto client (`struct mosquitto *`), MQTT 3.1.1, with its callbacks turned into
/// `MosquittoEvent`s, driven by poll(2) on the owner's thread — never by `mosquitto_loop_start`
/// or `mosquitto_loop`, whose select(2) cannot watch a descriptor numbered 1024 or more, which
/// a gateway with a few hundred hub identities has (docs/architecture.md, "Threads").
///
/// Two ways to drive it, both on the thread that owns it:
///
/// - **One connection, synchronously** (the DPS and dynamic-security clients): leave `handler`
///   nil, so events queue up, and call `next(until:)`, which polls the socket until an event is
///   queued or the deadline passes. `idle(until:)` services the connection (keepalive, QoS
///   acknowledgements) while the caller waits; `flush()` writes out a final DISCONNECT.
/// - **Many connections in one poll loop** (the `mqtt` transport's hub side): set `handler`,
///   which is called inside the libmosquitto calls that produce the events, and put every
///   connection's `pollDescriptor()` in one poll(2) call; hand each one's `revents` to
///   `handle(revents:)` and call `loopMisc()` now and then (keepalive, retries).
///
/// Not thread-safe, like libmosquitto's client without its own thread: every call, and so every
/// event, happens on the owner's thread. Callbacks also run inside `publish`, `subscribe` and
/// `disconnect` (libmosquitto writes at once when not inside a callback), so a handler may see
/// `.published` (QoS 0) or `.disconnected` before those calls return.
///
/// The connection keeps no password: `setCredentials` hands it to libmosquitto, which keeps its
/// own copy to reconnect with; nothing here logs it or puts it in an error.
public final class MosquittoConnection {
    /// Receives every event at once, on the owner's thread, inside the libmosquitto call that
    /// produced it. nil (the default): events queue for `next(until:)`.
    public var handler: ((MosquittoEvent) -> Void)?

    /// Which of libmosquitto's own log lines to report as `.log` events; none by default.
    public var logLevels: MosquittoLogLevel = [] {
        didSet {
            guard let mosq else { return }
            if logLevels.isEmpty {
                mosquitto_log_callback_set(mosq, nil)
            } else {
                mosquitto_log_callback_set(mosq) { _, user, level, text in
                    guard let connection = MosquittoConnection.from(user), let text,
                        !connection.logLevels.isDisjoint(with: MosquittoLogLevel(rawValue: level))
                    else { return }
                    connection.post(.log(level: MosquittoLogLevel(rawValue: level), text: String(cString: text)))
                }
            }
        }
    }

    /// The libmosquitto client; nil once `close()` has destroyed it, and every call after that
    /// does nothing (or throws `MOSQ_ERR_INVAL`).
    private var mosq: OpaquePointer?
    private var queued: [MosquittoEvent] = []

    /// A client with id `clientID` (nil: libmosquitto makes one up; then `cleanSession` must be
    /// true) speaking MQTT 3.1.1. With `cleanSession` false the broker keeps its subscriptions
    /// and queued messages across connections. Throws when libmosquitto refuses the id.
    public init(clientID: String?, cleanSession: Bool) throws(MosquittoError) {
        Mosquitto.initialize()
        guard let mosq = mosquitto_new(clientID, cleanSession, nil) else {
            throw MosquittoError(MOSQ_ERR_ERRNO.rawValue)
        }
        self.mosq = mosq
        // Unretained: libmosquitto calls back only inside calls made on this object, and its
        // client dies with it.
        mosquitto_user_data_set(mosq, Unmanaged.passUnretained(self).toOpaque())
        _ = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
        mosquitto_connect_callback_set(mosq) { _, user, rc in
            MosquittoConnection.from(user)?.post(.connected(code: rc))
        }
        mosquitto_disconnect_callback_set(mosq) { _, user, rc in
            MosquittoConnection.from(user)?.post(.disconnected(code: rc))
        }
        mosquitto_subscribe_callback_set(mosq) { _, user, mid, count, granted in
            let qos = granted.map { Array(UnsafeBufferPointer(start: $0, count: Int(max(count, 0)))) } ?? []
            MosquittoConnection.from(user)?.post(.subscribed(mid: mid, granted: qos))
        }
        mosquitto_publish_callback_set(mosq) { _, user, mid in
            MosquittoConnection.from(user)?.post(.published(mid: mid))
        }
        mosquitto_message_callback_set(mosq) { _, user, message in
            guard let message = message?.pointee else { return }
            let payload: [UInt8] =
                message.payloadlen > 0 && message.payload != nil
                ? Array(UnsafeRawBufferPointer(start: message.payload, count: Int(message.payloadlen))) : []
            MosquittoConnection.from(user)?.post(
                .message(
                    MosquittoMessage(
                        topic: message.topic.map { String(cString: $0) } ?? "", payload: payload, qos: message.qos,
                        retain: message.retain)))
        }
    }

    deinit { close() }

    /// Destroys the libmosquitto client now: its socket is closed without a DISCONNECT (call
    /// `disconnect()` first for a clean goodbye) and no event follows. Later calls do nothing.
    public func close() {
        guard let mosq else { return }
        self.mosq = nil
        queued.removeAll()
        mosquitto_destroy(mosq)
    }

    private static func from(_ user: UnsafeMutableRawPointer?) -> MosquittoConnection? {
        user.map { Unmanaged<MosquittoConnection>.fromOpaque($0).takeUnretainedValue() }
    }

    private func post(_ event: MosquittoEvent) {
        if let handler { handler(event) } else { queued.append(event) }
    }

    private func check(_ rc: Int32) throws(MosquittoError) {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MosquittoError(rc) }
    }

    private func live() throws(MosquittoError) -> OpaquePointer {
        guard let mosq else { throw MosquittoError(MOSQ_ERR_INVAL.rawValue) }
        return mosq
    }

    // MARK: - Settings (before connecting)

    /// Checks the broker's certificate against `caFile`, or the CA folder `caPath` (one of them
    /// must be given), and its host name; no client certificate (`mosquitto_tls_set`).
    public func setTLS(caFile: String?, caPath: String?) throws(MosquittoError) {
        try check(mosquitto_tls_set(try live(), caFile, caPath, nil, nil, nil))
    }

    /// The username and password of the next CONNECT. libmosquitto keeps its own copy of the
    /// password (it needs it to reconnect); this object keeps none.
    public func setCredentials(username: String, password: String?) throws(MosquittoError) {
        try check(mosquitto_username_pw_set(try live(), username, password))
    }

    /// Disables Nagle's algorithm on the socket (small messages leave at once).
    public func setTCPNoDelay(_ enabled: Bool) throws(MosquittoError) {
        try check(mosquitto_int_option(try live(), MOSQ_OPT_TCP_NODELAY, enabled ? 1 : 0))
    }

    /// How many QoS 1/2 messages may be in flight at once (0: no limit; libmosquitto queues none).
    public func setMaxInflightMessages(_ count: UInt32) throws(MosquittoError) {
        try check(mosquitto_max_inflight_messages_set(try live(), count))
    }

    // MARK: - Connecting and messaging

    /// Connects to `host:port`, waiting for the TCP connection (its duration is the system's
    /// connect timeout, not a deadline of ours); the TLS handshake, the CONNECT and its CONNACK
    /// (`.connected`) happen as the connection is driven.
    public func connect(host: String, port: Int, keepAlive: Int32) throws(MosquittoError) {
        try check(mosquitto_connect(try live(), host, Int32(clamping: port), keepAlive))
    }

    /// Starts a non-blocking connect to `host:port`: the socket exists at once and becomes
    /// writable when TCP is up; everything else happens as the connection is driven. A connect
    /// that fails shows as POLLERR/POLLHUP on the socket (libmosquitto may report nothing for it).
    public func connectAsync(host: String, port: Int, keepAlive: Int32) throws(MosquittoError) {
        try check(mosquitto_connect_async(try live(), host, Int32(clamping: port), keepAlive))
    }

    /// Reconnects, non-blocking, to the address of the last connect, keeping the session.
    public func reconnectAsync() throws(MosquittoError) {
        try check(mosquitto_reconnect_async(try live()))
    }

    /// Sends DISCONNECT and closes the socket once it is written (at once, unless called inside a
    /// callback: then `flush()` or the poll loop writes it); `.disconnected(code: 0)` follows.
    /// Does nothing when not connected.
    public func disconnect() {
        guard let mosq else { return }
        _ = mosquitto_disconnect(mosq)
    }

    /// Publishes `payload` to `topic`; returns its message id, as `.published` reports it.
    @discardableResult
    public func publish(topic: String, payload: [UInt8], qos: Int32, retain: Bool = false) throws(MosquittoError)
        -> Int32
    {
        let mosq = try live()
        guard let length = Int32(exactly: payload.count) else { throw MosquittoError(MOSQ_ERR_PAYLOAD_SIZE.rawValue) }
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes { bytes in
            mosquitto_publish(mosq, &mid, topic, length, bytes.baseAddress, qos, retain)
        }
        try check(rc)
        return mid
    }

    /// Subscribes to `filter`; returns the message id that `.subscribed` reports.
    @discardableResult
    public func subscribe(_ filter: String, qos: Int32) throws(MosquittoError) -> Int32 {
        var mid: Int32 = 0
        try check(mosquitto_subscribe(try live(), &mid, filter, qos))
        return mid
    }

    // MARK: - Driving it from a poll loop of one's own

    /// The socket, or -1 while there is none (not connected yet, disconnected, closed).
    public var socket: Int32 { mosq.map { mosquitto_socket($0) } ?? -1 }

    /// Whether libmosquitto has bytes waiting for the socket to become writable.
    public var wantsWrite: Bool { mosq.map { mosquitto_want_write($0) } ?? false }

    /// What poll(2) should watch: POLLIN always, POLLOUT when `wantsWrite` or `writable` (a
    /// non-blocking connect completes by becoming writable). nil while there is no socket.
    public func pollDescriptor(writable: Bool = false) -> pollfd? {
        let socket = socket
        guard socket >= 0 else { return nil }
        let write = writable || wantsWrite
        return pollfd(fd: socket, events: Int16(POLLIN) | (write ? Int16(POLLOUT) : 0), revents: 0)
    }

    /// Hands what poll(2) reported for `pollDescriptor()` to libmosquitto: a read on POLLIN,
    /// POLLERR or POLLHUP (reading is how it learns of errors and closes), then a write on
    /// POLLOUT if the socket is still open.
    public func handle(revents: Int16) {
        if revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 { loopRead() }
        if revents & Int16(POLLOUT) != 0, socket >= 0 { loopWrite() }
    }

    /// Reads and handles what has arrived (`mosquitto_loop_read`); events come from here.
    @discardableResult
    public func loopRead() -> Int32 { mosq.map { mosquitto_loop_read($0, 1) } ?? MOSQ_ERR_INVAL.rawValue }

    /// Writes what is queued (`mosquitto_loop_write`).
    @discardableResult
    public func loopWrite() -> Int32 { mosq.map { mosquitto_loop_write($0, 1) } ?? MOSQ_ERR_INVAL.rawValue }

    /// Keepalive (PINGREQ, and the disconnect when the broker stays silent) and retries of
    /// unacknowledged messages (`mosquitto_loop_misc`). Call it at least every few seconds.
    @discardableResult
    public func loopMisc() -> Int32 { mosq.map { mosquitto_loop_misc($0) } ?? MOSQ_ERR_INVAL.rawValue }

    // MARK: - Driving one connection synchronously

    /// The oldest queued event, servicing the connection until one arrives; nil when the
    /// deadline passes first. With a `handler` set nothing queues, so this only waits.
    public func next(until deadline: ContinuousClock.Instant) -> MosquittoEvent? {
        while true {
            if !queued.isEmpty { return queued.removeFirst() }
            guard ContinuousClock.now < deadline else { return nil }
            step(until: deadline)
        }
    }

    /// Services the connection (acknowledgements, keepalive) until the deadline; events queue.
    public func idle(until deadline: ContinuousClock.Instant) {
        while ContinuousClock.now < deadline { step(until: deadline) }
    }

    /// Writes out what is still queued (a DISCONNECT, say), for `limit` at most.
    public func flush(within limit: Duration = .milliseconds(200)) {
        let deadline = ContinuousClock.now + limit
        while wantsWrite, socket >= 0, ContinuousClock.now < deadline { step(until: deadline) }
    }

    /// One poll(2) of at most 50 ms (so keepalive runs and deadlines hold), then libmosquitto's
    /// read, write and housekeeping.
    public func step(until deadline: ContinuousClock.Instant) {
        let left = deadline - .now
        let ms = Int32(
            clamping: min(
                50, max(0, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
        guard var watched = pollDescriptor() else {
            // No socket: nothing to poll (a disconnect is queued already, if there was a connection).
            usleep(UInt32(ms) * 1000)
            return
        }
        if poll(&watched, 1, ms) > 0 { handle(revents: watched.revents) }
        loopMisc()
    }
}
