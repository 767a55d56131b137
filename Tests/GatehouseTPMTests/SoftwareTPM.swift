import Foundation
import GatehouseTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A swtpm started for one test: fresh state folder, its own socket, stopped on release.
///
/// swtpm serves one TCP client at a time: close the `TPMContext` before running a `tpm2_*`
/// tool against the same instance, or the tool waits for the connection.
final class SoftwareTPM: @unchecked Sendable {
    // @unchecked: every stored property is immutable after init.
    static let path = which("swtpm")
    static let toolsPresent = which("tpm2_readpublic") != nil && which("tpm2_makecredential") != nil
    static let openssl = which("openssl")
    static var unavailableReason: String? {
        if path == nil { return "swtpm is not installed (scripts/setup installs swtpm and swtpm-tools)" }
        if !toolsPresent { return "tpm2-tools is not installed (scripts/setup installs it)" }
        if openssl == nil { return "openssl is not installed" }
        return nil
    }
    static var isAvailable: Bool {
        if let reason = unavailableReason {
            print("GatehouseTPMTests: skipped — \(reason)")
            return false
        }
        return true
    }

    /// How the TCTI reaches swtpm.
    ///
    /// The swtpm TCTI opens a new connection for every TPM command, so over TCP each command
    /// leaves a socket in TIME-WAIT for a minute (a 2,000-HMAC loop leaves 2,000): tests use a
    /// Unix socket by default, and TCP where the TCP form itself is under test.
    enum Transport { case unixSocket, tcp }

    let dir = TempDir("gatehouse-swtpm")
    let tcti: String
    let process: Subprocess

    /// - Parameter startedUp: start with `startup-clear` (else our code must run TPM2_Startup).
    init(startedUp: Bool = true, transport: Transport = .unixSocket) throws {
        guard let swtpm = Self.path else { throw FixtureError(Self.unavailableReason ?? "no swtpm") }
        let state = dir.file("state")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        var arguments = ["socket", "--tpm2", "--tpmstate", "dir=\(state)"]
        let ready: () -> Bool
        switch transport {
        case .unixSocket:
            // The TCTI's control channel is the same path plus ".ctrl".
            let socket = dir.file("swtpm.sock")
            arguments += ["--server", "type=unixio,path=\(socket)", "--ctrl", "type=unixio,path=\(socket).ctrl"]
            tcti = "swtpm:path=\(socket)"
            ready = { Self.accepts(unixSocket: socket) }
        case .tcp:
            // The TCTI's control channel is the next port.
            let port = try Self.freePortPair()
            arguments += [
                "--server", "type=tcp,port=\(port),bindaddr=127.0.0.1",
                "--ctrl", "type=tcp,port=\(port + 1),bindaddr=127.0.0.1",
            ]
            tcti = "swtpm:host=127.0.0.1,port=\(port)"
            ready = { Self.accepts(port: port) }
        }
        arguments += ["--flags", startedUp ? "not-need-init,startup-clear" : "not-need-init"]
        process = try Subprocess(swtpm, arguments, in: dir, name: "swtpm")
        guard waitUntil(timeout: .seconds(10), ready) else {
            process.stop()
            throw FixtureError("swtpm did not start listening (\(tcti)): \(process.stderr)")
        }
    }

    deinit { process.stop() }

    /// Runs a tpm2-tools command against this swtpm (`-T` added); throws with its output on
    /// failure. Pass `tcti: false` for offline commands (`--tcti none` is then the caller's).
    @discardableResult
    func tool(_ name: String, _ arguments: [String], tcti: Bool = true) throws -> String {
        guard let path = which(name) else { throw FixtureError("\(name) is not installed") }
        let (status, output) = try Subprocess.run(path, (tcti ? ["-T", self.tcti] : []) + arguments)
        guard status == 0 else {
            throw FixtureError("\(name) \(arguments.joined(separator: " ")) → \(status): \(output)")
        }
        return output
    }

    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    static func accepts(unixSocket path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes + [0])
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    static func canBind(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        // As a server binds (swtpm does): a port whose old connections sit in TIME-WAIT is free.
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// A port P with P and P + 1 free (the TCTI uses P + 1 as swtpm's control channel).
    static func freePortPair() throws -> Int {
        for _ in 0..<50 {
            let port = freePort()
            if port < 65535 && canBind(port + 1) { return port }
        }
        throw FixtureError("no free pair of loopback ports")
    }
}

/// Command-line cryptography as an independent cross-check (openssl, not our code).
enum OpenSSL {
    /// HMAC-SHA256 of `message` with `key`, computed by `openssl dgst`.
    static func hmac(key: [UInt8], message: [UInt8]) throws -> [UInt8] {
        let dir = TempDir("gatehouse-openssl")
        let input = dir.file("message")
        let output = dir.file("mac")
        try Data(message).write(to: URL(fileURLWithPath: input))
        try run([
            "dgst", "-sha256", "-mac", "HMAC", "-macopt", "hexkey:\(hex(key))", "-binary", "-out", output, input,
        ])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    static func sha256(_ message: [UInt8]) throws -> [UInt8] {
        let dir = TempDir("gatehouse-openssl")
        let input = dir.file("message")
        let output = dir.file("digest")
        try Data(message).write(to: URL(fileURLWithPath: input))
        try run(["dgst", "-sha256", "-binary", "-out", output, input])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    /// AES-128-CFB (full-block feedback, as the TPM uses) with a zero IV.
    static func aes128CFB(key: [UInt8], _ plaintext: [UInt8]) throws -> [UInt8] {
        let dir = TempDir("gatehouse-openssl")
        let input = dir.file("plain")
        let output = dir.file("cipher")
        try Data(plaintext).write(to: URL(fileURLWithPath: input))
        try run([
            "enc", "-aes-128-cfb", "-K", hex(key), "-iv", String(repeating: "0", count: 32), "-nosalt", "-in", input,
            "-out", output,
        ])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    /// RSA-OAEP (SHA-256, MGF1-SHA-256) with a label, as the TPM uses for encrypted seeds.
    static func rsaOAEP(publicKeyPEM: String, _ plaintext: [UInt8], label: [UInt8]) throws -> [UInt8] {
        let dir = TempDir("gatehouse-openssl")
        let input = dir.file("plain")
        let output = dir.file("cipher")
        try Data(plaintext).write(to: URL(fileURLWithPath: input))
        try run([
            "pkeyutl", "-encrypt", "-pubin", "-inkey", publicKeyPEM, "-in", input, "-out", output,
            "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256",
            "-pkeyopt", "rsa_oaep_label:\(hex(label))",
        ])
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: output)))
    }

    static func run(_ arguments: [String]) throws {
        guard let openssl = SoftwareTPM.openssl else { throw FixtureError("openssl is not installed") }
        let (status, output) = try Subprocess.run(openssl, arguments)
        guard status == 0 else { throw FixtureError("openssl \(arguments.first ?? "") failed: \(output)") }
    }
}

func hex(_ bytes: some Sequence<UInt8>) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}
