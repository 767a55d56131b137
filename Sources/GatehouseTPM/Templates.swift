import CTSS2

/// The public templates of the keys gatehouse creates (docs/protocols.md §1.b).
enum Templates {
    /// PolicySecret(TPM_RH_ENDORSEMENT): the EK's authPolicy in the TCG EK Credential Profile.
    static let endorsementPolicy: [UInt8] = [
        0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
        0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
    ]

    /// An RSA-2048 restricted decryption key with AES-128-CFB and 256 zero bytes as `unique`:
    /// the shape both the EK (template L-1) and the SRK share.
    private static func rsaStorageKey(attributes: TPMA_OBJECT, authPolicy: [UInt8]) -> TPM2B_PUBLIC {
        var template = TPM2B_PUBLIC()
        template.publicArea.type = GH_TPM2_ALG_RSA
        template.publicArea.nameAlg = GH_TPM2_ALG_SHA256
        template.publicArea.objectAttributes = attributes
        template.publicArea.authPolicy.size = UInt16(authPolicy.count)
        copy(authPolicy, into: &template.publicArea.authPolicy.buffer)
        template.publicArea.parameters.rsaDetail.symmetric.algorithm = GH_TPM2_ALG_AES
        template.publicArea.parameters.rsaDetail.symmetric.keyBits.aes = 128
        template.publicArea.parameters.rsaDetail.symmetric.mode.aes = GH_TPM2_ALG_CFB
        template.publicArea.parameters.rsaDetail.scheme.scheme = GH_TPM2_ALG_NULL
        template.publicArea.parameters.rsaDetail.keyBits = 2048
        template.publicArea.parameters.rsaDetail.exponent = 0
        template.publicArea.unique.rsa.size = 256  // zeros
        return template
    }

    /// TCG EK Credential Profile, template L-1 (RSA 2048).
    static var endorsementKeyRSA: TPM2B_PUBLIC {
        rsaStorageKey(
            attributes: GH_TPMA_OBJECT_FIXEDTPM | GH_TPMA_OBJECT_FIXEDPARENT | GH_TPMA_OBJECT_SENSITIVEDATAORIGIN
                | GH_TPMA_OBJECT_ADMINWITHPOLICY | GH_TPMA_OBJECT_RESTRICTED | GH_TPMA_OBJECT_DECRYPT,
            authPolicy: endorsementPolicy)
    }

    /// TCG TPM v2.0 Provisioning Guidance 7.5.1, the RSA-2048 storage root key.
    static var storageRootKeyRSA: TPM2B_PUBLIC {
        rsaStorageKey(
            attributes: GH_TPMA_OBJECT_FIXEDTPM | GH_TPMA_OBJECT_FIXEDPARENT | GH_TPMA_OBJECT_SENSITIVEDATAORIGIN
                | GH_TPMA_OBJECT_USERWITHAUTH | GH_TPMA_OBJECT_NODA | GH_TPMA_OBJECT_RESTRICTED
                | GH_TPMA_OBJECT_DECRYPT,
            authPolicy: [])
    }

    /// A keyed-hash HMAC-SHA256 signing key whose sensitive data the caller supplies: bound to
    /// this TPM and parent (fixedTPM, fixedParent), used with an empty password, no dictionary-
    /// attack lockout (the auth value is empty anyway).
    static var hmacKey: TPM2B_PUBLIC {
        var template = TPM2B_PUBLIC()
        template.publicArea.type = GH_TPM2_ALG_KEYEDHASH
        template.publicArea.nameAlg = GH_TPM2_ALG_SHA256
        template.publicArea.objectAttributes =
            GH_TPMA_OBJECT_FIXEDTPM | GH_TPMA_OBJECT_FIXEDPARENT | GH_TPMA_OBJECT_USERWITHAUTH
            | GH_TPMA_OBJECT_NODA | GH_TPMA_OBJECT_SIGN_ENCRYPT
        template.publicArea.parameters.keyedHashDetail.scheme.scheme = GH_TPM2_ALG_HMAC
        template.publicArea.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = GH_TPM2_ALG_SHA256
        return template
    }

    /// AES-128-CFB: parameter encryption of sessions and the inner wrapper of DPS duplicates.
    static var aes128CFB: TPMT_SYM_DEF {
        var definition = TPMT_SYM_DEF()
        definition.algorithm = GH_TPM2_ALG_AES
        definition.keyBits.aes = 128
        definition.mode.aes = GH_TPM2_ALG_CFB
        return definition
    }

    static var aes128CFBObject: TPMT_SYM_DEF_OBJECT {
        var definition = TPMT_SYM_DEF_OBJECT()
        definition.algorithm = GH_TPM2_ALG_AES
        definition.keyBits.aes = 128
        definition.mode.aes = GH_TPM2_ALG_CFB
        return definition
    }
}
