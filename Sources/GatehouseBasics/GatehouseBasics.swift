import CThreadName

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

// The few things gatehouse used from full Foundation that `FoundationEssentials` does not have:
// whitespace trimming, path components, standard error and input, named threads, hex.
//
// Full Foundation (swift-corelibs-foundation) links ICU, 37.6 MiB installed and 10 MB of the
// 22 MB .deb; no module of the product or its plugins imports it, so the package ships without
// it (packaging/README.md, "Size"). These helpers are small enough that writing them beats
// loading a library for them.

extension StringProtocol {
    /// The text without leading and trailing spaces and tabs (Foundation's `.whitespaces`:
    /// Unicode's spaces, no line ends).
    public var trimmingBlanks: String { trimmed { $0.isWhitespace && !$0.isNewline } }

    /// The text without leading and trailing whitespace and line ends (`.whitespacesAndNewlines`;
    /// "\r\n" is one Character, and a newline).
    public var trimmingWhitespace: String { trimmed { $0.isWhitespace } }

    /// The text without leading and trailing characters in `set`.
    public func trimming(_ set: Set<Character>) -> String { trimmed { set.contains($0) } }

    private func trimmed(_ drop: (Character) -> Bool) -> String {
        guard let first = firstIndex(where: { !drop($0) }), let last = lastIndex(where: { !drop($0) }) else {
            return ""
        }
        return String(self[first...last])
    }
}

/// Path components as `NSString`'s path methods give them, for POSIX paths.
public enum PathText {
    /// "/a/b/c" → "/a/b"; "c" → ""; "/c" → "/"; "a//b" → "a"; trailing slashes are ignored
    /// (NSString's `deletingLastPathComponent`).
    public static func directory(of path: String) -> String {
        let trimmed = withoutTrailingSlashes(path)
        guard let slash = trimmed.lastIndex(of: "/") else { return "" }
        var directory = trimmed[..<slash]
        while directory.hasSuffix("/") { directory.removeLast() }
        return directory.isEmpty ? "/" : String(directory)
    }

    /// "/a/b/c" → "c"; "/" → "/"; trailing slashes are ignored.
    public static func lastComponent(of path: String) -> String {
        let trimmed = withoutTrailingSlashes(path)
        if trimmed == "/" { return "/" }
        guard let slash = trimmed.lastIndex(of: "/") else { return trimmed }
        return String(trimmed[trimmed.index(after: slash)...])
    }

    /// "a" + "b" → "a/b", without doubling a slash.
    public static func join(_ directory: String, _ name: String) -> String {
        if directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    private static func withoutTrailingSlashes(_ path: String) -> String {
        var text = Substring(path)
        while text.count > 1, text.hasSuffix("/") { text = text.dropLast() }
        return String(text)
    }
}

/// Standard error and standard input, unbuffered (write(2), read(2)).
public enum StandardStreams {
    /// Writes `text` to standard error as it is (add the newline yourself).
    public static func writeError(_ text: String) { write(fd: 2, Array(text.utf8)) }

    /// Writes `bytes` to standard output.
    public static func writeOutput(_ bytes: [UInt8]) { write(fd: 1, bytes) }

    /// Writes all of `bytes` to `fd`, retrying after EINTR; false if the write failed.
    @discardableResult
    public static func write(fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw in
                #if canImport(Glibc)
                    Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #else
                    Darwin.write(fd, raw.baseAddress! + offset, raw.count - offset)
                #endif
            }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }

    /// All of standard input, as bytes.
    public static func readInput() -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            result.append(contentsOf: chunk[0..<count])
        }
        return result
    }
}

/// A named POSIX thread that runs `body` once and ends, like Foundation's `Thread { … }.start()`.
public enum NamedThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Starts `body` on a new detached thread called `name` (at most 15 bytes show in `ps`).
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let shortName = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        let box = Unmanaged.passRetained(
            Box {
                _ = shortName.withCString { gh_name_this_thread($0) }
                body()
            }
        ).toOpaque()
        #if canImport(Glibc)
            var thread = pthread_t()
        #else
            var thread: pthread_t?
        #endif
        let created = pthread_create(
            &thread, nil,
            { raw in
                #if canImport(Glibc)
                    let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                #else
                    let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
                #endif
                box.body()
                return nil
            }, box)
        precondition(created == 0, "cannot start the thread \(name): error \(created)")
        #if canImport(Glibc)
            pthread_detach(thread)
        #else
            pthread_detach(thread!)
        #endif
    }

    /// Blocks the calling thread for `duration` (not for the cooperative pool).
    public static func sleep(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
    }
}

/// Lowercase hexadecimal.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// `[0xab, 0x01]` → "ab01".
    public static func string(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `value` as at least `width` lowercase hex digits, zero-padded ("%0*x").
    public static func string(_ value: Int, width: Int) -> String {
        let text = String(value, radix: 16)
        return text.count >= width ? text : String(repeating: "0", count: width - text.count) + text
    }
}

/// A file descriptor to write text to: standard output, or a file this opens (and closes).
public final class OutputFile {
    public let fd: Int32
    private let owned: Bool

    /// Standard output (never closed here).
    public static var standardOutput: OutputFile { OutputFile(fd: 1, owned: false) }

    private init(fd: Int32, owned: Bool) {
        self.fd = fd
        self.owned = owned
    }

    /// Creates or truncates `path` with `mode` (less the umask). Throws the errno text.
    public init(creating path: String, mode: mode_t = 0o666) throws(OutputFileError) {
        let opened = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard opened >= 0 else { throw OutputFileError(path: path, reason: String(cString: strerror(errno))) }
        fd = opened
        owned = true
    }

    deinit { if owned { close(fd) } }

    /// Writes all of `text`; false if the write failed.
    @discardableResult
    public func write(_ text: String) -> Bool { StandardStreams.write(fd: fd, Array(text.utf8)) }
}

/// A file `OutputFile` could not open: its path and the system's reason.
public struct OutputFileError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "cannot write \(path): \(reason)" }
}

extension StringProtocol {
    /// The text padded with spaces on the right to `width` characters, or cut to it
    /// (NSString's `padding(toLength:withPad: " ", startingAt: 0)`).
    public func padded(to width: Int) -> String {
        count >= width ? String(prefix(width)) : String(self) + String(repeating: " ", count: width - count)
    }
}

/// Decimal digits.
public enum Digits {
    /// `value` as at least `width` decimal digits, zero-padded ("%0*d"; a minus sign comes first).
    public static func padded(_ value: some BinaryInteger, width: Int) -> String {
        let digits = String(value.magnitude)
        let padding = String(repeating: "0", count: max(0, width - digits.count))
        return (value < 0 ? "-" : "") + padding + digits
    }
}
