import GatehousePluginABI

/// A message a downstream transport consumed but can never deliver (`gh_dead_letter`): over its
/// size limit, or on a topic that names no device. The host keeps it as a dead letter — device,
/// topic, size, reason, time and the payload's first bytes, never the whole of a large payload —
/// counts it and logs it without its bytes (gatehouse_plugin.h, `gh_host_api.dead_letter`).
public struct PluginDeadLetter: Sendable, Equatable {
    /// The reasons a transport gives (`GH_DEAD_LETTER_*`): short, stable words.
    public struct Reason: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// Over the transport's size limit (`GH_DEAD_LETTER_TOO_LARGE`).
        public static let tooLarge = Reason(rawValue: GH_DEAD_LETTER_TOO_LARGE)
        /// Its topic names no device (`GH_DEAD_LETTER_NO_DEVICE`).
        public static let noDevice = Reason(rawValue: GH_DEAD_LETTER_NO_DEVICE)
    }

    /// The most payload bytes a dead letter carries (`GH_DEAD_LETTER_HEAD_MAX`).
    public static let headLimit = Int(GH_DEAD_LETTER_HEAD_MAX)

    /// The device the topic names; empty when it names none.
    public var deviceID: String
    /// Where the message arrived, property bag included.
    public var topic: String
    /// The payload's full size in bytes.
    public var size: Int
    public var reason: Reason
    /// One line for people (the limit, the sizes); never a secret, never payload bytes.
    public var detail: String
    /// The payload's first bytes, at most `headLimit` (longer ones are cut when crossing the ABI).
    public var head: [UInt8]
    /// When the transport received it, milliseconds since 1970; 0 if unknown (the host's now).
    public var receivedUnixMS: Int64

    public init(
        deviceID: String, topic: String, size: Int, reason: Reason, detail: String = "", head: [UInt8] = [],
        receivedUnixMS: Int64 = 0
    ) {
        self.deviceID = deviceID
        self.topic = topic
        self.size = size
        self.reason = reason
        self.detail = detail
        self.head = head
        self.receivedUnixMS = receivedUnixMS
    }

    /// Copies a borrowed C dead letter; `head` is cut to `headLimit` bytes.
    public init(_ c: gh_dead_letter) {
        deviceID = String(ghBytes: c.device_id)
        topic = String(ghBytes: c.topic)
        size = Int(clamping: c.size)
        reason = Reason(rawValue: String(ghBytes: c.reason))
        detail = String(ghBytes: c.detail)
        var head = c.head
        head.len = min(head.len, UInt64(Self.headLimit))
        self.head = [UInt8](ghBytes: head)
        receivedUnixMS = c.received_unix_ms
    }

    /// Calls `body` with this dead letter laid out as a borrowed `gh_dead_letter` (`head` cut to
    /// `headLimit` bytes).
    public func withCDeadLetter<R>(_ body: (UnsafePointer<gh_dead_letter>) throws -> R) rethrows -> R {
        let headBytes = head.prefix(Self.headLimit)
        var scratch = CScratch(
            capacity: deviceID.utf8.count + topic.utf8.count + reason.rawValue.utf8.count + detail.utf8.count
                + headBytes.count)
        defer { scratch.deallocate() }
        var c = gh_dead_letter()
        c.struct_size = UInt32(MemoryLayout<gh_dead_letter>.size)
        c.device_id = scratch.bytes(deviceID.utf8)
        c.topic = scratch.bytes(topic.utf8)
        c.reason = scratch.bytes(reason.rawValue.utf8)
        c.detail = scratch.bytes(detail.utf8)
        c.head = scratch.bytes(headBytes)
        c.size = UInt64(max(size, 0))
        c.received_unix_ms = receivedUnixMS
        return try withUnsafePointer(to: &c) { try body($0) }
    }
}
