import Dispatch
import FoundationEssentials
import GatehouseBasics
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The one I/O thread of an upstream transport (docs/architecture.md, "Threads"): the thread
/// that alone touches the transport's sockets and its protocol engine (the `mqtt` transport's
/// hub clients, proton), and the mailbox through which every other thread talks to it. The host's calls (`open`, `send`, …)
/// only `enqueue` an operation and wake the thread through a pipe, so none of them blocks; the
/// thread's loop polls `wakeDescriptor` beside its sockets, calls `drainWake()` when it fired,
/// and takes the queued operations with `take()`.
///
/// One pipe write covers every operation queued before the thread takes them (`wakePending`).
public final class PluginIOThread<Op: Sendable>: Sendable {
    private let inbox = Mutex<[Op]>([])
    private let running = Atomic<Bool>(false)
    private let wakePending = Atomic<Bool>(false)
    private let drainDeadline = Atomic<Int64>(0)
    private let done = DispatchSemaphore(value: 0)
    private let wakePipe: (read: Int32, write: Int32)

    public init() throws(PluginError) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0, fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0, fcntl(fds[1], F_SETFL, O_NONBLOCK) == 0 else {
            throw PluginError("cannot create the I/O thread's wake-up pipe: \(String(cString: strerror(errno)))")
        }
        wakePipe = (fds[0], fds[1])
    }

    deinit {
        close(wakePipe.read)
        close(wakePipe.write)
    }

    /// Starts the thread. SIGPIPE stays blocked on it: a write to a connection the peer dropped
    /// fails with EPIPE instead of killing gatehoused.
    public func start(name: String, _ body: @escaping @Sendable () -> Void) {
        running.store(true, ordering: .sequentiallyConsistent)
        NamedThread.start(name: name) { [self] in
            var pipeSignal = sigset_t()
            sigemptyset(&pipeSignal)
            sigaddset(&pipeSignal, SIGPIPE)
            pthread_sigmask(SIG_BLOCK, &pipeSignal, nil)
            body()
            done.signal()
        }
    }

    /// Asks the loop to end, giving it until `drainDeadlineMS` (on the caller's clock) to
    /// settle what is in flight, and waits for the thread. Does nothing if it is not running.
    public func stop(drainDeadlineMS: Int64) {
        guard running.load(ordering: .sequentiallyConsistent) else { return }
        drainDeadline.store(drainDeadlineMS, ordering: .sequentiallyConsistent)
        running.store(false, ordering: .sequentiallyConsistent)
        wake()
        done.wait()
    }

    /// Whether the loop should go on (false once `stop` was called).
    public var isRunning: Bool { running.load(ordering: .sequentiallyConsistent) }

    /// The deadline `stop` gave for draining.
    public var drainDeadlineMS: Int64 { drainDeadline.load(ordering: .sequentiallyConsistent) }

    /// Queues an operation for the thread and wakes it. Any thread; never blocks on the thread.
    public func enqueue(_ op: Op) {
        inbox.withLock { $0.append(op) }
        wake()
    }

    /// Wakes the thread unless a wake-up is already pending.
    public func wake() {
        guard !wakePending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        var byte: UInt8 = 1
        _ = write(wakePipe.write, &byte, 1)
    }

    /// The read end of the wake-up pipe, for the thread's poll(2).
    public var wakeDescriptor: Int32 { wakePipe.read }

    /// Empties the wake-up pipe (after poll reported it readable). On the thread.
    public func drainWake() {
        var buffer = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &buffer, { read(wakePipe.read, $0.baseAddress, $0.count) }) > 0 {}
    }

    /// Takes every queued operation, in order. On the thread.
    public func take() -> [Op] {
        wakePending.store(false, ordering: .sequentiallyConsistent)
        return inbox.withLock { ops in
            defer { ops.removeAll(keepingCapacity: true) }
            return ops
        }
    }
}
