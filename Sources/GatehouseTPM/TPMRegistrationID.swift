import Crypto
import FoundationEssentials

/// The registration id the Azure SDKs give a TPM by default: RFC 4648 base32, lowercase, without
/// padding, of SHA-256 of the marshalled EK public (docs/protocols.md §1.0; C SDK
/// `prov_auth_client.c`). Any valid id works if the DPS enrollment uses it; this one is stable
/// for a TPM and needs no naming.
public enum TPMRegistrationID {
    public static func `default`(endorsementKey: Data) -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz234567")
        var output = ""
        var buffer: UInt32 = 0
        var bits = 0
        for byte in SHA256.hash(data: endorsementKey) {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                output.append(alphabet[Int(buffer >> UInt32(bits) & 31)])
            }
        }
        if bits > 0 { output.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return output
    }
}
