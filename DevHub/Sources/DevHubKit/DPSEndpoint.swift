import FoundationEssentials
import IoTHubWire
import Logging
import MQTTCodec
import NIOCore
import NIOPosix
import StrictJSON
import Synchronization

// The Device Provisioning Service over MQTT (docs/protocols.md §1.a): symmetric-key attestation
// through enrollment groups and individual enrollments, `$dps/registrations/...` topics.

/// The DPS CONNECT username `{idScope}/registrations/{registrationId}/api-version=…`
/// (no `?`, unlike IoT Hub's).
struct DPSUsername: Equatable {
    var idScope: String
    var registrationID: String

    init?(_ username: String) {
        let parts = username.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count == 4, parts[1] == "registrations", !parts[0].isEmpty,
            parts[3].hasPrefix("api-version=")
        else { return nil }
        idScope = String(parts[0])
        registrationID = String(parts[2])
        guard DPS.isValidRegistrationID(registrationID) else { return nil }
    }
}

/// The enrollment a registration's SAS token was verified against.
enum DPSEnrollmentMatch: Sendable {
    case group(EnrollmentGroup)
    case individual(IndividualEnrollment)

    /// `group:{name}` or `individual`, as registrations record it.
    var label: String {
        switch self {
        case .group(let group): "group:\(group.name)"
        case .individual: "individual"
        }
    }
}

/// DPS: checks registration credentials against the enrollments and assigns devices to the hub.
final class DPS: Sendable {
    static let responsePrefix = "$dps/registrations/res/"
    /// Seconds a client is told to wait before polling (the `retry-after` of a 202).
    static let retryAfterSeconds = 1

    let idScope: String
    let assignedHub: String
    let store: DevHubStore
    let threadPool: NIOThreadPool
    let logger: Logger
    /// Operations of registrations through a disabled enrollment group: operation id → the
    /// `failed` RegistrationOperationStatus the poll answers (no hub device is made).
    private let failedOperations = Mutex<[String: JSONValue]>([:])

    init(
        idScope: String, assignedHub: String, store: DevHubStore, threadPool: NIOThreadPool,
        logger: Logger
    ) {
        self.idScope = idScope
        self.assignedHub = assignedHub
        self.store = store
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Registration ids: 1–128 of letters, digits, `-._:`, ending in a letter, digit or `-`.
    static func isValidRegistrationID(_ id: String) -> Bool {
        guard (1...128).contains(id.utf8.count) else { return false }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        guard id.utf8.allSatisfy({ isAlphanumeric($0) || Set("-._:".utf8).contains($0) }) else {
            return false
        }
        let last = id.utf8.last!
        return isAlphanumeric(last) || last == UInt8(ascii: "-")
    }

    // MARK: Authentication

    func authenticate(_ connect: Connect, username: DPSUsername, on eventLoop: any EventLoop)
        -> EventLoopFuture<ConnectDecision>
    {
        func refuse(_ code: ConnAck.ReturnCode, _ reason: String) -> EventLoopFuture<ConnectDecision> {
            eventLoop.makeSucceededFuture(.refuse(code, reason))
        }
        guard username.idScope.lowercased() == idScope.lowercased() else {
            return refuse(.notAuthorized, "unknown ID scope \"\(username.idScope)\"")
        }
        let registrationID = username.registrationID
        guard connect.clientID == registrationID else {
            return refuse(
                .identifierRejected, "client id \"\(connect.clientID)\" is not the registration id")
        }
        guard let password = connect.password else {
            return refuse(.notAuthorized, "no password (X.509 attestation is not supported)")
        }
        guard let text = String(validating: password, as: UTF8.self), let token = SASToken(text) else {
            return refuse(.badUsernameOrPassword, "the password is not a SAS token")
        }
        let resource = "\(idScope)/registrations/\(registrationID)"
        // Everything but the signature can be checked before looking for keys.
        let keyNames: Set<String> = ["", "registration"]
        let precheck = SASVerifier.verify(
            token, expectedResource: resource, keys: [], allowedKeyNames: keyNames)
        guard precheck == .badSignature else {
            return refuse(.notAuthorized, "SAS token refused: \(precheck)")
        }
        return threadPool.runIfActive(eventLoop: eventLoop) { [store] in
            if let enrollment = try store.enrollment(registrationID: registrationID) {
                guard enrollment.enabled else {
                    return .refuse(.notAuthorized, "the individual enrollment is disabled")
                }
                guard case .symmetricKey(let primary, let secondary) = enrollment.attestation else {
                    return .refuse(
                        .notAuthorized,
                        "the individual enrollment uses \(enrollment.attestation.type) attestation, which needs HTTPS"
                    )
                }
                let keys = [primary, secondary].compactMap { $0?.bytes }
                guard
                    SASVerifier.verify(
                        token, expectedResource: resource, keys: keys, allowedKeyNames: keyNames) == .valid
                else {
                    return .refuse(
                        .notAuthorized, "SAS token refused: signature does not match the individual enrollment")
                }
                return .dpsRegistration(.individual(enrollment))
            }
            for group in try store.groups() {
                let keys = group.deviceKeys(registrationID: registrationID)
                if SASVerifier.verify(
                    token, expectedResource: resource, keys: keys, allowedKeyNames: keyNames) == .valid
                {
                    return .dpsRegistration(.group(group))
                }
            }
            return .refuse(.notAuthorized, "SAS token refused: signature matches no enrollment")
        }
    }

    // MARK: Assignment

    /// A registration through a disabled group: no device, an operation that ends `failed`.
    /// Returns the operation id.
    func failDisabledGroup(registrationID: String, group: EnrollmentGroup) -> String {
        let operationID =
            "4.\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).\(UUID().uuidString.lowercased())"
        var result = DPSHTTPS.failed(operationID: operationID, registrationID: registrationID)
        var state = result["registrationState"] ?? .object([:])
        state.set("errorMessage", .string("the enrollment group \(group.name) is disabled"))
        result.set("registrationState", state)
        failedOperations.withLock { $0[operationID] = result }
        logger.notice("DPS: registration \(registrationID) failed: the enrollment group \(group.name) is disabled")
        return operationID
    }

    /// The `failed` status of an operation `failDisabledGroup` made, if it is one.
    func failedOperation(_ operationID: String) -> JSONValue? {
        failedOperations.withLock { $0[operationID] }
    }

    /// Creates (or re-keys) the hub device for a registration and records the assignment.
    /// Runs on the thread pool.
    func assign(registrationID: String, enrollment: DPSEnrollmentMatch) throws -> Registration {
        let deviceID: String
        let keys: [SymmetricKeyText]
        switch enrollment {
        case .group(let group):
            deviceID = registrationID
            keys = group.deviceKeys(registrationID: registrationID).map(SymmetricKeyText.init(bytes:))
        case .individual(let individual):
            deviceID = individual.deviceID ?? registrationID
            guard case .symmetricKey(let primary, let secondary) = individual.attestation else {
                throw DevHubError(
                    .badRequest, "attestation \(individual.attestation.type) cannot register over MQTT")
            }
            keys = [primary] + (secondary.map { [$0] } ?? [])
        }
        return try record(registrationID: registrationID, deviceID: deviceID, keys: keys, label: enrollment.label)
    }

    /// Creates (or re-keys) the hub device `deviceID` with `keys` and records the registration
    /// as assigned. Runs on the thread pool.
    func record(registrationID: String, deviceID: String, keys: [SymmetricKeyText], label: String) throws
        -> Registration
    {
        let now = Date()
        let existing = try store.device(deviceID)
        try store.saveDevice(
            DeviceIdentity(
                deviceID: deviceID, primaryKey: keys[0], secondaryKey: keys.count > 1 ? keys[1] : nil,
                source: "dps:\(label)", createdAt: existing?.createdAt ?? now),
            replace: true)
        let previous = try store.registration(registrationID)
        let registration = Registration(
            registrationID: registrationID,
            operationID:
                "4.\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).\(UUID().uuidString.lowercased())",
            status: "assigned", substatus: "initialAssignment", deviceID: deviceID,
            assignedHub: assignedHub,
            enrollment: label, createdAt: previous?.createdAt ?? now, updatedAt: now,
            etag: Data("\"\(UUID().uuidString.lowercased())\"".utf8).base64EncodedString())
        try store.saveRegistration(registration)
        logger.info(
            "registration \(registrationID) assigned to \(assignedHub) as device \(deviceID) (\(label))"
        )
        return registration
    }

    /// ProvisioningServiceErrorDetails, the body of a DPS error response.
    static func errorBody(code: Int, message: String) -> [UInt8] {
        JSONValue.object([
            "errorCode": .int(code), "trackingId": .string(UUID().uuidString.lowercased()),
            "message": .string(message), "timestampUtc": .string(DevHubTime.iso8601(Date())),
        ]).utf8Bytes
    }
}

// MARK: - The registration side of a session

extension MQTTSession {
    func openDPSSession(_ connect: Connect, enrollment: DPSEnrollmentMatch) {
        guard let username = DPSUsername(connect.username ?? "") else { return }
        role = .dps(registrationID: username.registrationID, enrollment: enrollment)
        logger.info("DPS registration \(username.registrationID) connected (\(enrollment.label))")
        finishConnect(sessionPresent: false)
    }

    func handleDPSPublish(_ publish: Publish, registrationID: String, enrollment: DPSEnrollmentMatch) {
        let topic = publish.topic
        let isRegister = topic.hasPrefix("$dps/registrations/PUT/iotdps-register/")
        guard isRegister || topic.hasPrefix("$dps/registrations/GET/iotdps-get-operationstatus/") else {
            close(reason: "registration \(registrationID) published to unsupported topic \"\(topic)\"")
            return
        }
        if let packetID = publish.packetID { send(.puback(packetID)) }
        let query = PropertyBag.query(ofTopic: topic)
        let rid = PropertyBag.percentEncode(query["rid"] ?? "")
        if isRegister {
            register(publish, registrationID: registrationID, enrollment: enrollment, rid: rid)
        } else {
            operationStatus(
                operationID: query["operationId"] ?? "", registrationID: registrationID, rid: rid)
        }
    }

    private func respondDPS(status: Int, rid: String, retryAfter: Int? = nil, body: [UInt8]) {
        var topic = "\(DPS.responsePrefix)\(status)/?$rid=\(rid)"
        if let retryAfter { topic += "&retry-after=\(retryAfter)" }
        sendPublish(topic: topic, payload: body, maxQoS: .atLeastOnce)
    }

    private func register(
        _ publish: Publish, registrationID: String, enrollment: DPSEnrollmentMatch, rid: String
    ) {
        guard let context else { return }
        // The body is a DeviceRegistration; if it names a registration id, it must be this one.
        if !publish.payload.isEmpty {
            guard let body = try? JSONValue(parsing: publish.payload), body.isObject else {
                respondDPS(
                    status: 400, rid: rid,
                    body: DPS.errorBody(code: 400004, message: "the request body is not JSON"))
                return
            }
            if let named = body["registrationId"]?.stringValue,
                named.lowercased() != registrationID.lowercased()
            {
                respondDPS(
                    status: 400, rid: rid,
                    body: DPS.errorBody(code: 400004, message: "registrationId does not match the connection")
                )
                return
            }
        }
        let dps = services.dps
        if case .group(let group) = enrollment, !group.enabled {
            // Attested, but the group is disabled: the operation ends failed, as DPS's does.
            let operationID = dps.failDisabledGroup(registrationID: registrationID, group: group)
            let body = JSONValue.object(["operationId": .string(operationID), "status": .string("assigning")])
            respondDPS(status: 202, rid: rid, retryAfter: DPS.retryAfterSeconds, body: body.utf8Bytes)
            return
        }
        dps.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try dps.assign(registrationID: registrationID, enrollment: enrollment)
        }.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let registration):
                // Accepted: the client polls the operation, as against the real service.
                let body = JSONValue.object([
                    "operationId": .string(registration.operationID), "status": .string("assigning"),
                ])
                respondDPS(status: 202, rid: rid, retryAfter: DPS.retryAfterSeconds, body: body.utf8Bytes)
            case .failure(let error):
                logger.error("cannot assign registration \(registrationID): \(error)")
                respondDPS(
                    status: 500, rid: rid, body: DPS.errorBody(code: 500000, message: "internal error"))
            }
        }
    }

    private func operationStatus(operationID: String, registrationID: String, rid: String) {
        guard let context else { return }
        if let failed = services.dps.failedOperation(operationID) {
            respondDPS(status: 200, rid: rid, body: failed.utf8Bytes)
            return
        }
        let store = services.dps.store
        services.dps.threadPool.runIfActive(eventLoop: context.eventLoop) {
            try store.registration(registrationID)
        }.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let registration?) where registration.operationID == operationID:
                respondDPS(status: 200, rid: rid, body: registration.operationStatusJSON.utf8Bytes)
            case .success:
                respondDPS(
                    status: 404, rid: rid,
                    body: DPS.errorBody(code: 404201, message: "operation \(operationID) not found"))
            case .failure(let error):
                logger.error("cannot read registration \(registrationID): \(error)")
                respondDPS(
                    status: 500, rid: rid, body: DPS.errorBody(code: 500000, message: "internal error"))
            }
        }
    }
}
