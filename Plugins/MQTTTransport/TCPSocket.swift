#if canImport(Glibc)
    import Glibc
#endif

/// Blocking TCP helpers for the site-side client (one thread, one socket).
enum TCPSocket {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func connect(host: String, port: Int) -> Result<Int32, Failure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            return .failure(Failure(description: "cannot resolve \(host): \(String(cString: gai_strerror(status)))"))
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            cursor = info.pointee.ai_next
            let fd = socket(
                info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue),
                info.pointee.ai_protocol)
            guard fd >= 0 else { continue }
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 {
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                return .success(fd)
            }
            lastError = String(cString: strerror(errno))
            close(fd)
        }
        return .failure(Failure(description: "cannot connect to \(host):\(port): \(lastError)"))
    }

    /// Writes every byte or reports failure.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { buffer in
                send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }

    static func waitReadable(_ fd: Int32, timeout: Duration) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(
            clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        return poll(&entry, 1, ms) > 0
    }
}

/// Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
/// a reconnecting fleet does not hammer a broker that just came back in lockstep.
struct Backoff {
    let initial: Duration
    let maximum: Duration
    private var attempt = 0

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    mutating func reset() { attempt = 0 }

    mutating func next() -> Duration {
        let ceiling = min(initial * (1 << min(attempt, 16)), maximum)
        attempt += 1
        let ms = max(
            Int64(ceiling.components.seconds * 1000 + ceiling.components.attoseconds / 1_000_000_000_000_000), 1)
        return .milliseconds(Int64.random(in: (ms / 2)...ms))
    }
}

extension Duration {
    var formattedMS: String {
        "\(components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000)ms"
    }
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
