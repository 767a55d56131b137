import Crypto
import FoundationEssentials
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// DevHub's own TLS identity: a CA made on first start and kept in the data folder
/// (`ca.pem`, `ca-key.pem`), and a server certificate it signs on every start for the names
/// clients connect to (`server.pem`, `server-key.pem`). Clients trust `ca.pem`.
///
/// Both are P-256. The server certificate carries the extensions strict verifiers (OpenSSL 3,
/// Python's `ssl`) check: SANs, serverAuth EKU, digitalSignature, SKI/AKI.
public struct DevHubCertificates: Sendable {
    public var caPath: String
    /// PEM of the server certificate followed by the CA.
    public var serverChainPEM: String
    public var serverKeyPEM: String

    /// Makes or loads the CA in `directory` and issues a server certificate for `names`
    /// (host names or IP literals; duplicates are ignored).
    public static func prepare(in directory: String, names: [String]) throws -> DevHubCertificates {
        let caPath = directory + "/ca.pem"
        let caKeyPath = directory + "/ca-key.pem"
        let fileManager = FileManager.default

        let caKey: P256.Signing.PrivateKey
        let caCertificate: Certificate
        if fileManager.fileExists(atPath: caPath), fileManager.fileExists(atPath: caKeyPath) {
            caKey = try P256.Signing.PrivateKey(
                pemRepresentation: String(contentsOfFile: caKeyPath, encoding: .utf8))
            caCertificate = try Certificate(pemEncoded: String(contentsOfFile: caPath, encoding: .utf8))
        } else {
            caKey = P256.Signing.PrivateKey()
            caCertificate = try makeCA(key: caKey)
            try writeSecret(caKey.pemRepresentation, to: caKeyPath)
            try (caCertificate.serializeAsPEM().pemString + "\n")
                .write(toFile: caPath, atomically: true, encoding: .utf8)
        }

        let serverKey = P256.Signing.PrivateKey()
        let server = try makeServerCertificate(
            key: serverKey, names: names, ca: caCertificate, caKey: caKey)
        let serverPEM = try server.serializeAsPEM().pemString + "\n"
        let caPEM = try caCertificate.serializeAsPEM().pemString + "\n"
        try serverPEM.write(toFile: directory + "/server.pem", atomically: true, encoding: .utf8)
        try writeSecret(serverKey.pemRepresentation, to: directory + "/server-key.pem")
        return DevHubCertificates(
            caPath: caPath, serverChainPEM: serverPEM + caPEM, serverKeyPEM: serverKey.pemRepresentation)
    }

    private static func makeCA(key: P256.Signing.PrivateKey) throws -> Certificate {
        let name = try DistinguishedName {
            OrganizationName("gatehouse")
            CommonName("gatehouse DevHub CA \(UUID().uuidString.prefix(8))")
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let now = Date()
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
    }

    private static func makeServerCertificate(
        key: P256.Signing.PrivateKey, names: [String], ca: Certificate, caKey: P256.Signing.PrivateKey
    ) throws -> Certificate {
        var alternativeNames: [GeneralName] = []
        var seen = Set<String>()
        for name in names where !name.isEmpty && seen.insert(name.lowercased()).inserted {
            if let address = ipAddressBytes(name) {
                // `.init` names swift-asn1's ASN1OctetString, which X509 does not re-export.
                alternativeNames.append(.ipAddress(.init(contentBytes: address[...])))
            } else {
                alternativeNames.append(.dnsName(name))
            }
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let caSKI = try ca.extensions.subjectKeyIdentifier?.keyIdentifier
        let now = Date()
        return try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(397 * 86400),
            issuer: ca.subject,
            subject: try DistinguishedName {
                OrganizationName("gatehouse")
                CommonName(names.first ?? "localhost")
            },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(alternativeNames)
                SubjectKeyIdentifier(hash: publicKey)
                if let caSKI {
                    AuthorityKeyIdentifier(keyIdentifier: caSKI)
                }
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))
    }

    /// The 4 or 16 network-order bytes of an IPv4/IPv6 literal, or nil for a host name.
    static func ipAddressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return withUnsafeBytes(of: &v4) { Array($0) }
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return withUnsafeBytes(of: &v6) { Array($0) }
        }
        return nil
    }

    /// Writes a private key readable by the owner only.
    private static func writeSecret(_ text: String, to path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        guard
            FileManager.default.createFile(
                atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw DevHubError(.internalError, "cannot write \(path)")
        }
    }
}
