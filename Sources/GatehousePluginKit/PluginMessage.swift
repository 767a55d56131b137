import GatehousePluginABI

/// A telemetry message of one leaf device, as Swift code on either side of the ABI sees it.
///
/// Crossing the boundary copies: `withCMessages` lays a batch out in one scratch allocation for
/// the duration of a call, and `init(_ c:)` copies a borrowed `gh_message` into owned storage.
public struct PluginMessage: Sendable, Equatable {
    public var deviceID: String
    public var payload: [UInt8]
    /// Application properties in the order they arrived (IoT Hub property bag).
    public var properties: [Property]
    /// When the gateway first saw the message, milliseconds since 1970; 0 if unknown.
    public var createdUnixMS: Int64
    /// Where a downstream transport received it (the site broker's topic, property bag
    /// included); empty if unknown, and in `send` (the upstream transport makes its own).
    public var topic: String
    /// The payload is a patch of the device's own reported properties, not telemetry
    /// (`GH_MESSAGE_TWIN_REPORTED`): only the host sets it, and only in `send`.
    public var isTwinReported = false

    public struct Property: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public init(
        deviceID: String, payload: [UInt8], properties: [Property] = [], createdUnixMS: Int64 = 0, topic: String = ""
    ) {
        self.deviceID = deviceID
        self.payload = payload
        self.properties = properties
        self.createdUnixMS = createdUnixMS
        self.topic = topic
    }

    /// Copies a borrowed C message into owned Swift storage.
    public init(_ c: gh_message) {
        self.deviceID = String(ghBytes: c.device_id)
        self.payload = [UInt8](ghBytes: c.payload)
        var properties: [Property] = []
        if let base = c.properties, c.property_count > 0 {
            properties.reserveCapacity(Int(c.property_count))
            for index in 0..<Int(c.property_count) {
                properties.append(Property(String(ghBytes: base[index].key), String(ghBytes: base[index].value)))
            }
        }
        self.properties = properties
        self.createdUnixMS = c.created_unix_ms
        // Every ABI 1 writer has room for `topic` (it took reserved space); one that predates it
        // left it zero, which reads as empty.
        self.topic = String(ghBytes: c.topic)
        self.isTwinReported = c.flags & UInt64(GH_MESSAGE_TWIN_REPORTED) != 0
    }
}

/// A cloud-to-device command (C2D message or direct method) as an upstream transport received it.
public struct PluginCommand: Sendable, Equatable {
    public enum Kind: Int32, Sendable {
        case c2dMessage = 1
        case directMethod = 2
    }
    public var kind: Kind
    public var deviceID: String
    /// The method name; empty for a C2D message.
    public var name: String
    public var payload: [UInt8]
    public var properties: [PluginMessage.Property]

    public init(
        kind: Kind, deviceID: String, name: String, payload: [UInt8],
        properties: [PluginMessage.Property] = []
    ) {
        self.kind = kind
        self.deviceID = deviceID
        self.name = name
        self.payload = payload
        self.properties = properties
    }

    /// Copies a borrowed C command; nil if its kind is not one this ABI defines.
    public init?(_ c: gh_command) {
        guard let kind = Kind(rawValue: c.kind) else { return nil }
        self.kind = kind
        self.deviceID = String(ghBytes: c.device_id)
        self.name = String(ghBytes: c.name)
        self.payload = [UInt8](ghBytes: c.payload)
        var properties: [PluginMessage.Property] = []
        if let base = c.properties, c.property_count > 0 {
            for index in 0..<Int(c.property_count) {
                properties.append(.init(String(ghBytes: base[index].key), String(ghBytes: base[index].value)))
            }
        }
        self.properties = properties
    }
}

// MARK: - Laying Swift values out as borrowed C structs

/// One scratch allocation holding every byte a batch of C structs points into. It lives for
/// the duration of one `with…` call, which is exactly the "borrowed" lifetime the header states.
struct CScratch {
    private var buffer: UnsafeMutableRawBufferPointer
    private var used = 0

    init(capacity: Int) {
        buffer = .allocate(byteCount: max(capacity, 1), alignment: 16)
    }

    func deallocate() { buffer.deallocate() }

    mutating func bytes(_ source: some Collection<UInt8>) -> gh_bytes {
        let count = source.count
        guard count > 0, let base = buffer.baseAddress else { return gh_bytes(data: nil, len: 0) }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + count)])
        _ = target.initializeMemory(as: UInt8.self, from: source)
        used += count
        return gh_bytes(data: (base + used - count).assumingMemoryBound(to: UInt8.self), len: UInt64(count))
    }
}

extension PluginMessage {
    var byteFootprint: Int {
        deviceID.utf8.count + topic.utf8.count + payload.count
            + properties.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
    }

    /// Calls `body` with the batch laid out as a borrowed `gh_message` array.
    public static func withCMessages<R>(
        _ messages: [PluginMessage], _ body: (UnsafeBufferPointer<gh_message>) throws -> R
    ) rethrows -> R {
        var scratch = CScratch(capacity: messages.reduce(0) { $0 + $1.byteFootprint })
        defer { scratch.deallocate() }
        let propertyCount = messages.reduce(0) { $0 + $1.properties.count }
        let properties = UnsafeMutableBufferPointer<gh_property>.allocate(capacity: max(propertyCount, 1))
        defer { properties.deallocate() }
        var cMessages: [gh_message] = []
        cMessages.reserveCapacity(messages.count)
        var nextProperty = 0
        for message in messages {
            let firstProperty = nextProperty
            for property in message.properties {
                properties[nextProperty] = gh_property(
                    key: scratch.bytes(property.key.utf8), value: scratch.bytes(property.value.utf8))
                nextProperty += 1
            }
            var c = gh_message()
            c.struct_size = UInt32(MemoryLayout<gh_message>.size)
            c.property_count = UInt32(message.properties.count)
            c.device_id = scratch.bytes(message.deviceID.utf8)
            c.payload = scratch.bytes(message.payload)
            c.properties = message.properties.isEmpty ? nil : UnsafePointer(properties.baseAddress! + firstProperty)
            c.created_unix_ms = message.createdUnixMS
            c.topic = scratch.bytes(message.topic.utf8)
            c.flags = message.isTwinReported ? UInt64(GH_MESSAGE_TWIN_REPORTED) : 0
            cMessages.append(c)
        }
        return try cMessages.withUnsafeBufferPointer { try body($0) }
    }

    /// Calls `body` with this one message as a borrowed `gh_message`.
    public func withCMessage<R>(_ body: (UnsafePointer<gh_message>) throws -> R) rethrows -> R {
        try Self.withCMessages([self]) { try body($0.baseAddress!) }
    }
}

extension PluginCommand {
    /// Calls `body` with this command laid out as a borrowed `gh_command`.
    public func withCCommand<R>(_ body: (UnsafePointer<gh_command>) throws -> R) rethrows -> R {
        let footprint =
            deviceID.utf8.count + name.utf8.count + payload.count
            + properties.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        var scratch = CScratch(capacity: footprint)
        defer { scratch.deallocate() }
        var cProperties = properties.map {
            gh_property(key: scratch.bytes($0.key.utf8), value: scratch.bytes($0.value.utf8))
        }
        return try cProperties.withUnsafeMutableBufferPointer { props in
            var c = gh_command()
            c.struct_size = UInt32(MemoryLayout<gh_command>.size)
            c.kind = kind.rawValue
            c.device_id = scratch.bytes(deviceID.utf8)
            c.name = scratch.bytes(name.utf8)
            c.payload = scratch.bytes(payload)
            c.properties = props.isEmpty ? nil : UnsafePointer(props.baseAddress)
            c.property_count = UInt32(props.count)
            return try withUnsafePointer(to: &c) { try body($0) }
        }
    }
}

// MARK: - gh_bytes conversions

extension String {
    /// Copies a borrowed byte string; invalid UTF-8 is repaired with U+FFFD rather than trusted.
    public init(ghBytes bytes: gh_bytes) {
        guard let data = bytes.data, bytes.len > 0 else {
            self = ""
            return
        }
        self = String(decoding: UnsafeBufferPointer(start: data, count: Int(bytes.len)), as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    public init(ghBytes bytes: gh_bytes) {
        guard let data = bytes.data, bytes.len > 0 else {
            self = []
            return
        }
        self = Array(UnsafeBufferPointer(start: data, count: Int(bytes.len)))
    }
}

/// Calls `body` with a borrowed `gh_bytes` view of `bytes`.
public func withGHBytes<R>(_ bytes: some Collection<UInt8>, _ body: (gh_bytes) throws -> R) rethrows -> R {
    let array = Array(bytes)
    return try array.withUnsafeBufferPointer { buffer in
        try body(gh_bytes(data: buffer.baseAddress, len: UInt64(buffer.count)))
    }
}

/// Calls `body` with a borrowed `gh_bytes` view of a string's UTF-8.
public func withGHBytes<R>(_ string: String, _ body: (gh_bytes) throws -> R) rethrows -> R {
    try withGHBytes(Array(string.utf8), body)
}
