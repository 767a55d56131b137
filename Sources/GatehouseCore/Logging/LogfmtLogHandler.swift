import FoundationEssentials
import GatehouseBasics
import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One line a log event, `logfmt`-style, to standard error: what journald and `grep` read well.
///
///     2026-11-24T22:46:30.123Z level=info label=gatehouse.relay msg="outbox drained" device=pump-7
public struct LogfmtLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private static let output = Mutex<Void>(())
    /// Set when standard error is systemd's journal stream (`JournalWriter.forStandardError`).
    private static let journal = JournalWriter.forStandardError()
    /// One level for the whole process, so that a reload (SIGHUP) changes every logger at once.
    private static let level = Atomic<UInt8>(2)  // index into Logger.Level.allCases: info

    /// Sets the process-wide level.
    public static func setLevel(_ level: Logger.Level) {
        Self.level.store(UInt8(Logger.Level.allCases.firstIndex(of: level)!), ordering: .relaxed)
    }

    public var logLevel: Logger.Level {
        get { Logger.Level.allCases[Int(Self.level.load(ordering: .relaxed))] }
        set { Self.setLevel(newValue) }
    }

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line =
            "\(Self.timestamp()) level=\(event.level) label=\(Self.quote(label)) msg=\(Self.quote(event.message.description))"
        var merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
        if let error = event.error { merged["error"] = "\(error)" }
        for key in merged.keys.sorted() {
            line += " \(ControlEscaping.escape(key))=\(Self.quote(merged[key]!.description))"
        }
        line += "\n"
        if event.level >= .error {
            RecentErrors.shared.add(event.message.description, error: merged["error"]?.description)
        }
        if let journal = Self.journal {
            // Under systemd: the same entry with structured fields (JournalWriter); the plain line
            // only if the journal did not take it.
            let datagram = JournalWriter.entry(
                level: event.level, message: event.message.description, label: label,
                metadata: merged.keys.sorted().map { ($0, merged[$0]!.description) })
            if journal.send(datagram) { return }
        }
        Self.output.withLock { _ in
            StandardStreams.writeError(line)
        }
    }

    /// A logfmt value: every control and format character escaped (`ControlEscaping`, one
    /// shared rule for every log line and `gatehouse audit`), then quoted when it holds a space,
    /// `"`, `=` or a backslash, or is empty; inside quotes `"` is written `\"`. A value can
    /// therefore neither end its line nor start another field.
    static func quote(_ value: String) -> String {
        let escaped = ControlEscaping.escape(value)
        let plain =
            !escaped.isEmpty
            && !escaped.unicodeScalars.contains {
                $0 == "\"" || $0 == "=" || $0 == "\\" || $0.properties.isWhitespace
            }
        if plain { return escaped }
        var quoted = String.UnicodeScalarView()
        quoted.append("\"")
        for scalar in escaped.unicodeScalars {
            if scalar == "\"" { quoted.append("\\") }
            quoted.append(scalar)
        }
        quoted.append("\"")
        return String(quoted)
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = time_t(now.tv_sec)
        var parts = tm()
        gmtime_r(&time, &parts)
        func two(_ value: Int32) -> String { Digits.padded(value, width: 2) }
        return "\(Digits.padded(parts.tm_year + 1900, width: 4))-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(Digits.padded(now.tv_nsec / 1_000_000, width: 3))Z"
    }
}

/// The last few errors the daemon logged, newest last, for the gateway's twin
/// (docs/operations.md): the message and its `error` field, never other metadata. Log lines
/// carry no secret (docs/architecture.md, "Failure model"), so neither does this.
public final class RecentErrors: Sendable {
    public static let shared = RecentErrors()
    public static let capacity = 5

    public struct Entry: Sendable, Equatable {
        public var timeMS: Int64
        public var message: String
    }

    private let entries = Mutex<[Entry]>([])

    func add(_ message: String, error: String?) {
        let text = error.map { "\(message): \($0)" } ?? message
        let entry = Entry(timeMS: Int64(Date().timeIntervalSince1970 * 1000), message: String(text.prefix(300)))
        entries.withLock { entries in
            entries.append(entry)
            if entries.count > Self.capacity { entries.removeFirst(entries.count - Self.capacity) }
        }
    }

    public var all: [Entry] { entries.withLock { $0 } }
}
