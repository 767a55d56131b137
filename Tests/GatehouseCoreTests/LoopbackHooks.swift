import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The test hooks of the C loopback upstream (`loopback_*`, Tests/Fixtures/plugins): hold and
/// release acknowledgements, flip links, count sends. The fixture keeps them in globals, so its
/// users run one at a time (they are nested in the serialized `RelayTests`).
protocol LoopbackHooks {
    /// The fixture's `dlopen` handle.
    var handle: UnsafeMutableRawPointer { get }
}

extension LoopbackHooks {
    var sentCount: UInt64 {
        typealias Fn = @convention(c) () -> UInt64
        return unsafeBitCast(dlsym(handle, "loopback_sent_count"), to: Fn.self)()
    }

    func ackAll(_ status: Int32 = 0) {
        typealias Fn = @convention(c) (Int32) -> Void
        unsafeBitCast(dlsym(handle, "loopback_ack_all"), to: Fn.self)(status)
    }

    func setLink(_ device: String, up: Bool) {
        typealias Fn = @convention(c) (UnsafePointer<CChar>, Int32) -> Void
        unsafeBitCast(dlsym(handle, "loopback_set_link"), to: Fn.self)(device, up ? 2 : 0)
    }
}
