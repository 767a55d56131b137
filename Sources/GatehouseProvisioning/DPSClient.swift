import CMosquitto
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where DPS is and how to reach it.
public struct DPSSettings: Sendable {
    /// The service host, e.g. `global.azure-devices-provisioning.net`; also the TLS name checked.
    public var host: String
    public var port: Int
    public var idScope: String
    /// The CA to trust, or nil for the system's.
    public var caFile: String?
    public var apiVersion: String

    public init(
        host: String, port: Int = 8883, idScope: String, caFile: String? = nil, apiVersion: String = "2019-03-31"
    ) {
        self.host = host
        self.port = port
        self.idScope = idScope
        self.caFile = caFile
        self.apiVersion = apiVersion
    }
}

/// What DPS assigned to a registration.
public struct DPSAssignment: Sendable, Equatable {
    public var assignedHub: String
    public var deviceID: String
}

public struct ProvisioningError: Error, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let unreachable = Code(rawValue: "dps.unreachable")
        public static let refused = Code(rawValue: "dps.refused")
        public static let failed = Code(rawValue: "dps.failed")
        public static let timeout = Code(rawValue: "dps.timeout")
        public static let protocolError = Code(rawValue: "dps.protocol")
        public static let signing = Code(rawValue: "dps.signing")
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(message) [\(code.rawValue)]" }
}

/// Registers devices with DPS over MQTT (docs/protocols.md §1.a, "MQTT flow"): symmetric-key
/// attestation, one short-lived connection per registration.
///
///     CONNECT  client id {registrationId}, username {idScope}/registrations/{registrationId}/api-version=…,
///              password SAS(sr={idScope}/registrations/{registrationId}, skn=registration)
///     SUBSCRIBE $dps/registrations/res/#
///     PUBLISH  $dps/registrations/PUT/iotdps-register/?$rid=1         {"registrationId": …}
///     ← $dps/registrations/res/202/?$rid=1&retry-after=N              {"operationId": …, "status": "assigning"}
///     PUBLISH  $dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=…   (after N s)
///     ← $dps/registrations/res/200/?$rid=2                            {"status": "assigned", "registrationState": {…}}
///
/// The caller's thread drives the connection with poll(2) (`Pump`): libmosquitto's own loop
/// (`mosquitto_loop_start`) uses select(2), which cannot watch a descriptor numbered 1024 or
/// more — and a gateway with a few hundred hub identities (three descriptors each) has those, so
/// every registration after about the 340th device hung until its timeout. The callbacks only
/// hand events to the caller through `Events`, so `register` reads top to bottom like the
/// exchange above.
public enum DPSClient {
    /// Registers `registrationID` and waits for the assignment. `sign` returns the SAS token for
    /// a resource and expiry (the key stays with the caller: in memory or in the TPM).
    public static func register(
        registrationID: String, settings: DPSSettings, timeout: Duration = .seconds(60),
        sign: (_ resource: String, _ expiry: Int64) throws -> String
    ) throws(ProvisioningError) -> DPSAssignment {
        _ = initLibrary
        let events = Events()
        let box = Unmanaged.passRetained(events)
        defer { box.release() }
        guard let mosq = mosquitto_new(registrationID, true, box.toOpaque()) else {
            throw ProvisioningError(.unreachable, "libmosquitto could not create a client")
        }
        defer { mosquitto_destroy(mosq) }
        _ = mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
        let tls = mosquitto_tls_set(
            mosq, settings.caFile, settings.caFile == nil ? "/etc/ssl/certs" : nil, nil, nil, nil)
        guard tls == MOSQ_ERR_SUCCESS.rawValue else {
            throw ProvisioningError(.unreachable, "TLS setup failed: \(String(cString: mosquitto_strerror(tls)))")
        }
        let resource = "\(settings.idScope)/registrations/\(registrationID)"
        let token: String
        do {
            token = try sign(resource, Int64(Date().timeIntervalSince1970) + 3600)
        } catch {
            throw ProvisioningError(.signing, "cannot sign the registration token: \(error)")
        }
        let username = "\(settings.idScope)/registrations/\(registrationID)/api-version=\(settings.apiVersion)"
        _ = mosquitto_username_pw_set(mosq, username, token)
        mosquitto_connect_callback_set(mosq) { _, user, rc in Events.from(user).post(.connected(rc)) }
        mosquitto_disconnect_callback_set(mosq) { _, user, rc in Events.from(user).post(.disconnected(rc)) }
        mosquitto_subscribe_callback_set(mosq) { _, user, _, _, _ in Events.from(user).post(.subscribed) }
        mosquitto_message_callback_set(mosq) { _, user, message in
            guard let message else { return }
            let topic = String(cString: message.pointee.topic)
            let payload =
                message.pointee.payloadlen > 0
                ? Data(bytes: message.pointee.payload, count: Int(message.pointee.payloadlen)) : Data()
            Events.from(user).post(.message(topic, payload))
        }
        let rc = mosquitto_connect(mosq, settings.host, Int32(settings.port), 60)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            throw ProvisioningError(
                .unreachable, "cannot connect to DPS at \(settings.host):\(settings.port): \(describe(rc))")
        }
        let pump = Pump(mosq: mosq, events: events)
        defer {
            _ = mosquitto_disconnect(mosq)
            pump.flush()
        }
        let deadline = ContinuousClock.now + timeout

        switch pump.next(until: deadline) {
        case .connected(0): break
        case .connected(let code):
            throw ProvisioningError(
                .refused,
                "DPS refused the registration of \(registrationID): \(String(cString: mosquitto_connack_string(code)))")
        case .disconnected:
            throw ProvisioningError(.refused, "DPS closed the connection of \(registrationID) (TLS or credentials)")
        case nil: throw ProvisioningError(.timeout, "no answer from DPS within \(timeout)")
        default: throw ProvisioningError(.protocolError, "unexpected event before CONNACK")
        }
        _ = mosquitto_subscribe(mosq, nil, "$dps/registrations/res/#", 1)
        guard case .subscribed = pump.next(until: deadline) else {
            throw ProvisioningError(.protocolError, "DPS did not acknowledge the subscription")
        }
        let body = (try? JSONSerialization.data(withJSONObject: ["registrationId": registrationID])) ?? Data()
        var requestID = 1
        publish(mosq, "$dps/registrations/PUT/iotdps-register/?$rid=\(requestID)", body)
        while true {
            guard let event = pump.next(until: deadline) else {
                throw ProvisioningError(
                    .timeout, "DPS did not finish the registration of \(registrationID) within \(timeout)")
            }
            guard case .message(let topic, let payload) = event else {
                throw ProvisioningError(.unreachable, "the connection to DPS dropped during the registration")
            }
            let response = try Response(topic: topic, payload: payload)
            guard response.requestID == "\(requestID)" else { continue }
            switch response.status {
            case 200:
                guard response.operationStatus == "assigned", let hub = response.assignedHub,
                    let device = response.deviceID
                else {
                    throw ProvisioningError(
                        .failed,
                        "DPS answered \(response.operationStatus ?? "no status") for \(registrationID)\(response.errorText)"
                    )
                }
                return DPSAssignment(assignedHub: hub, deviceID: device)
            case 202, 429...:
                guard let operation = response.operationID else {
                    throw ProvisioningError(.protocolError, "DPS answered \(response.status) without an operationId")
                }
                // Waits while keeping the connection serviced (PUBACKs, keepalive).
                pump.idle(
                    until: min(
                        deadline, ContinuousClock.now + .seconds(min(max(response.retryAfter ?? 1, 1), 30))))
                requestID += 1
                publish(
                    mosq,
                    "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=\(requestID)&operationId=\(operation)",
                    body)
            default:
                throw ProvisioningError(
                    .refused, "DPS answered status \(response.status) for \(registrationID)\(response.errorText)")
            }
        }
    }

    private static func publish(_ mosq: OpaquePointer, _ topic: String, _ body: Data) {
        _ = body.withUnsafeBytes { bytes in
            mosquitto_publish(mosq, nil, topic, Int32(bytes.count), bytes.baseAddress, 0, false)
        }
    }

    private static let initLibrary: Void = { _ = mosquitto_lib_init() }()

    static func describe(_ rc: Int32) -> String {
        rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
    }

    /// One `$dps/registrations/res/{status}/?$rid=…&retry-after=…` message.
    struct Response {
        var status: Int
        var requestID: String?
        var retryAfter: Int?
        var operationID: String?
        var operationStatus: String?
        var assignedHub: String?
        var deviceID: String?
        var errorText: String

        init(topic: String, payload: Data) throws(ProvisioningError) {
            let prefix = "$dps/registrations/res/"
            guard topic.hasPrefix(prefix) else { throw ProvisioningError(.protocolError, "unexpected topic \(topic)") }
            let rest = topic.dropFirst(prefix.count)
            let parts = rest.split(separator: "/", maxSplits: 1)
            guard let code = parts.first.flatMap({ Int($0) }) else {
                throw ProvisioningError(.protocolError, "no status in \(topic)")
            }
            status = code
            var query: [String: String] = [:]
            if parts.count == 2, let mark = parts[1].firstIndex(of: "?") {
                for pair in parts[1][parts[1].index(after: mark)...].split(separator: "&") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    query[String(kv[0])] = kv.count == 2 ? String(kv[1]).removingPercentEncoding ?? String(kv[1]) : ""
                }
            }
            requestID = query["$rid"]
            retryAfter = query["retry-after"].flatMap { Int($0) }
            let json = (try? JSONSerialization.jsonObject(with: payload)) as? [String: Any] ?? [:]
            operationID = json["operationId"] as? String
            operationStatus = json["status"] as? String
            let state = json["registrationState"] as? [String: Any]
            assignedHub = state?["assignedHub"] as? String
            deviceID = state?["deviceId"] as? String
            let message = (json["message"] ?? json["errorMessage"] ?? state?["errorMessage"]) as? String
            errorText = message.map { ": \($0)" } ?? ""
        }
    }
}

/// Drives one libmosquitto client on the calling thread with poll(2), which, unlike the
/// select(2) inside `mosquitto_loop`, works for any descriptor number.
struct Pump {
    let mosq: OpaquePointer
    let events: Events

    /// Services the connection until an event arrives or the deadline passes.
    func next(until deadline: ContinuousClock.Instant) -> Events.Event? {
        while true {
            if let event = events.take() { return event }
            guard ContinuousClock.now < deadline else { return nil }
            step(until: deadline)
        }
    }

    /// Services the connection until the deadline, leaving events queued.
    func idle(until deadline: ContinuousClock.Instant) {
        while ContinuousClock.now < deadline { step(until: deadline) }
    }

    /// Writes out what is queued (the DISCONNECT), for a short while at most.
    func flush() {
        let deadline = ContinuousClock.now + .milliseconds(200)
        while mosquitto_want_write(mosq), mosquitto_socket(mosq) >= 0, ContinuousClock.now < deadline {
            step(until: deadline)
        }
    }

    /// One poll of at most 50 ms, then libmosquitto's read, write and housekeeping.
    private func step(until deadline: ContinuousClock.Instant) {
        let socket = mosquitto_socket(mosq)
        let left = deadline - .now
        let ms = Int32(
            clamping: min(
                50, max(0, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
        guard socket >= 0 else {
            // Closed: nothing to poll; the disconnect event is queued already.
            usleep(UInt32(ms) * 1000)
            return
        }
        var watched = pollfd(
            fd: socket, events: Int16(POLLIN) | (mosquitto_want_write(mosq) ? Int16(POLLOUT) : 0), revents: 0)
        let ready = poll(&watched, 1, ms)
        if ready > 0 {
            if watched.revents & Int16(POLLIN | POLLERR | POLLHUP) != 0 { _ = mosquitto_loop_read(mosq, 1) }
            if watched.revents & Int16(POLLOUT) != 0, mosquitto_socket(mosq) >= 0 { _ = mosquitto_loop_write(mosq, 1) }
        }
        _ = mosquitto_loop_misc(mosq)
    }
}

/// Events from libmosquitto's callbacks to the registering caller.
final class Events: Sendable {
    enum Event: Sendable {
        case connected(Int32)
        case disconnected(Int32)
        case subscribed
        case message(String, Data)
    }

    private let queue = Mutex<[Event]>([])
    private let signal = DispatchSemaphore(value: 0)

    static func from(_ raw: UnsafeMutableRawPointer?) -> Events {
        Unmanaged<Events>.fromOpaque(raw!).takeUnretainedValue()
    }

    func post(_ event: Event) {
        queue.withLock { $0.append(event) }
        signal.signal()
    }

    /// The oldest event, without waiting.
    func take() -> Event? {
        queue.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }

    func next(until deadline: ContinuousClock.Instant) -> Event? {
        let left = deadline - .now
        guard left > .zero else { return nil }
        let ms = Int(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)
        guard signal.wait(timeout: .now() + .milliseconds(ms)) == .success else { return nil }
        return queue.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }
}
