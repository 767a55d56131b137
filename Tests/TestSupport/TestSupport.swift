import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where things are, for tests that run the real binaries.
public enum Paths {
    /// The package's root folder (this file is Tests/TestSupport/TestSupport.swift).
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The folder of the built products: the test bundle's own folder, where SwiftPM also puts
    /// gatehoused, gatehouse and the plugins.
    public static let binDir: URL = {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
            packageRoot.appendingPathComponent(".build/debug"),
        ]
        return candidates.first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("gatehoused").path) }
            ?? candidates[1]
    }()

    public static var gatehoused: String { binDir.appendingPathComponent("gatehoused").path }
    public static var gatehouseCLI: String { binDir.appendingPathComponent("gatehouse").path }
    public static var abiHeaderDir: String {
        packageRoot.appendingPathComponent("Sources/GatehousePluginABI/include").path
    }
}

/// A temporary folder removed when the value is released.
public final class TempDir: @unchecked Sendable {
    // @unchecked: immutable after init.
    public let path: String

    public init(_ label: String = "gatehouse-test") {
        var template = Array("/tmp/\(label).XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    public func file(_ name: String) -> String { path + "/" + name }

    @discardableResult
    public func write(_ name: String, _ contents: String) throws -> String {
        let target = file(name)
        try contents.write(toFile: target, atomically: true, encoding: .utf8)
        return target
    }
}

/// A free TCP port on 127.0.0.1 (bound, read back, released).
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            _ = bind(fd, $0, length)
            _ = getsockname(fd, $0, &length)
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
public func waitUntil(timeout: Duration, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.02)
    }
    return try condition()
}

/// A child process whose output goes to files in a folder.
///
/// Spawned with posix_spawn and an EMPTY signal mask and default dispositions: the test runner
/// blocks some signals in its threads, and a child inherits that mask across exec — mosquitto
/// then never sees SIGTERM (and never saves its persistence), and a test's "graceful stop"
/// would silently become a SIGKILL.
public final class Subprocess: @unchecked Sendable {
    // @unchecked: `exitStatus` is guarded by `lock`; everything else is immutable after init.
    public let pid: pid_t
    public let stdoutPath: String
    public let stderrPath: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    public init(_ executable: String, _ arguments: [String], in dir: TempDir, name: String, stdin: FileHandle? = nil)
        throws
    {
        stdoutPath = dir.file("\(name).out")
        stderrPath = dir.file("\(name).err")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin.fileDescriptor, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var child: pid_t = 0
        let status = posix_spawn(&child, executable, &actions, &attributes, argv, environ)
        guard status == 0 else {
            throw FixtureError("cannot start \(executable): \(String(cString: strerror(status)))")
        }
        pid = child
    }

    public var isRunning: Bool { exitCode == nil }
    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// The exit status once the child has ended (a signal death is 128 + the signal), else nil.
    public var exitCode: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        exitStatus = code
        return code
    }

    /// Waits for exit up to `timeout`; returns the exit status, or nil if still running.
    @discardableResult
    public func wait(timeout: Duration) -> Int32? {
        guard waitUntil(timeout: timeout, { !isRunning }) else { return nil }
        return exitCode
    }

    public func signal(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    public func stop() {
        guard isRunning else { return }
        signal(SIGTERM)
        if wait(timeout: .seconds(10)) == nil {
            signal(SIGKILL)
            wait(timeout: .seconds(5))
        }
    }

    deinit { stop() }

    /// Runs a command to completion; returns (status, stdout+stderr).
    public static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) throws -> (
        Int32, String
    ) {
        let dir = TempDir("gatehouse-run")
        let child = try Subprocess(executable, arguments, in: dir, name: "cmd")
        guard let status = child.wait(timeout: timeout) else {
            child.signal(SIGKILL)
            return (-1, "timed out: \(executable) \(arguments.joined(separator: " "))")
        }
        return (status, child.stdout + child.stderr)
    }
}

/// Finds an executable on PATH, or nil; tests that need one print why they cannot run.
public func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/sbin").split(separator: ":") {
        let candidate = "\(dir)/\(name)"
        if access(candidate, X_OK) == 0 { return candidate }
    }
    for dir in ["/usr/sbin", "/sbin"] where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
    return nil
}

/// C plugins of `Tests/Fixtures/plugins`, compiled with the system C compiler against the
/// published header alone — the way a third party would build one.
public enum CFixturePlugin {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var built: [String: String] = [:]  // guarded by `lock`
    private static let outputDir = TempDir("gatehouse-cplugins")

    public static func path(_ name: String) throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if let path = built[name] { return path }
        let source = Paths.packageRoot.appendingPathComponent("Tests/Fixtures/plugins/\(name).c").path
        let output = outputDir.file("libgatehouse-\(name).so")
        let (status, log) = try Subprocess.run(
            which("cc") ?? "/usr/bin/cc",
            [
                "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I", Paths.abiHeaderDir, "-o", output, source,
                "-lpthread",
            ])
        guard status == 0 else { throw FixtureError("cannot compile \(source): \(log)") }
        built[name] = output
        return output
    }

    public static var directory: String { outputDir.path }
}

public struct FixtureError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
