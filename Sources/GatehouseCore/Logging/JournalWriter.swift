import FoundationEssentials
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// journald's native protocol (systemd.journal-fields(7), "Native Protocol"): one datagram per
/// entry to /run/systemd/journal/socket, each field `NAME=value\n`, or — when the value holds a
/// newline — `NAME\n`, its length as 64-bit little-endian, the value, `\n`. Written by hand for
/// the same reason as `SystemdNotifier`: one `sendto`, no libsystemd.
///
/// Used only when gatehoused's standard error *is* the journal: `$JOURNAL_STREAM` names the
/// device and inode of the stream systemd connected, and they must match fd 2's (so a shell
/// redirect under systemd, or a test, keeps the plain lines). Then every log line becomes an
/// entry with `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER` and one `GATEHOUSE_…` field per
/// metadata key (`device=pump-7` is `GATEHOUSE_DEVICE=pump-7`, `decision=…` is
/// `GATEHOUSE_DECISION=…`): `journalctl -u gatehouse GATEHOUSE_DECISION=…` finds one decision.
public struct JournalWriter: Sendable {
    public static let defaultSocket = "/run/systemd/journal/socket"

    let socketPath: String

    public init(socketPath: String = Self.defaultSocket) {
        self.socketPath = socketPath
    }

    /// The writer when fd 2 is the journal stream systemd set up; nil otherwise.
    public static func forStandardError(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> JournalWriter?
    {
        guard let stream = environment["JOURNAL_STREAM"] else { return nil }
        let parts = stream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return nil }
        var info = stat()
        guard fstat(2, &info) == 0, UInt64(info.st_dev) == device, UInt64(info.st_ino) == inode else { return nil }
        return JournalWriter()
    }

    /// syslog priorities, as journald reads `PRIORITY`.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// A metadata key as a journal field name: upper case, `[A-Z0-9_]`, prefixed `GATEHOUSE_`.
    static func fieldName(_ key: String) -> String {
        "GATEHOUSE_"
            + String(
                key.uppercased().unicodeScalars.map { scalar -> Character in
                    ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) ? Character(scalar) : "_"
                })
    }

    /// The datagram for one entry.
    static func entry(
        level: Logger.Level, message: String, label: String, metadata: [(String, String)]
    ) -> [UInt8] {
        var bytes: [UInt8] = []
        func field(_ name: String, _ value: String) {
            let utf8 = Array(value.utf8)
            bytes.append(contentsOf: name.utf8)
            if utf8.contains(UInt8(ascii: "\n")) {
                bytes.append(UInt8(ascii: "\n"))
                withUnsafeBytes(of: UInt64(utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
            } else {
                bytes.append(UInt8(ascii: "="))
            }
            bytes.append(contentsOf: utf8)
            bytes.append(UInt8(ascii: "\n"))
        }
        field("MESSAGE", message)
        field("PRIORITY", "\(priority(level))")
        field("SYSLOG_IDENTIFIER", "gatehoused")
        field("GATEHOUSE_LABEL", label)
        for (key, value) in metadata { field(fieldName(key), value) }
        return bytes
    }

    /// Sends one entry; false if it could not be (the caller then writes the plain line).
    func send(_ datagram: [UInt8]) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(socketPath.utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path)
            raw[path.count] = 0
        }
        let fd = Self.socketFD.withLock { fd -> Int32 in
            if fd < 0 { fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
            return fd
        }
        guard fd >= 0 else { return false }
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                datagram.withUnsafeBytes { buffer in
                    sendto(
                        fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), socketAddress,
                        socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return sent == datagram.count
    }

    /// One unconnected datagram socket for the process (sendto names the address each time).
    private static let socketFD = Mutex<Int32>(-1)
}
