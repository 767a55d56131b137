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
    public static var abiHeaderDir: String { packageRoot.appendingPathComponent("Sources/GatehousePluginABI/include").path }
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
public final class Subprocess: @unchecked Sendable {
    // @unchecked: `process` is only touched through its own thread-safe API.
    public let process = Process()
    public let stdoutPath: String
    public let stderrPath: String

    public init(_ executable: String, _ arguments: [String], in dir: TempDir, name: String, stdin: FileHandle? = nil) throws {
        stdoutPath = dir.file("\(name).out")
        stderrPath = dir.file("\(name).err")
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle(forWritingAtPath: stdoutPath)
        process.standardError = FileHandle(forWritingAtPath: stderrPath)
        if let stdin { process.standardInput = stdin } else { process.standardInput = FileHandle.nullDevice }
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var isRunning: Bool { process.isRunning }
    public var stdout: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits for exit up to `timeout`; returns the exit status, or nil if still running.
    @discardableResult
    public func wait(timeout: Duration) -> Int32? {
        guard waitUntil(timeout: timeout, { !process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// SIGTERM, then SIGKILL after 5 s.
    public func stop() {
        guard process.isRunning else { return }
        signal(SIGTERM)
        if wait(timeout: .seconds(5)) == nil {
            signal(SIGKILL)
            wait(timeout: .seconds(5))
        }
    }

    deinit { stop() }

    /// Runs a command to completion; returns (status, stdout+stderr).
    public static func run(_ executable: String, _ arguments: [String], timeout: Duration = .seconds(60)) throws -> (Int32, String) {
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
            ["-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I", Paths.abiHeaderDir, "-o", output, source, "-lpthread"])
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
