import FoundationEssentials
import IoTHubWire
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON

/// A request to the control API, body already collected.
public struct ControlRequest: Sendable {
    public var method: HTTPMethod
    /// Percent-decoded path segments: `/api/devices/dev%201` → `["api", "devices", "dev 1"]`.
    public var path: [String]
    public var query: [String: String]
    public var body: [UInt8]

    /// The body as JSON; an empty body is `{}`.
    func json() throws -> JSONValue {
        guard !body.isEmpty else { return .object([:]) }
        do {
            return try JSONValue(parsing: body)
        } catch {
            throw DevHubError(.badRequest, "request body: \(error)")
        }
    }
}

public struct ControlResponse: Sendable {
    public var status: Int
    public var body: JSONValue

    public init(status: Int = 200, body: JSONValue) {
        self.status = status
        self.body = body
    }

    static func error(_ error: any Error) -> ControlResponse {
        let devHubError = error as? DevHubError ?? DevHubError(.internalError, "\(error)")
        return ControlResponse(
            status: devHubError.code.httpStatus,
            body: .object([
                "error": .object([
                    "code": .string(devHubError.code.rawValue), "message": .string(devHubError.message),
                ])
            ]))
    }
}

/// The local HTTP/JSON control interface: enrollments, devices and their connection state,
/// received telemetry, C2D messages, direct methods and twins. Routes are listed in
/// `DevHub/Sources/DevHubKit/DevHubKit.docc/DevHub.md`.
final class ControlAPI: Sendable {
    let hub: Hub
    let dps: DPS
    let store: DevHubStore
    let threadPool: NIOThreadPool
    let info: JSONValue

    init(hub: Hub, dps: DPS, info: JSONValue) {
        self.hub = hub
        self.dps = dps
        self.store = hub.store
        self.threadPool = hub.threadPool
        self.info = info
    }

    func handle(_ request: ControlRequest, on eventLoop: any EventLoop) -> EventLoopFuture<
        ControlResponse
    > {
        let future: EventLoopFuture<ControlResponse>
        do {
            future = try route(request, on: eventLoop)
        } catch {
            return eventLoop.makeSucceededFuture(.error(error))
        }
        return future.flatMapErrorThrowing { error in .error(error) }
    }

    /// Runs `body` on the thread pool (it may touch SQLite).
    private func blocking(
        _ eventLoop: any EventLoop, status: Int = 200,
        _ body: @escaping @Sendable () throws -> JSONValue
    ) -> EventLoopFuture<ControlResponse> {
        threadPool.runIfActive(eventLoop: eventLoop) {
            ControlResponse(status: status, body: try body())
        }
    }

    private func route(_ request: ControlRequest, on eventLoop: any EventLoop) throws
        -> EventLoopFuture<ControlResponse>
    {
        let path = request.path
        let method = request.method
        func notFound() -> EventLoopFuture<ControlResponse> {
            eventLoop.makeFailedFuture(
                DevHubError(.notFound, "no route \(method) /\(path.joined(separator: "/"))"))
        }
        guard path.first == "api" else {
            if path == ["health"] {
                return eventLoop.makeSucceededFuture(ControlResponse(body: .object(["ok": .bool(true)])))
            }
            return notFound()
        }
        let rest = Array(path.dropFirst())
        switch (method, rest.first, rest.count) {
        case (.GET, nil, 0):
            return blocking(eventLoop) { [self] in
                var body = info
                body.set("devices", .int(try store.devices().count))
                body.set("connected", .int(hub.connections.count))
                body.set("telemetryStored", .int(try store.telemetryCount()))
                return body
            }

        // Enrollment groups
        case (.GET, "enrollment-groups", 1):
            return blocking(eventLoop) { [store] in .array(try store.groups().map(Self.groupJSON)) }
        case (.POST, "enrollment-groups", 1):
            let body = try request.json()
            guard let name = body["name"]?.stringValue, !name.isEmpty else {
                throw DevHubError(.badRequest, "an enrollment group needs a \"name\"")
            }
            let primary = try Self.key(body["primaryKey"], field: "primaryKey") ?? .random()
            let secondary = try Self.key(body["secondaryKey"], field: "secondaryKey")
            let group = EnrollmentGroup(
                name: name, attestation: .symmetricKey(primary: primary, secondary: secondary),
                enabled: try Self.provisioningStatus(body))
            return blocking(eventLoop, status: 201) { [store] in
                try store.saveGroup(group)
                return Self.groupJSON(group, includeKeys: true)
            }
        case (.GET, "enrollment-groups", 2):
            let name = rest[1]
            return blocking(eventLoop) { [store] in
                guard
                    let group = try store.groups().first(where: { $0.name.lowercased() == name.lowercased() })
                else {
                    throw DevHubError(.notFound, "no enrollment group \(name)")
                }
                guard let registrationID = request.query["registrationId"] else {
                    return Self.groupJSON(group, includeKeys: true)
                }
                let keys = group.deviceKeys(registrationID: registrationID)
                return .object([
                    "registrationId": .string(registrationID),
                    "deviceKey": .string(SymmetricKeyText(bytes: keys[0]).base64),
                ])
            }
        case (.DELETE, "enrollment-groups", 2):
            let name = rest[1]
            return blocking(eventLoop) { [store] in
                guard try store.deleteGroup(name) else {
                    throw DevHubError(.notFound, "no enrollment group \(name)")
                }
                return .object(["deleted": .string(name)])
            }

        // Individual enrollments
        case (.GET, "enrollments", 1):
            return blocking(eventLoop) { [store] in
                .array(try store.enrollments().map { Self.enrollmentJSON($0) })
            }
        case (.POST, "enrollments", 1):
            let body = try request.json()
            guard let registrationID = body["registrationId"]?.stringValue,
                DPS.isValidRegistrationID(registrationID)
            else {
                throw DevHubError(.badRequest, "an enrollment needs a valid \"registrationId\"")
            }
            let attestation: Attestation
            if let endorsementKey = body["endorsementKey"]?.stringValue {
                // Checked now, so a key DPS could never wrap to fails at enrollment, not at registration.
                _ = try TPMPublicKey(base64: endorsementKey, role: "endorsement key")
                attestation = .tpm(
                    endorsementKey: endorsementKey, storageRootKey: body["storageRootKey"]?.stringValue)
            } else {
                attestation = .symmetricKey(
                    primary: try Self.key(body["primaryKey"], field: "primaryKey") ?? .random(),
                    secondary: try Self.key(body["secondaryKey"], field: "secondaryKey"))
            }
            let deviceID = body["deviceId"]?.stringValue
            if let deviceID, !Hub.isValidDeviceID(deviceID) {
                throw DevHubError(.badRequest, "invalid deviceId")
            }
            let enabled = try Self.provisioningStatus(body)
            var fault: EnrollmentFault?
            if let name = body["fault"]?.stringValue {
                guard let known = EnrollmentFault(rawValue: name) else {
                    throw DevHubError(
                        .badRequest,
                        "fault is one of \(EnrollmentFault.allCases.map(\.rawValue).joined(separator: ", ")), not \(name)"
                    )
                }
                fault = known
            }
            let enrollment = IndividualEnrollment(
                registrationID: registrationID, attestation: attestation, deviceID: deviceID, enabled: enabled,
                fault: fault)
            return blocking(eventLoop, status: 201) { [store] in
                try store.saveEnrollment(enrollment)
                return Self.enrollmentJSON(enrollment, includeKeys: true)
            }
        case (.DELETE, "enrollments", 2):
            let registrationID = rest[1]
            return blocking(eventLoop) { [store] in
                guard try store.deleteEnrollment(registrationID) else {
                    throw DevHubError(.notFound, "no enrollment \(registrationID)")
                }
                return .object(["deleted": .string(registrationID)])
            }
        case (.GET, "registrations", 1):
            return blocking(eventLoop) { [store] in
                .array(
                    try store.registrations().map { $0.operationStatusJSON["registrationState"] ?? .null })
            }

        // Devices
        case (.GET, "devices", 1):
            return blocking(eventLoop) { [self] in
                .array(try store.devices().map { deviceJSON($0, includeKeys: false) })
            }
        case (.POST, "devices", 1):
            let body = try request.json()
            guard let deviceID = body["deviceId"]?.stringValue, Hub.isValidDeviceID(deviceID) else {
                throw DevHubError(.badRequest, "a device needs a valid \"deviceId\"")
            }
            let device = DeviceIdentity(
                deviceID: deviceID,
                primaryKey: try Self.key(body["primaryKey"], field: "primaryKey") ?? .random(),
                secondaryKey: try Self.key(body["secondaryKey"], field: "secondaryKey"))
            return blocking(eventLoop, status: 201) { [self] in
                try store.saveDevice(device, replace: false)
                return deviceJSON(device, includeKeys: true)
            }
        case (_, "devices", 2...):
            return try routeDevice(
                request, deviceID: rest[1], rest: Array(rest.dropFirst(2)), on: eventLoop)

        // Network connections and the devices on each (several share one AMQP connection).
        case (.GET, "connections", 1):
            return eventLoop.makeSucceededFuture(ControlResponse(body: Self.connectionsJSON(hub.connections)))

        // Telemetry
        case (.GET, "telemetry", 1):
            let deviceID = request.query["device"]
            let after = Int64(request.query["after"] ?? "0") ?? 0
            let limit = min(Int(request.query["limit"] ?? "1000") ?? 1000, 10_000)
            return blocking(eventLoop) { [store] in
                let records = try store.telemetry(deviceID: deviceID, after: after, limit: limit)
                return .object([
                    "messages": .array(records.map(Self.telemetryJSON)),
                    "last": .int(records.last?.sequence ?? after),
                ])
            }
        case (.DELETE, "telemetry", 1):
            return blocking(eventLoop) { [store] in
                try store.clearTelemetry()
                return .object(["cleared": .bool(true)])
            }
        default:
            return notFound()
        }
    }

    private func routeDevice(
        _ request: ControlRequest, deviceID: String, rest: [String], on eventLoop: any EventLoop
    ) throws -> EventLoopFuture<ControlResponse> {
        switch (request.method, rest.first, rest.count) {
        case (.GET, nil, 0):
            return blocking(eventLoop) { [self] in
                guard let device = try store.device(deviceID) else {
                    throw DevHubError(.notFound, "no device \(deviceID)")
                }
                return deviceJSON(device, includeKeys: true)
            }
        case (.DELETE, nil, 0):
            return blocking(eventLoop) { [self] in
                guard try store.deleteDevice(deviceID) else {
                    throw DevHubError(.notFound, "no device \(deviceID)")
                }
                hub.disconnect(deviceID, reason: "device \(deviceID) was deleted")
                return .object(["deleted": .string(deviceID)])
            }
        case (.POST, "c2d", 1):
            let body = try request.json()
            let properties = try Self.properties(body["properties"])
            let payload = try Self.payload(body)
            return hub.sendC2D(
                deviceID: deviceID, properties: properties, payload: payload, on: eventLoop
            ).map { message in
                ControlResponse(status: 202, body: Self.c2dJSON(message))
            }
        case (.GET, "c2d", 1):
            return blocking(eventLoop) { [store] in
                .array(try store.c2dMessages(deviceID: deviceID, queuedOnly: false).map(Self.c2dJSON))
            }
        case (.POST, "methods", 2):
            // The body follows IoT Hub's service API: {"payload": …, "responseTimeoutInSeconds": n}.
            let body = try request.json()
            let name = rest[1]
            let timeout =
                body["responseTimeoutInSeconds"]?.doubleValue ?? body["timeoutSeconds"]?.doubleValue ?? 30
            guard timeout > 0, timeout <= Double(IoTHubLimits.directMethodTimeoutSeconds.upperBound) else {
                throw DevHubError(.badRequest, "responseTimeoutInSeconds must be in 0…300")
            }
            let payload = body["payload"].map { $0.utf8Bytes } ?? Array("null".utf8)
            return hub.invokeMethod(
                deviceID: deviceID, name: name, payload: payload,
                timeout: .milliseconds(Int64(timeout * 1000)),
                on: eventLoop
            ).map { result in
                let parsed: JSONValue
                if result.payload.isEmpty {
                    parsed = .null
                } else if let json = try? JSONValue(parsing: result.payload) {
                    parsed = json
                } else {
                    parsed = .string(String(decoding: result.payload, as: UTF8.self))
                }
                return ControlResponse(body: .object(["status": .int(result.status), "payload": parsed]))
            }
        case (.GET, "twin", 1):
            return blocking(eventLoop) { [store] in
                guard try store.device(deviceID) != nil else {
                    throw DevHubError(.notFound, "no device \(deviceID)")
                }
                return Self.twinJSON(try store.twin(deviceID))
            }
        case (.PATCH, "twin", 2) where rest[1] == "desired",
            (.POST, "twin", 2) where rest[1] == "desired":
            let patch = try request.json()
            return hub.patchDesired(deviceID: deviceID, patch: patch, on: eventLoop).map { twin in
                ControlResponse(body: Self.twinJSON(twin))
            }
        default:
            return eventLoop.makeFailedFuture(
                DevHubError(.notFound, "no route \(request.method) /\(request.path.joined(separator: "/"))")
            )
        }
    }

    // MARK: JSON shapes

    static func key(_ value: JSONValue?, field: String) throws -> SymmetricKeyText? {
        guard let value, value != .null else { return nil }
        guard let text = value.stringValue, let key = SymmetricKeyText(base64: text) else {
            throw DevHubError(.badRequest, "\"\(field)\" must be base64 of 16 to 64 bytes")
        }
        return key
    }

    /// Properties as `{"k": "v"}` or, to keep order and allow null values, `[["k", "v"], …]`.
    static func properties(_ value: JSONValue?) throws -> [MessageProperty] {
        switch value {
        case nil, .null?: return []
        case .object(let members)?:
            return try members.map { member in
                guard let text = member.value.stringValue else {
                    throw DevHubError(.badRequest, "property \(member.key) must be a string")
                }
                return MessageProperty(member.key, text)
            }
        case .array(let pairs)?:
            return try pairs.map { pair in
                guard case .array(let parts) = pair, parts.count == 2, let name = parts[0].stringValue,
                    parts[1] == .null || parts[1].stringValue != nil
                else { throw DevHubError(.badRequest, "properties must be [name, value] pairs of strings") }
                return MessageProperty(name, parts[1].stringValue)
            }
        default:
            throw DevHubError(.badRequest, "properties must be an object or a list of pairs")
        }
    }

    /// `payload` (text, or any JSON which is sent as its text) or `payloadBase64`.
    static func payload(_ body: JSONValue) throws -> [UInt8] {
        if let base64 = body["payloadBase64"]?.stringValue {
            guard let data = Data(base64Encoded: base64) else {
                throw DevHubError(.badRequest, "payloadBase64 is not base64")
            }
            return [UInt8](data)
        }
        switch body["payload"] {
        case nil, .null?: return []
        case .string(let text)?: return Array(text.utf8)
        case let json?: return json.utf8Bytes
        }
    }

    static func groupJSON(_ group: EnrollmentGroup) -> JSONValue {
        groupJSON(group, includeKeys: false)
    }

    /// `provisioningStatus` of an enrollment or group: `enabled` (the default) or `disabled`.
    static func provisioningStatus(_ body: JSONValue) throws -> Bool {
        switch body["provisioningStatus"]?.stringValue {
        case nil, "enabled": true
        case "disabled": false
        case let other?: throw DevHubError(.badRequest, "provisioningStatus is enabled or disabled, not \(other)")
        }
    }

    static func groupJSON(_ group: EnrollmentGroup, includeKeys: Bool) -> JSONValue {
        var json = JSONValue.object([
            "name": .string(group.name), "attestation": .string(group.attestation.type),
            "provisioningStatus": .string(group.enabled ? "enabled" : "disabled"),
            "createdAt": .string(DevHubTime.iso8601(group.createdAt)),
        ])
        if includeKeys, case .symmetricKey(let primary, let secondary) = group.attestation {
            json.set("primaryKey", .string(primary.base64))
            if let secondary { json.set("secondaryKey", .string(secondary.base64)) }
        }
        return json
    }

    static func enrollmentJSON(_ enrollment: IndividualEnrollment, includeKeys: Bool = false)
        -> JSONValue
    {
        var json = JSONValue.object([
            "registrationId": .string(enrollment.registrationID),
            "attestation": .string(enrollment.attestation.type),
            "deviceId": .string(enrollment.deviceID ?? enrollment.registrationID),
            "provisioningStatus": .string(enrollment.enabled ? "enabled" : "disabled"),
            "fault": enrollment.fault.map { .string($0.rawValue) } ?? .null,
            "createdAt": .string(DevHubTime.iso8601(enrollment.createdAt)),
        ])
        switch enrollment.attestation {
        case .symmetricKey(let primary, let secondary):
            if includeKeys {
                json.set("primaryKey", .string(primary.base64))
                if let secondary { json.set("secondaryKey", .string(secondary.base64)) }
            }
        case .tpm(let endorsementKey, _):
            json.set("endorsementKey", .string(endorsementKey))
        }
        return json
    }

    func deviceJSON(_ device: DeviceIdentity, includeKeys: Bool) -> JSONValue {
        var json = JSONValue.object([
            "deviceId": .string(device.deviceID), "source": .string(device.source),
            "createdAt": .string(DevHubTime.iso8601(device.createdAt)),
        ])
        if let connection = hub.connection(device.deviceID) {
            json.set("connected", .bool(true))
            json.set("connectedSince", .string(DevHubTime.iso8601(connection.connectedAt)))
            let last = Double(connection.lastActivity.load(ordering: .relaxed)) / 1000
            json.set("lastActivity", .string(DevHubTime.iso8601(Date(timeIntervalSince1970: last))))
            json.set("remoteAddress", .string(connection.remoteAddress))
            json.set("messagesReceived", .int(connection.messagesReceived.load(ordering: .relaxed)))
            json.set("transport", .string(connection.transport.rawValue))
            json.set("connectionId", .int(Int(connection.connectionID)))
            json.set("tokenExpiry", .int(Int(connection.tokenExpiry.load(ordering: .relaxed))))
        } else {
            json.set("connected", .bool(false))
        }
        if includeKeys {
            json.set("primaryKey", .string(device.primaryKey.base64))
            if let secondary = device.secondaryKey { json.set("secondaryKey", .string(secondary.base64)) }
            json.set(
                "connectionString",
                .string(
                    "HostName=\(hub.hubName);DeviceId=\(device.deviceID);SharedAccessKey=\(device.primaryKey.base64)"
                ))
        }
        return json
    }

    /// One entry per network connection, oldest first: its transport, peer and devices.
    static func connectionsJSON(_ devices: [DeviceConnection]) -> JSONValue {
        let byConnection = Dictionary(grouping: devices, by: \.connectionID)
        return .array(
            byConnection.keys.sorted().map { id in
                let members = byConnection[id]!.sorted { $0.deviceID < $1.deviceID }
                let first = members[0]
                return .object([
                    "id": .int(Int(id)), "transport": .string(first.transport.rawValue),
                    "remoteAddress": .string(first.remoteAddress),
                    "authentication": first.connectionDetail.map(JSONValue.string) ?? .null,
                    "deviceCount": .int(members.count),
                    "devices": .array(members.map { .string($0.deviceID) }),
                ])
            })
    }

    static func telemetryJSON(_ record: TelemetryRecord) -> JSONValue {
        .object([
            "seq": .int(record.sequence), "deviceId": .string(record.deviceID),
            "receivedAt": .string(DevHubTime.iso8601(record.receivedAt)), "topic": .string(record.topic),
            "properties": DevHubStore.propertiesJSON(record.properties),
            "payload": String(validating: record.payload, as: UTF8.self).map(JSONValue.string) ?? .null,
            "payloadBase64": .string(Data(record.payload).base64EncodedString()),
            "qos": .int(Int(record.qos)),
        ])
    }

    static func c2dJSON(_ message: C2DMessage) -> JSONValue {
        .object([
            "seq": .int(message.sequence), "deviceId": .string(message.deviceID),
            "messageId": .string(message.messageID),
            "properties": DevHubStore.propertiesJSON(message.properties),
            "payload": String(validating: message.payload, as: UTF8.self).map(JSONValue.string) ?? .null,
            "state": .string(message.state), "createdAt": .string(DevHubTime.iso8601(message.createdAt)),
            "deliveredAt": message.deliveredAt.map { .string(DevHubTime.iso8601($0)) } ?? .null,
            "outcome": message.outcome.map { .string($0.rawValue) } ?? .null,
            "deliveryCount": .int(message.deliveryCount),
        ])
    }

    static func twinJSON(_ twin: DeviceTwin) -> JSONValue {
        var document = twin.deviceDocument
        document = .object([
            "deviceId": .string(twin.deviceID),
            "properties": document,
        ])
        return document
    }
}

// MARK: - HTTP

/// One HTTP/1.1 request put together from NIO's parts: the head, then the body up to a limit.
/// Shared by the control API and DPS over HTTPS.
struct HTTPRequestCollector {
    enum Outcome {
        case incomplete
        case complete(HTTPRequestHead, [UInt8])
        /// The body went over the limit (what arrived of it was dropped).
        case tooLarge
    }

    let maxBodySize: Int
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(maxBodySize: Int) { self.maxBodySize = maxBodySize }

    mutating func add(_ part: HTTPServerRequestPart) -> Outcome {
        switch part {
        case .head(let head):
            self.head = head
            body = []
            tooLarge = false
        case .body(let buffer):
            if body.count + buffer.readableBytes > maxBodySize {
                tooLarge = true
                body = []
            } else {
                body.append(contentsOf: buffer.readableBytesView)
            }
        case .end:
            guard let head else { return .incomplete }
            self.head = nil
            return tooLarge ? .tooLarge : .complete(head, body)
        }
        return .incomplete
    }
}

/// Collects one HTTP request, answers it through ``ControlAPI``, then closes the connection.
final class ControlHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let maxBodySize = 4 << 20

    private let api: ControlAPI
    private let logger: Logger
    private var collector = HTTPRequestCollector(maxBodySize: maxBodySize)

    init(api: ControlAPI, logger: Logger) {
        self.api = api
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch collector.add(unwrapInboundIn(data)) {
        case .incomplete:
            return
        case .tooLarge:
            respond(context: context, ControlResponse.error(DevHubError(.badRequest, "request body over 4 MiB")))
        case .complete(let head, let body):
            let (path, query) = Self.split(head.uri)
            let controlRequest = ControlRequest(method: head.method, path: path, query: query, body: body)
            logger.debug("control API \(head.method) \(head.uri)")
            api.handle(controlRequest, on: context.eventLoop).assumeIsolated().whenSuccess { [self] response in
                respond(context: context, response)
            }
        }
    }

    private func respond(context: ChannelHandlerContext, _ response: ControlResponse) {
        let text = response.body.prettyDescription + "\n"
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(text.utf8.count))
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    static func split(_ uri: String) -> (path: [String], query: [String: String]) {
        let pathPart: Substring
        var query: [String: String] = [:]
        if let question = uri.firstIndex(of: "?") {
            pathPart = uri[..<question]
            for property in PropertyBag.decode(uri[uri.index(after: question)...]) {
                query[property.name] = property.value ?? ""
            }
        } else {
            pathPart = uri[...]
        }
        let path = pathPart.split(separator: "/").map { PropertyBag.percentDecode($0) }
        return (path, query)
    }
}
