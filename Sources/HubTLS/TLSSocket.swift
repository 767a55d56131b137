import COpenSSL
import FoundationEssentials

#if canImport(Glibc)
    import Glibc
#endif

/// A non-blocking TCP connection with TLS on top (OpenSSL), for an upstream transport's I/O
/// thread and its poll(2) loop: the `amqp` transport's connections and the `mqtt` transport's
/// hub links (docs/architecture.md, "Threads"). The peer is verified by the context the caller
/// shares between its connections (`gh_tls_client_context`): TLS 1.2 or later, the CA file or
/// the system's CAs, and the hub's host name or IP address. SNI carries the hub's name.
/// Confined to the thread that drives it.
///
/// With `readAhead`, OpenSSL reads as much as the socket holds in one read(2), not a record
/// header and a record body apiece: a reader must then go on reading until `.wouldBlock`, or
/// check `hasPending`, because what was read ahead is invisible to poll(2).
public final class TLSSocket {
    public enum Phase: Sendable { case connecting, handshaking, open, closed }

    public enum IO: Equatable, Sendable {
        case bytes(Int)
        case wouldBlock
        case closed
        case failed(String)
    }

    public private(set) var fd: Int32 = -1
    public private(set) var phase = Phase.closed
    private var ssl: OpaquePointer?
    /// What the handshake or a read/write waits for.
    private var wantsWrite = false

    /// Starts a non-blocking connect to `address:port`; the handshake follows in `advance()`.
    /// `serverName` is the TLS name (SNI; omitted for an IP address).
    public init(
        address: String, port: Int, context: OpaquePointer, serverName: String, readAhead: Bool = false
    ) throws(TransportFailure) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(address, String(port), &hints, &results)
        guard status == 0, let first = results else {
            throw TransportFailure("cannot resolve \(address): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(results) }
        // Every address in turn until one starts connecting: a name whose first answer cannot
        // be reached at once (an IPv6 address without a route, say) still connects.
        var lastReason = "no address"
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let candidate = next, fd < 0 {
            next = candidate.pointee.ai_next
            let attempt = socket(
                candidate.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard attempt >= 0 else {
                lastReason = "cannot create a socket: \(String(cString: strerror(errno)))"
                continue
            }
            _ = fcntl(attempt, F_SETFL, fcntl(attempt, F_GETFL) | O_NONBLOCK)
            var one: Int32 = 1
            _ = setsockopt(attempt, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(attempt, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
            if connect(attempt, candidate.pointee.ai_addr, candidate.pointee.ai_addrlen) != 0, errno != EINPROGRESS {
                lastReason = "cannot connect to \(address):\(port): \(String(cString: strerror(errno)))"
                Glibc.close(attempt)
                continue
            }
            fd = attempt
        }
        guard fd >= 0 else { throw TransportFailure(lastReason) }
        guard let ssl = SSL_new(context) else {
            Glibc.close(fd)
            fd = -1
            throw TransportFailure("cannot create a TLS session: \(Self.openSSLError())")
        }
        self.ssl = ssl
        SSL_set_fd(ssl, fd)
        // Proton's write buffer may move between a blocked write and its retry.
        _ = SSL_ctrl(ssl, SSL_CTRL_MODE, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil)
        if !Self.isIPAddress(serverName) {
            serverName.withCString { name in
                _ = SSL_ctrl(
                    ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, Int(TLSEXT_NAMETYPE_host_name),
                    UnsafeMutableRawPointer(mutating: name))
            }
        }
        if readAhead { SSL_set_read_ahead(ssl, 1) }
        SSL_set_connect_state(ssl)
        phase = .connecting
    }

    deinit { close() }

    /// The poll(2) events this socket waits for.
    public var pollEvents: Int16 {
        switch phase {
        case .connecting: Int16(POLLOUT)
        case .handshaking: wantsWrite ? Int16(POLLOUT) : Int16(POLLIN)
        case .open, .closed: Int16(POLLIN)
        }
    }

    /// Whether OpenSSL holds decrypted bytes a read would return at once, which poll(2) cannot
    /// see (a reader that stopped before `.wouldBlock`). Without read-ahead that is all it can
    /// hold back; with it, whole records read ahead are not counted, so such a reader must read
    /// until `.wouldBlock`. Not `SSL_has_pending`: that is also true for half a record, whose rest
    /// only poll(2) can wait for (the loop would spin until it came).
    public var hasPending: Bool { ssl.map { SSL_pending($0) > 0 } ?? false }

    /// Moves the connect and the handshake on; returns whether the stream is open, or throws
    /// why it failed (a refused connection, a certificate that does not verify).
    public func advance() throws(TransportFailure) -> Bool {
        if phase == .connecting {
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error == EINPROGRESS { return false }
            guard error == 0 else { throw TransportFailure(String(cString: strerror(error))) }
            phase = .handshaking
        }
        guard phase == .handshaking, let ssl else { return phase == .open }
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            phase = .open
            wantsWrite = false
            return true
        }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ:
            wantsWrite = false
            return false
        case SSL_ERROR_WANT_WRITE:
            wantsWrite = true
            return false
        default:
            let verify = SSL_get_verify_result(ssl)
            if verify != X509_V_OK {
                throw TransportFailure(
                    "TLS: certificate verify failed: the hub's certificate does not verify (\(String(cString: X509_verify_cert_error_string(verify))))"
                )
            }
            throw TransportFailure("TLS handshake failed: \(Self.openSSLError())")
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) -> IO {
        guard phase == .open, let ssl, let base = buffer.baseAddress, buffer.count > 0 else { return .wouldBlock }
        ERR_clear_error()
        let count = SSL_read(ssl, base, Int32(min(buffer.count, Int(Int32.max))))
        if count > 0 { return .bytes(Int(count)) }
        return outcome(SSL_get_error(ssl, count))
    }

    public func write(_ bytes: UnsafeRawBufferPointer) -> IO {
        guard phase == .open, let ssl, let base = bytes.baseAddress, bytes.count > 0 else { return .wouldBlock }
        ERR_clear_error()
        let count = SSL_write(ssl, base, Int32(min(bytes.count, 1 << 20)))
        if count > 0 { return .bytes(Int(count)) }
        return outcome(SSL_get_error(ssl, count))
    }

    private func outcome(_ error: Int32) -> IO {
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE: return .wouldBlock
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL:
            let code = errno
            if code == EPIPE { Self.discardPendingSIGPIPE() }
            return code == 0 ? .closed : .failed(String(cString: strerror(code)))
        default: return .failed("TLS: \(Self.openSSLError())")
        }
    }

    /// Sends TLS close_notify (best effort) and closes the socket.
    public func close() {
        if let ssl {
            if phase == .open { _ = SSL_shutdown(ssl) }
            SSL_free(ssl)
            self.ssl = nil
        }
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
        phase = .closed
    }

    /// The I/O thread blocks SIGPIPE (`PluginIOThread.start`); the one a failed write raised is taken
    /// off the thread here, so it never reaches the process.
    public static func discardPendingSIGPIPE() {
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        var zero = timespec(tv_sec: 0, tv_nsec: 0)
        while sigtimedwait(&pipeSignal, nil, &zero) == SIGPIPE {}
    }

    public static func isIPAddress(_ host: String) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(AF_INET, host, &buffer) == 1 || inet_pton(AF_INET6, host, &buffer) == 1
    }

    public static func openSSLError() -> String {
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(ERR_get_error(), &text, text.count)
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Why a connection failed, for a log line and a link's reason (never a secret).
public struct TransportFailure: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
