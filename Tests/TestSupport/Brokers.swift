import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A real mosquitto broker on a free loopback port, with its own config and data folder.
public final class MosquittoBroker: @unchecked Sendable {
    // @unchecked: `child` is replaced only by start/stop, which tests call from one task.
    public let port: Int
    public let dir: TempDir
    public let name: String
    public let tls: TLSFiles?
    private var child: Subprocess?
    private let extraConfig: String
    private let allowAnonymous: Bool

    public struct TLSFiles: Sendable {
        public var caFile: String
        public var certFile: String
        public var keyFile: String
    }

    public static var available: Bool { which("mosquitto") != nil }

    /// The site-broker settings the gatehouse package installs as
    /// /etc/mosquitto/conf.d/gatehouse-queue.conf: gatehoused's queue bounded by bytes,
    /// persistence, the packet size limit (packaging/site-broker/gatehouse-queue.conf,
    /// docs/site-broker.md). Pass it as `extraConfig` so that a test's site broker behaves as a
    /// gateway's does; it comes after, and so overrides, the defaults below.
    public static func packagedSiteSettings() throws -> String {
        try String(
            contentsOf: Paths.packageRoot.appendingPathComponent("packaging/site-broker/gatehouse-queue.conf"),
            encoding: .utf8)
    }

    /// `tls`: serve TLS with a throwaway CA (`tls!.caFile` is what clients trust).
    /// `allowAnonymous: false` for brokers whose clients log in (the dynamic security plugin).
    public init(
        name: String, in dir: TempDir, tls: Bool = false, port: Int? = nil, extraConfig: String = "",
        allowAnonymous: Bool = true
    ) throws {
        self.name = name
        self.allowAnonymous = allowAnonymous
        self.dir = dir
        self.port = port ?? freePort()
        self.extraConfig = extraConfig
        self.tls = tls ? try Certificates.make(in: dir) : nil
        try start()
    }

    public func start() throws {
        let data = dir.file("\(name)-data")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        var config = """
            listener \(port) 127.0.0.1
            allow_anonymous \(allowAnonymous)
            persistence true
            persistence_location \(data)/
            max_queued_messages 0
            max_inflight_messages 100
            log_type all
            connection_messages true
            user root

            """
        if let tls {
            config += "cafile \(tls.caFile)\ncertfile \(tls.certFile)\nkeyfile \(tls.keyFile)\n"
        }
        config += extraConfig + "\n"
        let path = try dir.write("\(name).conf", config)
        child = try Subprocess(
            which("mosquitto")!, ["-c", path], in: dir, name: "\(name)-\(UUID().uuidString.prefix(6))")
        guard waitUntil(timeout: .seconds(5), { Self.listening(port) }) else {
            throw FixtureError("mosquitto \(name) did not start: \(child?.stderr ?? "")")
        }
    }

    public func stop() {
        child?.stop()
        child = nil
    }

    public var log: String { child?.stderr ?? "" }

    /// Sends `signal` to the broker (SIGSTOP: a hub that stops answering, SIGCONT: back).
    public func signal(_ signal: Int32) { child?.signal(signal) }

    deinit { stop() }

    public static func listening(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Arguments that point mosquitto_pub/sub at this broker.
    public var clientArguments: [String] {
        var arguments = ["-h", "127.0.0.1", "-p", String(port)]
        if let tls { arguments += ["--cafile", tls.caFile] }
        return arguments
    }
}

/// A throwaway CA and a server certificate for localhost / 127.0.0.1, made with openssl.
public enum Certificates {
    public static func make(in dir: TempDir) throws -> MosquittoBroker.TLSFiles {
        let ca = dir.file("ca.crt"), caKey = dir.file("ca.key")
        let cert = dir.file("server.crt"), key = dir.file("server.key"), csr = dir.file("server.csr")
        if FileManager.default.fileExists(atPath: cert) { return .init(caFile: ca, certFile: cert, keyFile: key) }
        let ext = try dir.write("san.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        let openssl = which("openssl") ?? "/usr/bin/openssl"
        for arguments in [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", caKey, "-out", ca, "-days", "2", "-subj",
                "/CN=gatehouse test CA",
            ],
            ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
            [
                "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", caKey, "-CAcreateserial", "-out", cert, "-days", "2",
                "-extfile", ext,
            ],
        ] {
            let (status, output) = try Subprocess.run(openssl, arguments)
            guard status == 0 else { throw FixtureError("openssl \(arguments[0]) failed: \(output)") }
        }
        return .init(caFile: ca, certFile: cert, keyFile: key)
    }
}

/// Collects what an MQTT subscriber (mosquitto_sub -v) receives, one "topic payload" line each.
public final class Collector: @unchecked Sendable {
    // @unchecked: immutable after init; the child is read through thread-safe APIs.
    let child: Subprocess

    /// `name` is the MQTT client id's suffix (a persistent session); `file` names the output.
    public init(
        broker: MosquittoBroker, topics: [String], in dir: TempDir, name: String = "collector", file: String? = nil
    ) throws {
        var arguments = broker.clientArguments + ["-q", "1", "-v", "-i", "collector-\(name)", "-c"]
        for topic in topics { arguments += ["-t", topic] }
        child = try Subprocess(which("mosquitto_sub")!, arguments, in: dir, name: file ?? name)
        Thread.sleep(forTimeInterval: 0.3)  // let the subscription land
    }

    public var lines: [String] { child.stdout.split(separator: "\n").map(String.init) }

    public func stop() { child.stop() }
}

/// Publishes lines as QoS 1 messages with mosquitto_pub -l; waits for it to finish.
@discardableResult
public func publishLines(
    _ lines: [String], topic: String, broker: MosquittoBroker, in dir: TempDir, timeout: Duration = .seconds(120)
) throws -> Int32 {
    let input = try dir.write("pub-\(UUID().uuidString.prefix(6)).txt", lines.joined(separator: "\n") + "\n")
    let child = try Subprocess(
        which("mosquitto_pub")!, broker.clientArguments + ["-q", "1", "-l", "-t", topic], in: dir,
        name: "pub-\(UUID().uuidString.prefix(6))", stdin: FileHandle(forReadingAtPath: input))
    return child.wait(timeout: timeout) ?? -1
}
