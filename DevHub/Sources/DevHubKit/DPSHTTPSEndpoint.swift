import FoundationEssentials
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON
import Synchronization

// DPS over HTTPS (docs/protocols.md §1.a "HTTPS flow" and §1.b "HTTP flow"): the transport TPM
// attestation needs. Symmetric-key registrations work here too (SAS in `Authorization`).
//
//   PUT /{idScope}/registrations/{registrationId}/register?api-version=…
//   GET /{idScope}/registrations/{registrationId}/operations/{operationId}?api-version=…
//
// TPM: the first PUT (no Authorization, body with `tpm.endorsementKey` + `storageRootKey`) gets
// `401 {"authenticationKey", "keyName":"registration"}`: a fresh registration key wrapped for
// that TPM (TPMAttestation.swift). The second PUT carries a SAS signed with it; the operation
// then ends `assigned` with a second blob in `registrationState.tpm.authenticationKey`, wrapping
// the key the hub device is created with.

/// One DPS HTTPS answer.
struct DPSHTTPResponse: Sendable {
    var status: Int
    var body: JSONValue
    var retryAfter: Int?

    static func error(_ status: Int, code: Int, _ message: String) -> DPSHTTPResponse {
        DPSHTTPResponse(
            status: status,
            body: (try? JSONValue(parsing: DPS.errorBody(code: code, message: message))) ?? .null)
    }
}

/// The registration logic behind the HTTPS listener. Secrets (registration keys) live only in
/// memory, for the time between the challenge and the registration.
final class DPSHTTPS: Sendable {
    /// An outstanding TPM challenge: the key wrapped into the first blob, and the TPM's keys.
    struct Challenge: Sendable {
        var key: [UInt8]
        var endorsementKey: TPMPublicKey
        var storageRootKey: TPMPublicKey
    }

    /// A registration operation, as its status is polled.
    struct Operation: Sendable {
        var registrationID: String
        /// The keys a polling SAS may be signed with (those the register PUT was verified with).
        var keys: [[UInt8]]
        var keyNames: Set<String>
        /// Polls still answered `assigning` (one, so clients exercise `Retry-After`).
        var assigningPolls: Int
        var result: JSONValue
        var createdAt = Date()
    }

    /// How long an operation can be polled (and its keys stay in memory).
    static let operationLifetime: TimeInterval = 600

    struct State: Sendable {
        var challenges: [String: Challenge] = [:]
        var operations: [String: Operation] = [:]
        /// Registrations already answered 429 once (`EnrollmentFault.throttle`).
        var throttled: Set<String> = []
    }

    let dps: DPS
    private let state = Mutex(State())

    init(dps: DPS) { self.dps = dps }

    var logger: Logger { dps.logger }

    /// Answers one request. Runs on the thread pool (it reads the store).
    func handle(method: HTTPMethod, path: [String], authorization: String?, body: [UInt8]) -> DPSHTTPResponse {
        guard path.count >= 4, path[1] == "registrations" else {
            return .error(404, code: 404000, "no such DPS resource")
        }
        guard path[0].lowercased() == dps.idScope.lowercased() else {
            return .error(404, code: 404001, "unknown ID scope \"\(path[0])\"")
        }
        let registrationID = path[2]
        guard DPS.isValidRegistrationID(registrationID) else {
            return .error(400, code: 400004, "invalid registration id")
        }
        do {
            switch (method, path.count, path[3]) {
            case (.PUT, 4, "register"):
                return try register(registrationID: registrationID, authorization: authorization, body: body)
            case (.GET, 5, "operations"):
                return operationStatus(
                    registrationID: registrationID, operationID: path[4], authorization: authorization)
            default:
                return .error(404, code: 404000, "no route \(method) for this DPS resource")
            }
        } catch let error as DevHubError {
            return .error(error.code.httpStatus, code: error.code.httpStatus * 1000, error.message)
        } catch {
            logger.error("DPS HTTPS: registration \(registrationID) failed: \(error)")
            return .error(500, code: 500000, "internal error")
        }
    }

    private func register(registrationID: String, authorization: String?, body: [UInt8]) throws
        -> DPSHTTPResponse
    {
        let request: JSONValue
        do {
            request = body.isEmpty ? .object([:]) : try JSONValue(parsing: body)
        } catch {
            return .error(400, code: 400004, "the request body is not JSON")
        }
        if let named = request["registrationId"]?.stringValue, named.lowercased() != registrationID.lowercased() {
            return .error(400, code: 400004, "registrationId does not match the URL")
        }
        let enrollment = try dps.store.enrollment(registrationID: registrationID)
        if enrollment?.fault == .throttle,
            state.withLock({ $0.throttled.insert(registrationID.lowercased()).inserted })
        {
            var response = DPSHTTPResponse.error(429, code: 429001, "throttled (fault injected by the enrollment)")
            response.retryAfter = 1
            return response
        }
        guard let authorization else {
            return try challenge(registrationID: registrationID, request: request, enrollment: enrollment)
        }
        guard let token = SASToken(authorization) else {
            return .error(401, code: 401002, "the Authorization header is not a SAS token")
        }
        let resource = "\(dps.idScope)/registrations/\(registrationID)"
        let operationKeys: [[UInt8]]
        var keyNames: Set<String> = ["", "registration"]
        var result: JSONValue
        var operationID = Self.newOperationID()
        switch (enrollment, enrollment?.attestation) {
        case (let enrollment?, .tpm?):
            keyNames = ["registration"]
            guard let challenge = state.withLock({ $0.challenges[registrationID.lowercased()] }) else {
                return .error(
                    401, code: 401002,
                    "no outstanding TPM challenge for this registration: send the first PUT with the tpm object")
            }
            let verdict = SASVerifier.verify(
                token, expectedResource: resource, keys: [challenge.key], allowedKeyNames: keyNames)
            guard verdict == .valid else {
                logger.notice("DPS HTTPS: registration \(registrationID): SAS token refused: \(verdict)")
                return .error(401, code: 401002, "SAS token refused: \(verdict)")
            }
            state.withLock { _ = $0.challenges.removeValue(forKey: registrationID.lowercased()) }
            operationKeys = [challenge.key]
            if enrollment.enabled {
                let hubKey = TPMWrap.random(32)
                var blob = try TPMWrap.authenticationKey(
                    hmacKey: hubKey, endorsementKey: challenge.endorsementKey,
                    storageRootKey: challenge.storageRootKey)
                if enrollment.fault == .tamperAuthenticationKey { blob = Self.tampered(blob) }
                let registration = try dps.record(
                    registrationID: registrationID, deviceID: enrollment.deviceID ?? registrationID,
                    keys: [SymmetricKeyText(bytes: hubKey)], label: "individual")
                operationID = registration.operationID
                result = registration.operationStatusJSON
                var registrationState = result["registrationState"] ?? .object([:])
                registrationState.set(
                    "tpm", .object(["authenticationKey": .string(Data(blob).base64EncodedString())]))
                result.set("registrationState", registrationState)
            } else {
                result = Self.failed(operationID: operationID, registrationID: registrationID)
            }
        case (let enrollment?, .symmetricKey(let primary, let secondary)?):
            let keys = [primary, secondary].compactMap { $0?.bytes }
            let verdict = SASVerifier.verify(token, expectedResource: resource, keys: keys, allowedKeyNames: keyNames)
            guard verdict == .valid else {
                logger.notice("DPS HTTPS: registration \(registrationID): SAS token refused: \(verdict)")
                return .error(401, code: 401002, "SAS token refused: \(verdict)")
            }
            operationKeys = keys
            if enrollment.enabled {
                let registration = try dps.assign(registrationID: registrationID, enrollment: .individual(enrollment))
                operationID = registration.operationID
                result = registration.operationStatusJSON
            } else {
                result = Self.failed(operationID: operationID, registrationID: registrationID)
            }
        default:
            var matched: (EnrollmentGroup, [[UInt8]])?
            for group in try dps.store.groups() {
                let keys = group.deviceKeys(registrationID: registrationID)
                if SASVerifier.verify(token, expectedResource: resource, keys: keys, allowedKeyNames: keyNames)
                    == .valid
                {
                    matched = (group, keys)
                    break
                }
            }
            guard let (group, keys) = matched else {
                logger.notice("DPS HTTPS: registration \(registrationID): SAS token matches no enrollment")
                return .error(401, code: 401002, "SAS token refused: signature matches no enrollment")
            }
            operationKeys = keys
            let registration = try dps.assign(registrationID: registrationID, enrollment: .group(group))
            operationID = registration.operationID
            result = registration.operationStatusJSON
        }
        let operation = Operation(
            registrationID: registrationID, keys: operationKeys, keyNames: keyNames, assigningPolls: 1, result: result)
        let cutoff = Date().addingTimeInterval(-Self.operationLifetime)
        state.withLock {
            $0.operations = $0.operations.filter { $0.value.createdAt > cutoff }
            $0.operations[operationID] = operation
        }
        return DPSHTTPResponse(
            status: 202,
            body: .object(["operationId": .string(operationID), "status": .string("assigning")]),
            retryAfter: DPS.retryAfterSeconds)
    }

    /// The first PUT of TPM attestation: checks the EK against the enrollment and answers with
    /// a registration key only that TPM can import.
    private func challenge(registrationID: String, request: JSONValue, enrollment: IndividualEnrollment?) throws
        -> DPSHTTPResponse
    {
        guard let tpm = request["tpm"], let endorsementKeyText = tpm["endorsementKey"]?.stringValue else {
            return .error(401, code: 401002, "no Authorization header (a SAS token, or a tpm object to attest with)")
        }
        guard let enrollment, case .tpm(let enrolledKey, let enrolledRoot) = enrollment.attestation else {
            logger.notice("DPS HTTPS: registration \(registrationID) has no TPM enrollment")
            return .error(404, code: 404202, "registration \(registrationID) has no TPM individual enrollment")
        }
        guard let presented = Data(base64Encoded: endorsementKeyText),
            presented == Data(base64Encoded: enrolledKey)
        else {
            logger.notice("DPS HTTPS: registration \(registrationID) presented another endorsement key")
            return .error(401, code: 401002, "the endorsement key does not match the enrollment")
        }
        guard let rootText = tpm["storageRootKey"]?.stringValue else {
            return .error(400, code: 400004, "tpm.storageRootKey is required")
        }
        if let enrolledRoot, Data(base64Encoded: enrolledRoot) != Data(base64Encoded: rootText) {
            return .error(401, code: 401002, "the storage root key does not match the enrollment")
        }
        let endorsementKey = try TPMPublicKey(base64: endorsementKeyText, role: "endorsement key")
        let storageRootKey = try TPMPublicKey(base64: rootText, role: "storage root key")
        let key = TPMWrap.random(32)
        var blob = try TPMWrap.authenticationKey(
            hmacKey: key, endorsementKey: endorsementKey, storageRootKey: storageRootKey)
        if enrollment.fault == .tamperAuthenticationKey { blob = Self.tampered(blob) }
        state.withLock {
            $0.challenges[registrationID.lowercased()] = Challenge(
                key: key, endorsementKey: endorsementKey, storageRootKey: storageRootKey)
        }
        logger.info("DPS HTTPS: TPM challenge sent to registration \(registrationID)")
        return DPSHTTPResponse(
            status: 401,
            body: .object([
                "authenticationKey": .string(Data(blob).base64EncodedString()), "keyName": .string("registration"),
            ]))
    }

    private func operationStatus(registrationID: String, operationID: String, authorization: String?)
        -> DPSHTTPResponse
    {
        guard let operation = state.withLock({ $0.operations[operationID] }),
            operation.registrationID.lowercased() == registrationID.lowercased()
        else {
            return .error(404, code: 404201, "operation \(operationID) not found")
        }
        guard let authorization, let token = SASToken(authorization) else {
            return .error(401, code: 401002, "a SAS token is required")
        }
        let verdict = SASVerifier.verify(
            token, expectedResource: "\(dps.idScope)/registrations/\(registrationID)", keys: operation.keys,
            allowedKeyNames: operation.keyNames)
        guard verdict == .valid else { return .error(401, code: 401002, "SAS token refused: \(verdict)") }
        let stillAssigning = state.withLock { state -> Bool in
            guard let polls = state.operations[operationID]?.assigningPolls, polls > 0 else { return false }
            state.operations[operationID]?.assigningPolls = polls - 1
            return true
        }
        if stillAssigning {
            return DPSHTTPResponse(
                status: 202,
                body: .object(["operationId": .string(operationID), "status": .string("assigning")]),
                retryAfter: DPS.retryAfterSeconds)
        }
        if operation.result["status"]?.stringValue == "failed" {
            logger.notice("DPS HTTPS: registration \(registrationID) failed: the enrollment is disabled")
        }
        return DPSHTTPResponse(status: 200, body: operation.result)
    }

    /// The RegistrationOperationStatus of a registration whose enrollment is disabled.
    static func failed(operationID: String, registrationID: String) -> JSONValue {
        let now = DevHubTime.iso8601(Date())
        return .object([
            "operationId": .string(operationID), "status": .string("failed"),
            "registrationState": .object([
                "registrationId": .string(registrationID), "createdDateTimeUtc": .string(now),
                "status": .string("failed"), "errorCode": .int(403004),
                "errorMessage": .string("the enrollment is disabled"), "lastUpdatedDateTimeUtc": .string(now),
            ]),
        ])
    }

    /// `blob` with one bit flipped inside the duplicate's inner wrapper (item 3), which the
    /// TPM's integrity check in TPM2_Import catches.
    static func tampered(_ blob: [UInt8]) -> [UInt8] {
        var offset = 0
        for _ in 0..<2 { offset += 2 + (Int(blob[offset]) << 8 | Int(blob[offset + 1])) }
        var altered = blob
        altered[offset + 2 + 40] ^= 0x01
        return altered
    }

    static func newOperationID() -> String {
        "4.\(String(UInt64.random(in: 0...UInt64.max), radix: 16)).\(UUID().uuidString.lowercased())"
    }
}

/// Collects one HTTPS request, answers it through ``DPSHTTPS``, then closes the connection.
final class DPSHTTPSHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    static let maxBodySize = 64 << 10

    private let endpoint: DPSHTTPS
    private var collector = HTTPRequestCollector(maxBodySize: maxBodySize)

    init(endpoint: DPSHTTPS) { self.endpoint = endpoint }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch collector.add(unwrapInboundIn(data)) {
        case .incomplete:
            return
        case .tooLarge:
            respond(context: context, .error(413, code: 413000, "request body over 64 KiB"))
        case .complete(let head, let body):
            let (path, _) = ControlHTTPHandler.split(head.uri)
            let authorization = head.headers.first(name: "Authorization")
            let endpoint = endpoint
            endpoint.logger.debug("DPS HTTPS \(head.method) \(head.uri)")
            endpoint.dps.threadPool.runIfActive(eventLoop: context.eventLoop) {
                endpoint.handle(method: head.method, path: path, authorization: authorization, body: body)
            }.assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let response): respond(context: context, response)
                case .failure: respond(context: context, .error(503, code: 503000, "shutting down"))
                }
            }
        }
    }

    private func respond(context: ChannelHandlerContext, _ response: DPSHTTPResponse) {
        let text = response.body.description
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        headers.add(name: "Content-Length", value: String(text.utf8.count))
        headers.add(name: "Connection", value: "close")
        if let retryAfter = response.retryAfter { headers.add(name: "Retry-After", value: String(retryAfter)) }
        if response.status >= 400, let code = response.body["errorCode"] {
            headers.add(name: "x-ms-error-code", value: code.description)
        }
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
