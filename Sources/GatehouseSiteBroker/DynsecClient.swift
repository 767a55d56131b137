import FoundationEssentials
import MosquittoClient
import StrictJSON

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
/// The calling thread drives the connection with poll(2) while it waits for an answer
/// (`MosquittoConnection.next(until:)`), so the exchange reads top to bottom; libmosquitto's
/// own thread (`mosquitto_loop_start`) would use select(2), blind past descriptor 1023. Nothing
/// services the connection between calls: the CLI's sessions last seconds, well inside the
/// 30 s keepalive.
public final class DynsecClient {
    public static let controlTopic = "$CONTROL/dynamic-security/v1"
    public static let responseTopic = "$CONTROL/dynamic-security/v1/response"

    /// One answer: the command's name, the plugin's error text if it refused, and its data.
    public struct Response: Sendable {
        public var command: String
        public var error: String?
        public var data: JSONObject
    }

    let endpoint: BrokerEndpoint
    let timeout: Duration
    private let connection: MosquittoConnection
    private var closed = false
    private let session = "gh-\(UInt64.random(in: 0...UInt64.max))"
    private var sequence = 0

    /// Connects and subscribes to the response topic as `username`. The password is handed to
    /// libmosquitto and not kept.
    public init(endpoint: BrokerEndpoint, username: String, password: String, timeout: Duration = .seconds(10))
        throws(SiteBrokerError)
    {
        self.endpoint = endpoint
        self.timeout = timeout
        let clientID = "gatehouse-admin-\(UInt32.random(in: 0...UInt32.max))"
        do {
            connection = try MosquittoConnection(clientID: clientID, cleanSession: true)
        } catch {
            throw SiteBrokerError(.unreachable, "libmosquitto could not create a client")
        }
        do {
            try open(username: username, password: password)
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    private func open(username: String, password: String) throws(SiteBrokerError) {
        if let caFile = endpoint.caFile {
            do {
                try connection.setTLS(caFile: caFile, caPath: nil)
            } catch {
                throw SiteBrokerError(.unreachable, "TLS setup for \(endpoint) with \(caFile) failed: \(error)")
            }
        }
        do {
            try connection.setCredentials(username: username, password: password)
        } catch {
            throw SiteBrokerError(
                .unreachable, "cannot log in to the site broker at \(endpoint) as `\(username)`: \(error)")
        }
        do {
            try connection.connect(host: endpoint.host, port: endpoint.port, keepAlive: 30)
        } catch {
            throw SiteBrokerError(.unreachable, "cannot reach the site broker at \(endpoint): \(error)")
        }
        let deadline = ContinuousClock.now + timeout
        switch connection.next(until: deadline) {
        case .connected(0): break
        case .connected(let code):
            throw SiteBrokerError(
                .authRefused,
                "the site broker at \(endpoint) refused the login of `\(username)`: "
                    + Mosquitto.connackText(code))
        case .disconnected:
            throw SiteBrokerError(
                .unreachable,
                "the site broker at \(endpoint) closed the connection before accepting it (TLS or protocol mismatch?)")
        case nil:
            throw SiteBrokerError(.timeout, "no answer from the site broker at \(endpoint) within \(timeout)")
        default:
            throw SiteBrokerError(.protocolError, "unexpected event from \(endpoint) before CONNACK")
        }
        _ = try? connection.subscribe(Self.responseTopic, qos: 1)
        switch connection.next(until: deadline) {
        case .subscribed(_, let granted) where granted.first.map({ $0 != 0x80 }) ?? false: break
        case .subscribed:
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
    public func run(_ commands: [JSONObject]) throws(SiteBrokerError) -> [Response] {
        guard !commands.isEmpty else { return [] }
        var ids: [String] = []
        var tagged: [JSONValue] = []
        for var command in commands {
            sequence += 1
            let id = "\(session)-\(sequence)"
            command["correlationData"] = .string(id)
            ids.append(id)
            tagged.append(.object(command))
        }
        let body: JSONValue = ["commands": .array(tagged)]
        do {
            try connection.publish(topic: Self.controlTopic, payload: body.utf8Bytes, qos: 1)
        } catch {
            throw SiteBrokerError(.unreachable, "cannot send to the site broker at \(endpoint): \(error)")
        }
        var answers: [String: Response] = [:]
        let deadline = ContinuousClock.now + timeout
        while answers.count < ids.count {
            guard let event = connection.next(until: deadline) else {
                throw SiteBrokerError(
                    .timeout,
                    "the site broker at \(endpoint) did not answer \(commands.compactMap { $0["command"]?.stringValue }.joined(separator: ", ")) within \(timeout)"
                )
            }
            switch event {
            case .message(let message) where message.topic == Self.responseTopic:
                // Parsed strictly: a response with a repeated member is not taken (nor is its id).
                let json = try? JSONValue(parsing: message.payload)
                for item in json?["responses"]?.arrayValue ?? [] {
                    guard let id = item["correlationData"]?.stringValue, ids.contains(id) else { continue }
                    answers[id] = Response(
                        command: item["command"]?.stringValue ?? "", error: item["error"]?.stringValue,
                        data: item["data"]?.objectValue ?? [:])
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
    public func require(_ command: JSONObject, what: String) throws(SiteBrokerError) -> Response {
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
        connection.disconnect()
        connection.flush()
        connection.close()
    }
}
