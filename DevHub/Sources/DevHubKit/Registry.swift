import FoundationEssentials
import IoTHubWire
import StrictJSON

#if canImport(Glibc)
    import Glibc
#endif

// The records DevHub keeps: DPS enrollments and registrations, the hub's identity registry,
// and what devices sent or were sent. `DevHubStore` persists them.

/// How an enrollment proves a device's identity to DPS. Symmetric keys work over MQTT today;
/// TPM (endorsement key + the nonce challenge over HTTPS) and X.509 fit the same record.
public enum Attestation: Sendable, Equatable {
    /// A primary and an optional secondary key (raw bytes). For a group, devices use keys derived
    /// from these (docs/protocols.md §1.a); for an individual enrollment, these keys themselves.
    case symmetricKey(primary: SymmetricKeyText, secondary: SymmetricKeyText?)
    /// A TPM's endorsement key (base64 `TPM2B_PUBLIC`) and optional storage root key; individual
    /// enrollments only. Registration over MQTT refuses it (TPM needs HTTPS, docs/protocols.md §1.b).
    case tpm(endorsementKey: String, storageRootKey: String?)

    /// The type name DPS uses: `symmetricKey`, `tpm`.
    public var type: String {
        switch self {
        case .symmetricKey: "symmetricKey"
        case .tpm: "tpm"
        }
    }
}

/// A DPS enrollment group: any registration id whose key derives from the group key.
public struct EnrollmentGroup: Sendable, Equatable {
    public var name: String
    public var attestation: Attestation
    /// DPS's `provisioningStatus`: a device of a disabled group still attests (its SAS token is
    /// verified), but its registration ends `failed` and no hub device is made.
    public var enabled: Bool
    public var createdAt: Date

    public init(name: String, attestation: Attestation, enabled: Bool = true, createdAt: Date = Date()) {
        self.name = name
        self.attestation = attestation
        self.enabled = enabled
        self.createdAt = createdAt
    }

    /// The key a device with `registrationID` must sign with, for each group key.
    func deviceKeys(registrationID: String) -> [[UInt8]] {
        guard case .symmetricKey(let primary, let secondary) = attestation else { return [] }
        return [primary, secondary].compactMap { $0 }.map {
            SASVerifier.deriveDeviceKey(groupKey: $0.bytes, registrationID: registrationID)
        }
    }
}

/// A DPS individual enrollment: one registration id with its own attestation, optionally
/// mapped to a different hub device id.
public struct IndividualEnrollment: Sendable, Equatable {
    public var registrationID: String
    public var attestation: Attestation
    /// The hub device id to create; nil means the registration id.
    public var deviceID: String?
    /// DPS's `provisioningStatus`: a disabled enrollment still attests, but its registration
    /// ends `failed` (over HTTPS) or is refused (over MQTT).
    public var enabled: Bool
    /// A fault DevHub injects into this enrollment's HTTPS registrations, to test devices'
    /// refusal and retry paths; nil in normal use.
    public var fault: EnrollmentFault?
    public var createdAt: Date

    public init(
        registrationID: String, attestation: Attestation, deviceID: String? = nil, enabled: Bool = true,
        fault: EnrollmentFault? = nil, createdAt: Date = Date()
    ) {
        self.registrationID = registrationID
        self.attestation = attestation
        self.deviceID = deviceID
        self.enabled = enabled
        self.fault = fault
        self.createdAt = createdAt
    }
}

/// Faults DevHub can inject into DPS HTTPS registrations (test aids, never on by default).
public enum EnrollmentFault: String, Sendable, CaseIterable {
    /// Every `authenticationKey` sent has one bit flipped in its duplicate: the TPM refuses it.
    case tamperAuthenticationKey = "tamper-authentication-key"
    /// The first request of each registration is answered 429 with `Retry-After: 1`.
    case throttle
}

/// A device identity in the hub's registry, with SAS keys.
public struct DeviceIdentity: Sendable, Equatable {
    public var deviceID: String
    public var primaryKey: SymmetricKeyText
    public var secondaryKey: SymmetricKeyText?
    /// Who created it: `api` or `dps:group:{name}` / `dps:individual`.
    public var source: String
    public var createdAt: Date

    public init(
        deviceID: String, primaryKey: SymmetricKeyText, secondaryKey: SymmetricKeyText? = nil,
        source: String = "api", createdAt: Date = Date()
    ) {
        self.deviceID = deviceID
        self.primaryKey = primaryKey
        self.secondaryKey = secondaryKey
        self.source = source
        self.createdAt = createdAt
    }

    var keys: [[UInt8]] { [primaryKey, secondaryKey].compactMap { $0?.bytes } }
}

/// The outcome of a DPS registration (DeviceRegistrationResult, docs/protocols.md §1.a).
public struct Registration: Sendable, Equatable {
    public var registrationID: String
    public var operationID: String
    public var status: String
    public var substatus: String
    public var deviceID: String
    public var assignedHub: String
    /// `group:{name}` or `individual`.
    public var enrollment: String
    public var createdAt: Date
    public var updatedAt: Date
    public var etag: String

    /// RegistrationOperationStatus JSON, as DPS answers an operation-status query.
    public var operationStatusJSON: JSONValue {
        .object([
            "operationId": .string(operationID),
            "status": .string(status),
            "registrationState": .object([
                "registrationId": .string(registrationID),
                "createdDateTimeUtc": .string(DevHubTime.iso8601(createdAt)),
                "assignedHub": .string(assignedHub),
                "deviceId": .string(deviceID),
                "status": .string(status),
                "substatus": .string(substatus),
                "lastUpdatedDateTimeUtc": .string(DevHubTime.iso8601(updatedAt)),
                "etag": .string(etag),
            ]),
        ])
    }
}

/// One device-to-cloud message as DevHub received it.
public struct TelemetryRecord: Sendable, Equatable {
    /// Assigned by the store; 0 until stored.
    public var sequence: Int64
    public var deviceID: String
    public var receivedAt: Date
    public var topic: String
    /// The topic's property bag, decoded, in the device's order.
    public var properties: [MessageProperty]
    public var payload: [UInt8]
    public var qos: UInt8

    public init(
        sequence: Int64 = 0, deviceID: String, receivedAt: Date = Date(), topic: String,
        properties: [MessageProperty], payload: [UInt8], qos: UInt8
    ) {
        self.sequence = sequence
        self.deviceID = deviceID
        self.receivedAt = receivedAt
        self.topic = topic
        self.properties = properties
        self.payload = payload
        self.qos = qos
    }
}

/// A cloud-to-device message, queued until the device acknowledges it.
public struct C2DMessage: Sendable, Equatable {
    public var sequence: Int64
    public var deviceID: String
    public var messageID: String
    public var properties: [MessageProperty]
    public var payload: [UInt8]
    /// `queued` (waiting, or sent and not settled), `delivered` (completed), `rejected`, or
    /// `deadlettered` (abandoned too often).
    public var state: String
    public var createdAt: Date
    /// When it was last settled, except by an abandon.
    public var deliveredAt: Date?
    /// How the device last settled it; nil before it did.
    public var outcome: C2DOutcome?
    /// How many times the device settled it (each abandon counts).
    public var deliveryCount: Int
}

/// How a device settles a cloud-to-device message (docs/protocols.md §3.2): over AMQP
/// accepted, released and rejected; over MQTT a PUBACK completes.
public enum C2DOutcome: String, Sendable {
    case completed, abandoned, rejected

    /// Deliveries after which an abandoned message is dead-lettered (IoT Hub's default).
    public static let maxDeliveryCount = 10
}

/// A device twin: desired and reported properties, each with its own `$version`.
public struct DeviceTwin: Sendable, Equatable {
    public var deviceID: String
    public var desired: JSONValue
    public var desiredVersion: Int
    public var reported: JSONValue
    public var reportedVersion: Int

    /// The document a device gets for a twin GET: both sections with their `$version`.
    public var deviceDocument: JSONValue {
        var desired = desired
        desired.set("$version", .int(desiredVersion))
        var reported = reported
        reported.set("$version", .int(reportedVersion))
        return .object(["desired": desired, "reported": reported])
    }
}

enum DevHubTime {
    /// UTC ISO 8601 with 7 fractional digits, the form DPS uses.
    static func iso8601(_ date: Date) -> String {
        let seconds = date.timeIntervalSince1970
        let whole = floor(seconds)
        var time = time_t(whole)
        var parts = tm()
        gmtime_r(&time, &parts)
        let ticks = Int((seconds - whole) * 10_000_000)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let fraction = String(ticks)
        return
            "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + String(repeating: "0", count: max(0, 7 - fraction.count)) + fraction + "Z"
    }
}
