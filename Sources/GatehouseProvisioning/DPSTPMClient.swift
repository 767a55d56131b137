import FoundationEssentials
import GatehouseTPM
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON

extension ProvisioningError.Code {
    /// The TPM could not be reached or could not give its endorsement / storage root key.
    public static let tpmUnavailable = Self(rawValue: "dps.tpm-unavailable")
    /// DPS has no TPM enrollment for the registration id, or one for another endorsement key.
    public static let notEnrolled = Self(rawValue: "dps.not-enrolled")
    /// The TPM refused an `authenticationKey` DPS sent: altered, or made for another TPM.
    public static let blobRefused = Self(rawValue: "dps.blob-refused")
}

/// Registers the gateway itself with DPS by TPM attestation over HTTPS (docs/protocols.md §1.b):
///
///     PUT  …/register  {"registrationId", "tpm": {"endorsementKey", "storageRootKey"}}   (no Authorization)
///     ← 401 {"authenticationKey": blob₁, "keyName": "registration"}
///          import blob₁ into the TPM (ActivateCredential + Import, persisted at 0x81000100)
///     PUT  …/register  {"registrationId"}   Authorization: SAS(sr={idScope}/registrations/{id}, skn=registration), HMAC in the TPM
///     ← 202 {"operationId", "status": "assigning"}, Retry-After
///     GET  …/operations/{operationId}   (same Authorization), honouring Retry-After, until
///     ← 200 {"status": "assigned", "registrationState": {"assignedHub", "deviceId", "tpm": {"authenticationKey": blob₂}}}
///          import blob₂: the key at 0x81000100 now signs the hub's SAS tokens
///
/// HTTP 429 and 5xx are transient (retried after `Retry-After`). Every error names what failed
/// and never carries a key or a token.
public enum DPSTPMClient {
    public static let apiVersion = "2021-06-01"
    /// Lifetime of the DPS SAS token (the C SDK's default).
    static let tokenLifetime: Int64 = 2400

    /// Runs the whole exchange. `tpm` is the process's one TPM context (swtpm serves one
    /// client): the calls into it are synchronous and short.
    public static func register(
        registrationID: String, settings: DPSSettings, tpm: TPMContext, timeout: Duration = .seconds(120),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(ProvisioningError) -> DPSAssignment {
        let deadline = ContinuousClock.now + timeout
        let endorsementKey: Data
        let storageRootKey: Data
        do {
            endorsementKey = try tpm.endorsementKeyPublic()
            storageRootKey = try tpm.storageRootKeyPublic()
        } catch {
            throw ProvisioningError(
                .tpmUnavailable, "cannot read the TPM's endorsement and storage root keys: \(error)")
        }
        let base = "/\(percent(settings.idScope))/registrations/\(percent(registrationID))"
        let exchange = Exchange(settings: settings, group: group, deadline: deadline)

        // 1. The challenge.
        let challengeBody: JSONValue = [
            "registrationId": .string(registrationID),
            "tpm": [
                "endorsementKey": .string(endorsementKey.base64EncodedString()),
                "storageRootKey": .string(storageRootKey.base64EncodedString()),
            ],
        ]
        let challenge = try await exchange.send(
            .PUT, "\(base)/register?api-version=\(apiVersion)", json: challengeBody, authorization: nil)
        guard challenge.status == 401, let blob = challenge.json["authenticationKey"]?.stringValue else {
            switch challenge.status {
            case 401, 403, 404:
                throw ProvisioningError(
                    .notEnrolled,
                    "DPS refused TPM attestation of registration \(registrationID) (HTTP \(challenge.status)): \(challenge.errorText)"
                )
            default:
                throw ProvisioningError(
                    .protocolError,
                    "DPS answered the TPM challenge request with HTTP \(challenge.status), not 401 with an authenticationKey: \(challenge.errorText)"
                )
            }
        }
        try importBlob(blob, into: tpm, what: "the registration key (the 401 challenge)")

        // 2. The registration, signed by the TPM.
        let resource = "\(settings.idScope)/registrations/\(registrationID)"
        let token: String
        do {
            token = try SharedAccessSignature.make(
                resource: resource, expiry: Int64(Date().timeIntervalSince1970) + tokenLifetime,
                policyName: challenge.json["keyName"]?.stringValue ?? "registration", context: tpm)
        } catch {
            throw ProvisioningError(.signing, "the TPM cannot sign the DPS token: \(error)")
        }
        var response = try await exchange.send(
            .PUT, "\(base)/register?api-version=\(apiVersion)", json: ["registrationId": .string(registrationID)],
            authorization: token)
        var operationID: String?
        // 3. Poll until the operation finishes.
        while true {
            switch response.status {
            case 200 where response.json["status"]?.stringValue != "assigning":
                return try finish(response.json, registrationID: registrationID, tpm: tpm)
            case 200, 202:
                guard let id = response.json["operationId"]?.stringValue ?? operationID else {
                    throw ProvisioningError(.protocolError, "DPS accepted the registration without an operationId")
                }
                operationID = id
            case 401, 403:
                throw ProvisioningError(
                    .refused,
                    "DPS refused the registration signed by the TPM (HTTP \(response.status)): \(response.errorText)")
            case 404:
                throw ProvisioningError(.notEnrolled, "DPS: \(response.errorText)")
            default:
                throw ProvisioningError(
                    .protocolError, "DPS answered the registration with HTTP \(response.status): \(response.errorText)")
            }
            try await exchange.pause(response.retryAfter ?? 2)
            response = try await exchange.send(
                .GET, "\(base)/operations/\(percent(operationID!))?api-version=\(apiVersion)", json: nil,
                authorization: token)
        }
    }

    /// The final RegistrationOperationStatus: `assigned` with the hub key, or an error.
    static func finish(_ json: JSONObject, registrationID: String, tpm: TPMContext) throws(ProvisioningError)
        -> DPSAssignment
    {
        let status = json["status"]?.stringValue ?? ""
        let state = json["registrationState"]?.objectValue ?? [:]
        guard status == "assigned" else {
            var detail = "status \(status)"
            if let code = state["errorCode"] { detail += ", error \(shown(code))" }
            if let message = state["errorMessage"]?.stringValue { detail += ": \(message)" }
            throw ProvisioningError(.failed, "DPS did not assign registration \(registrationID) (\(detail))")
        }
        guard let hub = state["assignedHub"]?.stringValue, let device = state["deviceId"]?.stringValue else {
            throw ProvisioningError(.protocolError, "DPS assigned \(registrationID) without assignedHub and deviceId")
        }
        guard let blob = state["tpm"]?["authenticationKey"]?.stringValue else {
            throw ProvisioningError(
                .protocolError, "DPS assigned \(registrationID) without registrationState.tpm.authenticationKey")
        }
        try importBlob(blob, into: tpm, what: "the hub key (registrationState.tpm.authenticationKey)")
        return DPSAssignment(assignedHub: hub, deviceID: device)
    }

    static func importBlob(_ text: String, into tpm: TPMContext, what: String) throws(ProvisioningError) {
        let blob: AuthenticationKeyBlob
        do {
            blob = try AuthenticationKeyBlob(base64: text)
        } catch {
            throw ProvisioningError(.protocolError, "DPS sent \(what) in a form that does not parse: \(error)")
        }
        do {
            try tpm.importAuthenticationKey(blob)
        } catch {
            if error.code ~= .integrity || error.operation == "Esys_Import"
                || error.operation == "Esys_ActivateCredential"
            {
                throw ProvisioningError(
                    .blobRefused,
                    "the TPM refused \(what) from DPS in \(error.operation): it was altered, or not made for this TPM's endorsement and storage root keys (\(error))"
                )
            }
            throw ProvisioningError(.tpmUnavailable, "cannot import \(what) into the TPM: \(error)")
        }
    }

    static func percent(_ text: String) -> String { SharedAccessSignature.percentEncode(text) }

    /// A value from a DPS answer for a message: a string as it is, anything else as JSON.
    static func shown(_ value: JSONValue) -> String { value.stringValue ?? value.description }

    /// The HTTP side: requests, transient retries, the deadline.
    struct Exchange {
        var settings: DPSSettings
        var group: any EventLoopGroup
        var deadline: ContinuousClock.Instant

        struct Reply {
            var status: Int
            /// The body, when it is a JSON object; empty otherwise.
            var json: JSONObject
            var retryAfter: Int?

            /// DPS's error text (ProvisioningServiceErrorDetails or aziot's variant).
            var errorText: String {
                let code = json["errorCode"] ?? json["code"]
                let message = json["message"] ?? json["errorMessage"]
                switch (code.map(shown), message.map(shown)) {
                case (let code?, let message?): return "\(message) (error \(code))"
                case (nil, let message?): return message
                case (let code?, nil): return "error \(code)"
                default: return "no error details"
                }
            }
        }

        func send(_ method: HTTPMethod, _ target: String, json: JSONValue?, authorization: String?)
            async throws(ProvisioningError) -> Reply
        {
            var headers = [("Accept", "application/json"), ("User-Agent", "gatehouse")]
            var body: [UInt8] = []
            if let json {
                headers.append(("Content-Type", "application/json; charset=utf-8"))
                body = json.utf8Bytes
            }
            if let authorization { headers.append(("Authorization", authorization)) }
            let request = HTTPSRequest(
                method: method, host: settings.host, port: settings.port, target: target, headers: headers, body: body)
            while true {
                let remaining = deadline - .now
                guard remaining > .zero else {
                    throw ProvisioningError(.timeout, "DPS registration did not finish in time")
                }
                let response: HTTPSResponse
                do {
                    response = try await request.send(
                        caFile: settings.caFile, timeout: min(remaining, .seconds(30)), group: group)
                } catch {
                    throw ProvisioningError(.unreachable, "DPS at \(settings.host):\(settings.port): \(error)")
                }
                // Parsed strictly (a repeated member is refused): no object, no fields to act on.
                let object = (try? JSONValue(parsing: response.body))?.objectValue ?? [:]
                let retryAfter = response.headers.first(name: "Retry-After").flatMap { Int($0) }
                if response.status == 429 || response.status >= 500 {
                    try await pause(retryAfter ?? 2)  // transient (docs/protocols.md §1.a)
                    continue
                }
                return Reply(status: response.status, json: object, retryAfter: retryAfter)
            }
        }

        /// Waits `seconds` (1…60), or throws when that passes the deadline.
        func pause(_ seconds: Int) async throws(ProvisioningError) {
            let wait = Duration.seconds(min(max(seconds, 1), 60))
            guard ContinuousClock.now + wait < deadline else {
                throw ProvisioningError(.timeout, "DPS registration did not finish in time")
            }
            try? await Task.sleep(for: wait)
        }
    }
}
