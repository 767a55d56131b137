import FoundationEssentials
import GatehouseTPM
import Logging

/// The signers `[identity]` and `[provisioning]` call for, made once at start.
struct SignerSetup {
    /// Signs for every hub identity: the leaves' signer, wrapped by the gateway's own when the
    /// gateway registers itself.
    var signer: any DeviceSigner
    /// The gateway's own identity (DPS TPM attestation), when `gateway_registration_id` is set.
    var gatewayIdentity: GatewayIdentitySigner?

    /// A TPM (`[identity] tpm`) signs with a key derived inside it from the TPM-wrapped group
    /// key; `group_key_file` signs in memory; neither: no leaf device can be signed for. One
    /// TPM context serves the leaves and the gateway's own identity.
    init(config: GatewayConfig, logger: Logger) throws(StartupError) {
        var signer: any DeviceSigner
        var tpmContext: TPMContext?
        let registersItself = config.provisioning?.gatewayRegistrationID != nil
        if let tcti = config.identity.tpm {
            let context: TPMContext
            do {
                context = try TPMContext(tcti: tcti)
            } catch {
                throw StartupError(
                    "\(config.place("identity", "tpm")): [identity] tpm = \"\(tcti)\": the TPM is not reachable: \(error)",
                    exitCode: StartupError.configExit)
            }
            tpmContext = context
            if registersItself, !FileManager.default.fileExists(atPath: config.identity.groupKeyBlob) {
                // The gateway's own identity only: leaf devices have no key to be signed with.
                logger.notice(
                    "no TPM-wrapped group key: only the gateway's own identity can reach the hub",
                    metadata: ["group_key_blob": "\(config.identity.groupKeyBlob)"])
                signer = NoSigner()
            } else {
                do {
                    signer = try TPMDeviceSigner(context: context, blobPath: config.identity.groupKeyBlob)
                } catch {
                    throw StartupError(
                        "\(config.place("identity", "tpm")): [identity] tpm: \(error)",
                        exitCode: StartupError.configExit)
                }
            }
        } else if let keyFile = config.identity.groupKeyFile {
            do {
                signer = try GroupKeySigner(keyFile: keyFile)
            } catch {
                throw StartupError(
                    "\(config.place("identity", "group_key_file")): [identity] group_key_file: \(error)",
                    exitCode: StartupError.configExit)
            }
        } else {
            signer = NoSigner()
        }
        if registersItself, let tpmContext {
            let own = GatewayIdentitySigner(context: tpmContext, leaves: signer)
            gatewayIdentity = own
            signer = own
        } else {
            gatewayIdentity = nil
        }
        self.signer = signer
    }
}
