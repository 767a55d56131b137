import FoundationEssentials
import GatehouseProvisioning
import GatehouseStore
import GatehouseTPM
import Logging
import StrictJSON
import Synchronization

/// Signs for the gateway's own hub identity inside the TPM (the key DPS installed at
/// `0x81000100`), and for every other device through `leaves`. Both use the process's one
/// `TPMContext` (swtpm serves one client; `/dev/tpmrm0` is fine with one too).
public final class GatewayIdentitySigner: DeviceSigner {
    public let context: TPMContext
    let leaves: any DeviceSigner
    /// The hub device id DPS assigned; nil until the gateway is registered.
    private let own = Mutex<String?>(nil)

    public init(context: TPMContext, leaves: any DeviceSigner) {
        self.context = context
        self.leaves = leaves
    }

    public var deviceID: String? { own.withLock { $0 } }

    func adopt(deviceID: String) { own.withLock { $0 = deviceID } }

    public func sign(deviceID: String, resource: String, expiry: Int64, policyName: String?) throws(SignerError)
        -> String
    {
        guard deviceID == self.deviceID else {
            return try leaves.sign(deviceID: deviceID, resource: resource, expiry: expiry, policyName: policyName)
        }
        guard resource.lowercased().hasSuffix("/devices/\(deviceID.lowercased())") else {
            throw SignerError("refused to sign a resource that is not the gateway's own device \(deviceID)")
        }
        do {
            return try SharedAccessSignature.make(
                resource: resource, expiry: expiry, policyName: policyName, context: context)
        } catch {
            throw SignerError("the TPM cannot sign for the gateway's identity: \(error)")
        }
    }
}

extension Gateway {
    /// Registers the gateway itself with DPS by TPM attestation over HTTPS, once: the
    /// assignment is recorded in the state database and reused at the next start as long as the
    /// TPM still holds the key at `0x81000100`. Call before `run()`.
    ///
    /// Exit codes: 69 (EX_UNAVAILABLE) when DPS or the TPM cannot be reached or time runs out —
    /// a restart may help; 78 (EX_CONFIG) when DPS refuses (not enrolled, disabled, failed)
    /// or the TPM refuses DPS's key.
    public func provisionOwnIdentity(timeout: Duration = .seconds(120)) async throws(StartupError) {
        guard let signer = gatewayIdentitySigner, let settings = config.provisioning,
            let registrationID = settings.gatewayRegistrationID
        else { return }
        let context = signer.context
        let recorded: GatewayIdentityRecord?
        do {
            recorded = try store.gatewayIdentity()
        } catch {
            throw StartupError("\(error)", exitCode: StartupError.cantCreateExit)
        }
        if let recorded, recorded.registrationID == registrationID, recorded.idScope == settings.idScope {
            let hasKey = (try? context.persistentHandles().contains(TPMContext.authenticationKeyHandle)) ?? false
            if hasKey {
                try adopt(recorded, registered: false)
                return
            }
            logger.warning(
                "the gateway's recorded hub identity has no key in the TPM any more; registering with DPS again",
                metadata: ["registration_id": "\(registrationID)", "handle": "0x81000100"])
        }
        let dps = DPSSettings(
            host: settings.endpoint, port: settings.httpsPort, idScope: settings.idScope, caFile: settings.caFile,
            apiVersion: DPSTPMClient.apiVersion)
        logger.info(
            "registering the gateway with DPS by TPM attestation",
            metadata: [
                "registration_id": "\(registrationID)", "endpoint": "\(settings.endpoint):\(settings.httpsPort)",
                "id_scope": "\(settings.idScope)",
            ])
        let assignment: DPSAssignment
        do {
            assignment = try await DPSTPMClient.register(
                registrationID: registrationID, settings: dps, tpm: context, timeout: timeout)
        } catch {
            let exitCode: Int32 =
                switch error.code {
                case .unreachable, .timeout, .tpmUnavailable: 69  // EX_UNAVAILABLE
                default: StartupError.configExit
                }
            throw StartupError(
                "\(config.place("provisioning", "gateway_registration_id")): [provisioning] gateway_registration_id = \"\(registrationID)\": \(error)",
                exitCode: exitCode)
        }
        try adopt(
            GatewayIdentityRecord(
                registrationID: registrationID, idScope: settings.idScope, deviceID: assignment.deviceID,
                assignedHub: assignment.assignedHub, attestation: "tpm", registeredMS: TelemetryRelay.nowMS()),
            registered: true)
    }

    private func adopt(_ record: GatewayIdentityRecord, registered: Bool) throws(StartupError) {
        guard let signer = gatewayIdentitySigner else { return }
        do {
            if registered { try store.setGatewayIdentity(record) }
            try store.setProvisioning(
                deviceID: record.deviceID, state: "assigned", assignedHub: record.assignedHub,
                atMS: TelemetryRelay.nowMS())
        } catch {
            throw StartupError("\(error)", exitCode: StartupError.cantCreateExit)
        }
        signer.adopt(deviceID: record.deviceID)
        logger.info(
            registered
                ? "gateway registered with DPS (TPM attestation)" : "gateway identity reused from the state database",
            metadata: [
                "registration_id": "\(record.registrationID)", "device": "\(record.deviceID)",
                "assigned_hub": "\(record.assignedHub)",
            ])
        let hubHost = (try? JSONValue(parsing: config.hub.pluginConfigJSON))?["hostname"]?.stringValue
        if let hubHost, hubHost.lowercased() != record.assignedHub.lowercased() {
            logger.warning(
                "DPS assigned the gateway to another hub than [hub] hostname; the hub plugin connects to [hub] hostname",
                metadata: ["assigned_hub": "\(record.assignedHub)", "hub_hostname": "\(hubHost)"])
        }
    }
}
