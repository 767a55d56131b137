import FoundationEssentials
import IoTHubWire
import MosquittoClient
import StrictJSON

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
/// The caller's thread drives the connection (`MosquittoConnection.next(until:)`, poll(2)):
/// libmosquitto's own loop (`mosquitto_loop_start`) uses select(2), which cannot watch a
/// descriptor numbered 1024 or more — and a gateway with a few hundred hub identities (three
/// descriptors each) has those, so every registration after about the 340th device hung until its
/// timeout. Events queue for the caller, so `register` reads top to bottom like the exchange above.
public enum DPSClient {
    /// Registers `registrationID` and waits for the assignment. `sign` returns the SAS token for
    /// a resource and expiry (the key stays with the caller: in memory or in the TPM).
    public static func register(
        registrationID: String, settings: DPSSettings, timeout: Duration = .seconds(60),
        sign: (_ resource: String, _ expiry: Int64) throws -> String
    ) throws(ProvisioningError) -> DPSAssignment {
        let client: MosquittoConnection
        do {
            client = try MosquittoConnection(clientID: registrationID, cleanSession: true)
        } catch {
            throw ProvisioningError(.unreachable, "libmosquitto could not create a client")
        }
        do {
            try client.setTLS(caFile: settings.caFile, caPath: settings.caFile == nil ? "/etc/ssl/certs" : nil)
        } catch {
            throw ProvisioningError(.unreachable, "TLS setup failed: \(error)")
        }
        let resource = "\(settings.idScope)/registrations/\(registrationID)"
        let token: String
        do {
            token = try sign(resource, Int64(Date().timeIntervalSince1970) + 3600)
        } catch {
            throw ProvisioningError(.signing, "cannot sign the registration token: \(error)")
        }
        let username = "\(settings.idScope)/registrations/\(registrationID)/api-version=\(settings.apiVersion)"
        do {
            try client.setCredentials(username: username, password: token)
        } catch {
            throw ProvisioningError(.unreachable, "cannot set the credentials of \(registrationID): \(error)")
        }
        do {
            try client.connect(host: settings.host, port: settings.port, keepAlive: 60)
        } catch {
            throw ProvisioningError(
                .unreachable, "cannot connect to DPS at \(settings.host):\(settings.port): \(error)")
        }
        defer {
            client.disconnect()
            client.flush()
        }
        let deadline = ContinuousClock.now + timeout

        switch client.next(until: deadline) {
        case .connected(0): break
        case .connected(let code):
            throw ProvisioningError(
                .refused, "DPS refused the registration of \(registrationID): \(Mosquitto.connackText(code))")
        case .disconnected:
            throw ProvisioningError(.refused, "DPS closed the connection of \(registrationID) (TLS or credentials)")
        case nil: throw ProvisioningError(.timeout, "no answer from DPS within \(timeout)")
        default: throw ProvisioningError(.protocolError, "unexpected event before CONNACK")
        }
        _ = try? client.subscribe("$dps/registrations/res/#", qos: 1)
        guard case .subscribed = client.next(until: deadline) else {
            throw ProvisioningError(.protocolError, "DPS did not acknowledge the subscription")
        }
        let body = Data(JSONValue.object(["registrationId": .string(registrationID)]).utf8Bytes)
        var requestID = 1
        publish(client, "$dps/registrations/PUT/iotdps-register/?$rid=\(requestID)", body)
        while true {
            guard let event = client.next(until: deadline) else {
                throw ProvisioningError(
                    .timeout, "DPS did not finish the registration of \(registrationID) within \(timeout)")
            }
            // Our own QoS 0 requests, written.
            if case .published = event { continue }
            guard case .message(let message) = event else {
                throw ProvisioningError(.unreachable, "the connection to DPS dropped during the registration")
            }
            let response = try Response(topic: message.topic, payload: Data(message.payload))
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
                client.idle(
                    until: min(
                        deadline, ContinuousClock.now + .seconds(min(max(response.retryAfter ?? 1, 1), 30))))
                requestID += 1
                publish(
                    client,
                    "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=\(requestID)&operationId=\(operation)",
                    body)
            default:
                throw ProvisioningError(
                    .refused, "DPS answered status \(response.status) for \(registrationID)\(response.errorText)")
            }
        }
    }

    private static func publish(_ client: MosquittoConnection, _ topic: String, _ body: Data) {
        _ = try? client.publish(topic: topic, payload: [UInt8](body), qos: 0)
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
                    query[String(kv[0])] = kv.count == 2 ? PropertyBag.percentDecode(kv[1]) : ""
                }
            }
            requestID = query["$rid"]
            retryAfter = query["retry-after"].flatMap { Int($0) }
            // Parsed strictly (a repeated member is refused): no object, no fields to act on.
            let json = (try? JSONValue(parsing: payload))?.objectValue ?? [:]
            operationID = json["operationId"]?.stringValue
            operationStatus = json["status"]?.stringValue
            let state = json["registrationState"]
            assignedHub = state?["assignedHub"]?.stringValue
            deviceID = state?["deviceId"]?.stringValue
            let message = (json["message"] ?? json["errorMessage"] ?? state?["errorMessage"])?.stringValue
            errorText = message.map { ": \($0)" } ?? ""
        }
    }
}
