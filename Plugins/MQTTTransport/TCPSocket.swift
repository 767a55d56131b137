#if canImport(Glibc)
    import Glibc
#endif

/// TCP helpers for the site-side client (one thread, one socket). Every wait also polls an
/// `interrupt` descriptor (the subscriber's stop pipe), so `stop` ends a connect or a wait at once
/// whatever the peer does (docs/architecture.md, "Threads").
enum TCPSocket {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Connects to the first address of `host` that answers within `timeout`, without blocking in
    /// connect(2): the socket is non-blocking until it is connected, and the wait polls
    /// `interrupt` too. A readable `interrupt` abandons the connect ("stopped"). The connected
    /// socket is returned in blocking mode (the client polls before it reads).
    static func connect(host: String, port: Int, timeout: Duration, interrupt: Int32) -> Result<Int32, Failure> {
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
                info.pointee.ai_family,
                info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue),
                info.pointee.ai_protocol)
            guard fd >= 0 else {
                lastError = String(cString: strerror(errno))
                continue
            }
            switch attempt(fd, info.pointee.ai_addr, info.pointee.ai_addrlen, timeout: timeout, interrupt: interrupt) {
            case .connected:
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                return .success(fd)
            case .interrupted:
                close(fd)
                return .failure(Failure(description: "stopped"))
            case .failed(let reason):
                lastError = reason
                close(fd)
            }
        }
        return .failure(Failure(description: "cannot connect to \(host):\(port): \(lastError)"))
    }

    private enum Attempt {
        case connected
        case interrupted
        case failed(String)
    }

    /// One non-blocking connect(2), waited for with poll(2) on the socket and `interrupt`.
    private static func attempt(
        _ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>, _ length: socklen_t, timeout: Duration, interrupt: Int32
    ) -> Attempt {
        if Glibc.connect(fd, address, length) == 0 { return .connected }
        // EINTR: the connect goes on asynchronously, as with EINPROGRESS.
        guard errno == EINPROGRESS || errno == EINTR else { return .failed(String(cString: strerror(errno))) }
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = deadline - .now
            guard left > .zero else { return .failed("no answer within \(timeout.formattedMS)") }
            var fds = [
                pollfd(fd: fd, events: Int16(POLLOUT), revents: 0),
                pollfd(fd: interrupt, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&fds, 2, Int32(clamping: max(left.milliseconds, 1)))
            if ready < 0 {
                if errno == EINTR { continue }
                return .failed(String(cString: strerror(errno)))
            }
            if fds[1].revents != 0 { return .interrupted }
            guard fds[0].revents != 0 else { continue }
            var error: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) == 0 else {
                return .failed(String(cString: strerror(errno)))
            }
            return error == 0 ? .connected : .failed(String(cString: strerror(error)))
        }
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

    /// Waits until `fd` is readable (true), or `timeout` passed or `interrupt` became readable
    /// (false).
    static func waitReadable(_ fd: Int32, timeout: Duration, interrupt: Int32) -> Bool {
        var fds = [
            pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: interrupt, events: Int16(POLLIN), revents: 0),
        ]
        guard poll(&fds, 2, Int32(clamping: timeout.milliseconds)) > 0 else { return false }
        return fds[1].revents == 0 && fds[0].revents != 0
    }

    /// Waits for `fd` to be readable, as `waitReadable(_:timeout:interrupt:)`, and also for
    /// `wake`: returns whether `fd` is readable and whether `wake` is.
    static func waitReadable(_ fd: Int32, timeout: Duration, interrupt: Int32, wake: Int32) -> (
        readable: Bool, woken: Bool
    ) {
        var fds = [
            pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
            pollfd(fd: interrupt, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
        ]
        guard poll(&fds, 3, Int32(clamping: timeout.milliseconds)) > 0 else { return (false, false) }
        return (fds[1].revents == 0 && fds[0].revents != 0, fds[1].revents == 0 && fds[2].revents != 0)
    }

    /// Sleeps for `duration` unless `interrupt` becomes readable first.
    static func sleep(_ duration: Duration, interrupt: Int32) {
        var entry = pollfd(fd: interrupt, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, Int32(clamping: duration.milliseconds))
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
