import FoundationEssentials
import GatehouseBasics
import GatehouseSiteBroker

#if canImport(Glibc)
    import Glibc
#endif

/// The CLI's way to the site broker's dynamic security plugin, from `[site_broker]`: the ACL
/// plan, the admin's password (read from its file, checked to be private, never logged), the
/// connection, and the private files it writes.
public enum SiteCredentials {
    /// The topics of the ACLs, from `[site_broker]` (which defaults them to `[site] topics`).
    public static func plan(_ settings: GatewayConfig.SiteBroker) throws(SiteBrokerError) -> SiteAccessPlan {
        try SiteAccessPlan(telemetryFilters: settings.telemetryTopics, commandFilters: settings.commandTopics)
    }

    public static func endpoint(_ settings: GatewayConfig.SiteBroker) -> BrokerEndpoint {
        BrokerEndpoint(host: settings.host, port: settings.port, caFile: settings.caFile)
    }

    /// Logs in as the dynsec admin.
    public static func connect(_ settings: GatewayConfig.SiteBroker, timeout: Duration = .seconds(10))
        throws(SiteBrokerError) -> SiteBrokerAdmin
    {
        let plan = try plan(settings)
        let password = try readSecretFile(settings.adminPasswordFile, what: "[site_broker] admin_password_file")
        let client = try DynsecClient(
            endpoint: endpoint(settings), username: settings.adminUsername, password: password, timeout: timeout)
        return SiteBrokerAdmin(
            client: client, plan: plan, reservedUsernames: [settings.adminUsername, settings.gatewayUsername])
    }

    /// Reads a one-line secret from a file that only its owner may read (like ssh's keys).
    /// Errors name the file and never its contents.
    public static func readSecretFile(_ path: String, what: String) throws(SiteBrokerError) -> String {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw SiteBrokerError(.credentialFile, "\(what): cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw SiteBrokerError(.credentialFile, "\(what): \(path) is not a regular file")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw SiteBrokerError(
                .credentialFile,
                "\(what): \(path) may be read by others (mode \(String(info.st_mode & 0o777, radix: 8))); "
                    + "make it readable by the daemon's user only: chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SiteBrokerError(.credentialFile, "\(what): cannot read \(path)")
        }
        let secret = String(decoding: data, as: UTF8.self).trimmingWhitespace
        guard !secret.isEmpty else { throw SiteBrokerError(.credentialFile, "\(what): \(path) is empty") }
        return secret
    }

    /// Writes a secret to `path` with mode 0600, atomically (a temporary file renamed over it).
    /// Run as root, the file gets the owner of its folder, so that the daemon's user can read it.
    public static func writeSecretFile(_ path: String, _ secret: String) throws(SiteBrokerError) {
        let directory = PathText.directory(of: path)
        let temporary =
            "\(directory.isEmpty ? "." : directory)/.\(PathText.lastComponent(of: path)).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw SiteBrokerError(.credentialFile, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        let bytes = Array((secret + "\n").utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var folder = stat()
        if geteuid() == 0, stat(directory.isEmpty ? "." : directory, &folder) == 0, folder.st_uid != 0 {
            _ = fchown(fd, folder.st_uid, folder.st_gid)
        }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw SiteBrokerError(.credentialFile, "cannot write \(path): \(reason)")
        }
    }
}

extension SiteBrokerError.Code {
    /// A credential file is missing, unreadable, empty or readable by others.
    public static let credentialFile = SiteBrokerError.Code(rawValue: "site.credential-file")
}
