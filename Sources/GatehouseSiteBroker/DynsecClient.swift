import CMosquitto
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where the site broker is, and the CA to check its certificate with (nil: plain MQTT, as on
/// the gateway's own loopback listener).
public struct BrokerEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var caFile: String?

    public init(host: String, port: Int, caFile: String? = nil) {
        self.host = host
        self.port = port
        self.caFile = caFile
    }

    public var description: String { "\(host):\(port)" }
}

/// An error talking to the site broker. Never carries a password: not the admin's, not a
/// device's (messages are built from names, codes and the broker's own error strings).
public struct SiteBrokerError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        /// No TCP/TLS connection to the broker.
        public static let unreachable = Code(rawValue: "site.unreachable")
        /// The broker refused the admin login (CONNACK 4/5).
        public static let authRefused = Code(rawValue: "site.auth-refused")
        /// The admin may not use `$CONTROL/dynamic-security/v1` (no dynsec plugin, or no ACL).
        public static let notAdmin = Code(rawValue: "site.not-admin")
        public static let alreadyExists = Code(rawValue: "site.already-exists")
        public static let notFound = Code(rawValue: "site.not-found")
        /// The dynamic-security plugin answered a command with an error.
        public static let rejected = Code(rawValue: "site.rejected")
        public static let timeout = Code(rawValue: "site.timeout")
        public static let protocolError = Code(rawValue: "site.protocol")
        public static let invalidDeviceID = Code(rawValue: "site.invalid-device-id")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// A client of mosquitto's dynamic security plugin: JSON commands published to
/// `$CONTROL/dynamic-security/v1`, answers read from `$CONTROL/dynamic-security/v1/response`.
///
///     → {"commands":[{"command":"createClient","username":…,"correlationData":"gh-…-0"}, …]}
///     ← {"responses":[{"command":"createClient","correlationData":"gh-…-0"}]}          (ok)
///     ← {"responses":[{"command":"createClient","error":"Client already exists",…}]}    (refused)
///
/// mosquitto 2.0.11 publishes every response to every subscriber of the response topic, so
/// each command carries a random `correlationData` and only our own answers are taken.
/// libmosquitto runs the connection on its own thread; its callbacks only queue events for
/// the calling thread (`BrokerEvents`), so the exchange reads top to bottom.
public final class DynsecClient {
    public static let controlTopic = "$CONTROL/dynamic-security/v1"
    public static let responseTopic = "$CONTROL/dynamic-security/v1/response"

    /// One answer: the command's name, the plugin's error text if it refused, and its data.
    public struct Response: @unchecked Sendable {
        // @unchecked: `data` is an immutable JSON tree from JSONSerialization, never mutated.
        public var command: String
        public var error: String?
        public var data: [String: Any]
    }

    let endpoint: BrokerEndpoint
    let timeout: Duration
    private let mosq: OpaquePointer
    private let events: BrokerEvents
    private let box: Unmanaged<BrokerEvents>
    private var closed = false
    private let session = "gh-\(UInt64.random(in: 0...UInt64.max))"
    private var sequence = 0

    /// Connects and subscribes to the response topic as `username`. The password is handed to
    /// libmosquitto and not kept.
    public init(endpoint: BrokerEndpoint, username: String, password: String, timeout: Duration = .seconds(10))
        throws(SiteBrokerError)
    {
        _ = Self.initLibrary
        self.endpoint = endpoint
        self.timeout = timeout
        events = BrokerEvents()
        box = Unmanaged.passRetained(events)
        let clientID = "gatehouse-admin-\(UInt32.random(in: 0...UInt32.max))"
        guard let mosq = mosquitto_new(clientID, true, box.toOpaque()) else {
            box.release()
            throw SiteBrokerError(.unreachable, "libmosquitto could not create a client")
        }
        self.mosq = mosq
        do {
            try open(username: username, password: password)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    private func open(username: String, password: String) throws(SiteBrokerError) {
        _ = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
        if let caFile = endpoint.caFile {
            let rc = mosquitto_tls_set(mosq, caFile, nil, nil, nil, nil)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw SiteBrokerError(
                    .unreachable, "TLS setup for \(endpoint) with \(caFile) failed: \(Self.describe(rc))")
            }
        }
        _ = mosquitto_username_pw_set(mosq, username, password)
        mosquitto_connect_callback_set(mosq) { _, user, rc in BrokerEvents.from(user).post(.connected(rc)) }
        mosquitto_disconnect_callback_set(mosq) { _, user, rc in BrokerEvents.from(user).post(.disconnected(rc)) }
        mosquitto_subscribe_callback_set(mosq) { _, user, _, count, granted in
            let refused = count < 1 || granted == nil || granted![0] == 0x80
            BrokerEvents.from(user).post(.subscribed(granted: !refused))
        }
        mosquitto_message_callback_set(mosq) { _, user, message in
            guard let message else { return }
            let topic = String(cString: message.pointee.topic)
            let payload =
                message.pointee.payloadlen > 0
                ? Data(bytes: message.pointee.payload, count: Int(message.pointee.payloadlen)) : Data()
            BrokerEvents.from(user).post(.message(topic, payload))
        }
        let rc = mosquitto_connect(mosq, endpoint.host, Int32(endpoint.port), 30)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw SiteBrokerError(.unreachable, "cannot reach the site broker at \(endpoint): \(Self.describe(rc))")
        }
        _ = mosquitto_loop_start(mosq)
        let deadline = ContinuousClock.now + timeout
        switch events.next(until: deadline) {
        case .connected(0): break
        case .connected(let code):
            throw SiteBrokerError(
                .authRefused,
                "the site broker at \(endpoint) refused the login of `\(username)`: "
                    + String(cString: mosquitto_connack_string(code)))
        case .disconnected:
            throw SiteBrokerError(
                .unreachable,
                "the site broker at \(endpoint) closed the connection before accepting it (TLS or protocol mismatch?)")
        case nil:
            throw SiteBrokerError(.timeout, "no answer from the site broker at \(endpoint) within \(timeout)")
        default:
            throw SiteBrokerError(.protocolError, "unexpected event from \(endpoint) before CONNACK")
        }
        _ = mosquitto_subscribe(mosq, nil, Self.responseTopic, 1)
        switch events.next(until: deadline) {
        case .subscribed(granted: true): break
        case .subscribed(granted: false):
            throw SiteBrokerError(
                .notAdmin,
                "`\(username)` may not use \(Self.controlTopic) on \(endpoint): is the dynamic security plugin loaded, "
                    + "and is `\(username)` its admin client (mosquitto_ctrl dynsec init)?")
        case .disconnected:
            throw SiteBrokerError(.unreachable, "the site broker at \(endpoint) closed the connection")
        default:
            throw SiteBrokerError(.timeout, "the site broker at \(endpoint) did not acknowledge the subscription")
        }
    }

    /// Sends the commands in one message and returns their responses in the same order.
    /// A command's own refusal is in its `Response.error`; only transport failures throw.
    public func run(_ commands: [[String: Any]]) throws(SiteBrokerError) -> [Response] {
        guard !commands.isEmpty else { return [] }
        var ids: [String] = []
        var tagged: [[String: Any]] = []
        for var command in commands {
            sequence += 1
            let id = "\(session)-\(sequence)"
            command["correlationData"] = id
            ids.append(id)
            tagged.append(command)
        }
        let body: Data
        do {
            body = try JSONSerialization.data(withJSONObject: ["commands": tagged])
        } catch {
            throw SiteBrokerError(.protocolError, "cannot encode a dynamic security command")
        }
        let rc = body.withUnsafeBytes { bytes in
            mosquitto_publish(mosq, nil, Self.controlTopic, Int32(bytes.count), bytes.baseAddress, 1, false)
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw SiteBrokerError(.unreachable, "cannot send to the site broker at \(endpoint): \(Self.describe(rc))")
        }
        var answers: [String: Response] = [:]
        let deadline = ContinuousClock.now + timeout
        while answers.count < ids.count {
            guard let event = events.next(until: deadline) else {
                throw SiteBrokerError(
                    .timeout,
                    "the site broker at \(endpoint) did not answer \(commands.compactMap { $0["command"] as? String }.joined(separator: ", ")) within \(timeout)"
                )
            }
            switch event {
            case .message(Self.responseTopic, let payload):
                let json = (try? JSONSerialization.jsonObject(with: payload)) as? [String: Any]
                for item in json?["responses"] as? [[String: Any]] ?? [] {
                    guard let id = item["correlationData"] as? String, ids.contains(id) else { continue }
                    answers[id] = Response(
                        command: item["command"] as? String ?? "", error: item["error"] as? String,
                        data: item["data"] as? [String: Any] ?? [:])
                }
            case .disconnected:
                throw SiteBrokerError(.unreachable, "the site broker at \(endpoint) closed the connection")
            default: continue
            }
        }
        return ids.map { answers[$0]! }
    }

    /// Runs one command; its refusal becomes an error (`alreadyExists`, `notFound`, `rejected`).
    @discardableResult
    public func require(_ command: [String: Any], what: String) throws(SiteBrokerError) -> Response {
        let response = try run([command])[0]
        if let error = response.error { throw Self.refusal(error, what: what) }
        return response
    }

    /// Maps the plugin's error text to a code: "Client already exists", "Role not found", ….
    public static func refusal(_ error: String, what: String) -> SiteBrokerError {
        let lowered = error.lowercased()
        let code: SiteBrokerError.Code =
            lowered.contains("already exists") ? .alreadyExists : lowered.contains("not found") ? .notFound : .rejected
        return SiteBrokerError(code, "\(what): the site broker answered \"\(error)\"")
    }

    public func close() {
        guard !closed else { return }
        closed = true
        _ = mosquitto_disconnect(mosq)
        _ = mosquitto_loop_stop(mosq, false)
        mosquitto_destroy(mosq)
        box.release()
    }

    private static let initLibrary: Void = { _ = mosquitto_lib_init() }()

    static func describe(_ rc: Int32) -> String {
        rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
    }
}

/// Events from libmosquitto's thread to the waiting caller.
final class BrokerEvents: Sendable {
    enum Event: Sendable {
        case connected(Int32)
        case disconnected(Int32)
        case subscribed(granted: Bool)
        case message(String, Data)
    }

    private let queue = Mutex<[Event]>([])
    private let signal = DispatchSemaphore(value: 0)

    static func from(_ raw: UnsafeMutableRawPointer?) -> BrokerEvents {
        Unmanaged<BrokerEvents>.fromOpaque(raw!).takeUnretainedValue()
    }

    func post(_ event: Event) {
        queue.withLock { $0.append(event) }
        signal.signal()
    }

    func next(until deadline: ContinuousClock.Instant) -> Event? {
        let left = deadline - .now
        guard left > .zero else { return nil }
        let ms = Int(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
        guard signal.wait(timeout: .now() + .milliseconds(ms)) == .success else { return nil }
        return queue.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }
}
