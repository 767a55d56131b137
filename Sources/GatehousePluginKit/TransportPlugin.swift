import FoundationEssentials
import GatehouseBasics
import GatehousePluginABI
import StrictJSON
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What a plugin author writes: a type that conforms to `TransportPlugin`, and one exported
/// entry point that hands it to `PluginExport`:
///
/// ```swift
/// @_cdecl("gatehouse_plugin_entry")
/// public func gatehousePluginEntry(_ hostABI: UInt32) -> UnsafeRawPointer? {
///     PluginExport.transport(MyTransport.self, hostABI: hostABI)
/// }
/// ```
///
/// The kit owns all of the C glue: the descriptor, the thunks, and the conversions of
/// `gh_message`/`gh_command`. A Swift protocol never crosses `dlopen` (that fails silently on
/// Linux); only the C descriptor does.
public protocol TransportPlugin: AnyObject, Sendable {
    static var pluginName: String { get }
    static var pluginVersion: String { get }
    static var roles: Set<TransportRole> { get }

    /// Parses the plugin's config section and prepares; no threads or I/O yet.
    init(role: TransportRole, config: PluginConfig, host: PluginHost) throws(PluginError)
    func start() throws(PluginError)
    /// Drains for at most `drainMilliseconds`, closes, joins threads.
    func stop(drainMilliseconds: UInt32)

    // Upstream role. Downstream-only plugins keep the defaults.
    func openIdentity(_ deviceID: String) -> PluginStatus
    func closeIdentity(_ deviceID: String) -> PluginStatus
    func send(_ message: PluginMessage, token: UInt64) -> PluginStatus
    func commandResult(token: UInt64, status: Int32, body: [UInt8])

    /// Downstream role, optional: delivers an allowed command to its leaf device. Plugins that
    /// set `canDeliver` implement it and report the outcome with `PluginHost.deliverResult`.
    static var canDeliver: Bool { get }
    func deliver(_ command: PluginCommand, token: UInt64) -> PluginStatus
}

extension TransportPlugin {
    public func openIdentity(_ deviceID: String) -> PluginStatus { .invalid }
    public func closeIdentity(_ deviceID: String) -> PluginStatus { .invalid }
    public func send(_ message: PluginMessage, token: UInt64) -> PluginStatus { .invalid }
    public func commandResult(token: UInt64, status: Int32, body: [UInt8]) {}
    public static var canDeliver: Bool { false }
    public func deliver(_ command: PluginCommand, token: UInt64) -> PluginStatus { .invalid }
}

/// The plugin's own config section (the JSON the host passes to create).
public struct PluginConfig: Sendable {
    public let json: [UInt8]
    /// The section's members, parsed strictly (duplicate names refused, numbers exact).
    public let object: JSONObject

    public init(json: [UInt8]) throws(PluginError) {
        self.json = json
        guard case .object(let parsed)? = try? JSONValue(parsing: json) else {
            throw PluginError("the plugin's configuration is not a JSON object")
        }
        self.object = parsed
    }

    /// Refuses any key outside `known`, naming it (the host turns that into a file:line).
    public func requireKnownKeys(_ known: Set<String>) throws(PluginError) {
        for key in object.keys.sorted() where !known.contains(key) {
            let hint = known.min { editDistance($0, key) < editDistance($1, key) }
            let suggestion = hint.map { editDistance($0, key) <= 2 ? "; did you mean `\($0)`?" : "" } ?? ""
            throw PluginError("unknown key `\(key)`\(suggestion)", configKey: key)
        }
    }

    public func string(_ key: String, default fallback: String? = nil) throws(PluginError) -> String {
        guard let value = object[key] else {
            if let fallback { return fallback }
            throw PluginError("missing required key `\(key)`", configKey: key)
        }
        guard let string = value.stringValue else {
            throw PluginError("`\(key)` must be a string", configKey: key)
        }
        return string
    }

    public func optionalString(_ key: String) throws(PluginError) -> String? {
        guard object[key] != nil else { return nil }
        return try string(key)
    }

    public func integer(_ key: String, default fallback: Int, range: ClosedRange<Int>) throws(PluginError) -> Int {
        guard let value = object[key] else { return fallback }
        guard let number = value.intValue, range.contains(number) else {
            throw PluginError(
                "`\(key)` must be a whole number in \(range.lowerBound)...\(range.upperBound)", configKey: key)
        }
        return number
    }

    /// A TOML/JSON boolean (1 and 0 are read as true and false too, as earlier versions did).
    public func bool(_ key: String, default fallback: Bool) throws(PluginError) -> Bool {
        guard let value = object[key] else { return fallback }
        if let flag = value.boolValue { return flag }
        guard let number = value.intValue, number == 0 || number == 1 else {
            throw PluginError("`\(key)` must be true or false", configKey: key)
        }
        return number == 1
    }

    /// A size in bytes: a whole number, or a string with a unit ("256 KiB", "1 MiB", "100 kB").
    public func size(_ key: String, default fallback: Int, range: ClosedRange<Int>) throws(PluginError) -> Int {
        guard let value = object[key] else { return fallback }
        let bytes: Int?
        if case .number(let number) = value {
            bytes = number.intValue
        } else if let text = value.stringValue {
            bytes = Self.bytes(text)
        } else {
            bytes = nil
        }
        guard let bytes, range.contains(bytes) else {
            throw PluginError(
                "`\(key)` must be a size from \(range.lowerBound) to \(range.upperBound) bytes, "
                    + "as a number of bytes or with a unit (\"256 KiB\", \"1 MiB\")", configKey: key)
        }
        return bytes
    }

    /// "256 KiB", "1MiB", "100 kB", "4096" → bytes: the one parser of sizes, so a plugin's
    /// config and the host's (`Units.bytes` in gatehoused's configuration) read them alike.
    public static func bytes(_ text: String) -> Int? {
        let trimmed = text.trimmingBlanks
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        let unit = trimmed.dropFirst(digits.count).trimmingBlanks
        guard let value = Int(digits) else { return nil }
        let factor: Int
        switch unit {
        case "", "B": factor = 1
        case "KiB": factor = 1 << 10
        case "MiB": factor = 1 << 20
        case "GiB": factor = 1 << 30
        case "kB", "KB": factor = 1000
        case "MB": factor = 1_000_000
        case "GB": factor = 1_000_000_000
        default: return nil
        }
        let (result, overflow) = value.multipliedReportingOverflow(by: factor)
        return overflow ? nil : result
    }

    public func strings(_ key: String, default fallback: [String]) throws(PluginError) -> [String] {
        guard let value = object[key] else { return fallback }
        if let single = value.stringValue { return [single] }
        guard let list = value.arrayValue, case let strings = list.compactMap(\.stringValue),
            strings.count == list.count
        else {
            throw PluginError("`\(key)` must be a string or a list of strings", configKey: key)
        }
        return strings
    }
}

/// Levenshtein distance, for "did you mean" hints on short config keys.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var previous = Array(0...b.count)
    for (i, ca) in a.enumerated() {
        var current = [i + 1]
        for (j, cb) in b.enumerated() {
            current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
        }
        previous = current
    }
    return previous[b.count]
}

/// The host, as a plugin sees it: the functions of `gh_host_api`, in Swift.
public struct PluginHost: @unchecked Sendable {
    // @unchecked: `api` and `context` are immutable pointers the host keeps valid, and the
    // header declares every host function callable from any thread.
    let api: UnsafePointer<gh_host_api>
    let context: UnsafeMutableRawPointer?

    public func log(_ level: PluginLogLevel, _ message: String) {
        var message = message
        message.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { chars in
                api.pointee.log(context, level.rawValue, chars.baseAddress, UInt64(chars.count))
            }
        }
    }

    /// Blocks until the batch is durable. Acknowledge upstream of you only on `.ok`.
    public func ingest(_ messages: [PluginMessage]) -> PluginStatus {
        PluginStatus(
            rawValue: PluginMessage.withCMessages(messages) { batch in
                api.pointee.ingest(context, batch.baseAddress, UInt32(batch.count))
            })
    }

    public func delivered(token: UInt64, status: PluginStatus) {
        api.pointee.delivered(context, token, status.rawValue)
    }

    public func linkState(deviceID: String, _ state: LinkState, reason: String = "") {
        withGHBytes(deviceID) { device in
            withGHBytes(reason) { reason in
                api.pointee.link_state(context, device, state.rawValue, reason)
            }
        }
    }

    /// Asks the host for a SAS token for `resource`, valid until `expiry` (seconds since 1970).
    public func signSAS(deviceID: String, resource: String, expiry: Int64) -> Result<String, PluginStatusError> {
        var buffer = [CChar](repeating: 0, count: 1024)
        var length: UInt64 = 0
        let status = withGHBytes(deviceID) { device in
            withGHBytes(resource) { resource in
                buffer.withUnsafeMutableBufferPointer { out in
                    api.pointee.sign_sas(context, device, resource, expiry, out.baseAddress, UInt64(out.count), &length)
                }
            }
        }
        defer { buffer.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }  // wipe the copy
        guard status == GH_OK else { return .failure(PluginStatusError(PluginStatus(rawValue: status))) }
        return .success(String(decoding: buffer[..<Int(length)].map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    public func command(_ command: PluginCommand, token: UInt64) {
        command.withCCommand { api.pointee.command(context, $0, token) }
    }

    /// Reports the outcome of `deliver(_:token:)`. Hosts older than gatehouse 0.2 lack the
    /// function: the report is then dropped (such a host never calls `deliver`).
    public func deliverResult(token: UInt64, status: Int32, body: [UInt8]) {
        guard api.pointee.struct_size >= MemoryLayout<gh_host_api>.size, let report = api.pointee.deliver_result
        else { return }
        body.withUnsafeBufferPointer { buffer in
            report(context, token, status, gh_bytes(data: buffer.baseAddress, len: UInt64(buffer.count)))
        }
    }

    /// Whether the host keeps dead letters (`gh_host_api.dead_letter`): hosts that predate it
    /// leave the slot NULL.
    public var keepsDeadLetters: Bool {
        api.pointee.struct_size >= MemoryLayout<gh_host_api>.offset(of: \.dead_letter)!
            + MemoryLayout<UnsafeRawPointer>.size
            && api.pointee.dead_letter != nil
    }

    /// Hands the host a message this transport consumed but can never deliver; blocks until the
    /// dead letter is durable. Acknowledge the message to its broker only on `.ok`. A host
    /// without the function answers `.invalid` (`keepsDeadLetters` is false): it cannot keep the
    /// message, so the caller logs the drop and acknowledges.
    public func deadLetter(_ letter: PluginDeadLetter) -> PluginStatus {
        guard keepsDeadLetters, let keep = api.pointee.dead_letter else { return .invalid }
        return PluginStatus(rawValue: letter.withCDeadLetter { keep(context, $0) })
    }
}

/// Builds the C descriptor for a Swift `TransportPlugin` and routes the C thunks to it.
public enum PluginExport {
    /// The plugin type of this shared object. Each plugin .so links its own copy of the kit,
    /// so there is exactly one registration per loaded object.
    private static let registered = Mutex<(any TransportPlugin.Type)?>(nil)
    private static let descriptorStorage = Mutex<SendableRawPointer?>(nil)

    /// Call from the plugin's `gatehouse_plugin_entry`. Returns NULL for an unknown host ABI.
    public static func transport(_ type: any TransportPlugin.Type, hostABI: UInt32) -> UnsafeRawPointer? {
        guard hostABI == GH_PLUGIN_ABI_VERSION else { return nil }
        registered.withLock { $0 = type }
        return descriptorStorage.withLock { storage in
            if let storage { return UnsafeRawPointer(storage.pointer) }
            let descriptor = UnsafeMutablePointer<gh_plugin_descriptor>.allocate(capacity: 1)
            descriptor.initialize(to: makeDescriptor(type))
            storage = SendableRawPointer(pointer: UnsafeMutableRawPointer(descriptor))
            return UnsafeRawPointer(descriptor)
        }
    }

    private static func makeDescriptor(_ type: any TransportPlugin.Type) -> gh_plugin_descriptor {
        var descriptor = gh_plugin_descriptor()
        descriptor.abi_version = GH_PLUGIN_ABI_VERSION
        descriptor.struct_size = UInt32(MemoryLayout<gh_plugin_descriptor>.size)
        descriptor.name = UnsafePointer(strdup(type.pluginName))  // static: never freed
        descriptor.version = UnsafePointer(strdup(type.pluginVersion))
        descriptor.kind = GH_KIND_TRANSPORT
        descriptor.roles = type.roles.reduce(0) { $0 | $1.rawValue }
        descriptor.ops.create = { api, context, role, json, out, errorOut in
            guard let api, let out else { return GH_ERR_INVALID }
            guard let type = PluginExport.registered.withLock({ $0 }), let role = TransportRole(rawValue: role) else {
                return GH_ERR_INVALID
            }
            do throws(PluginError) {
                let config = try PluginConfig(json: [UInt8](ghBytes: json))
                let plugin = try type.init(role: role, config: config, host: PluginHost(api: api, context: context))
                out.pointee = Unmanaged.passRetained(PluginBox(plugin)).toOpaque()
                return GH_OK
            } catch {
                error.write(into: errorOut)
                return GH_ERR_INVALID
            }
        }
        descriptor.ops.start = { instance, errorOut in
            guard let plugin = PluginBox.from(instance) else { return GH_ERR_INVALID }
            do throws(PluginError) {
                try plugin.start()
                return GH_OK
            } catch {
                error.write(into: errorOut)
                return GH_ERR_UNAVAILABLE
            }
        }
        descriptor.ops.stop = { instance, drain in PluginBox.from(instance)?.stop(drainMilliseconds: drain) }
        descriptor.ops.destroy = { instance in
            guard let instance else { return }
            Unmanaged<PluginBox>.fromOpaque(instance).release()
        }
        descriptor.ops.open_identity = { instance, device in
            PluginBox.from(instance)?.openIdentity(String(ghBytes: device)).rawValue ?? GH_ERR_INVALID
        }
        descriptor.ops.close_identity = { instance, device in
            PluginBox.from(instance)?.closeIdentity(String(ghBytes: device)).rawValue ?? GH_ERR_INVALID
        }
        descriptor.ops.send = { instance, message, token in
            guard let plugin = PluginBox.from(instance), let message else { return GH_ERR_INVALID }
            return plugin.send(PluginMessage(message.pointee), token: token).rawValue
        }
        descriptor.ops.command_result = { instance, token, status, body in
            PluginBox.from(instance)?.commandResult(token: token, status: status, body: [UInt8](ghBytes: body))
        }
        if type.canDeliver {
            descriptor.ops.deliver = { instance, command, token in
                guard let plugin = PluginBox.from(instance), let command, let parsed = PluginCommand(command.pointee)
                else { return GH_ERR_INVALID }
                return plugin.deliver(parsed, token: token).rawValue
            }
        }
        return descriptor
    }
}

struct SendableRawPointer: @unchecked Sendable {
    // Written once under PluginExport's lock, never freed (static lifetime per the header).
    let pointer: UnsafeMutableRawPointer
}

/// Holds the plugin object behind the opaque instance pointer.
final class PluginBox: Sendable {
    let plugin: any TransportPlugin
    init(_ plugin: any TransportPlugin) { self.plugin = plugin }

    static func from(_ raw: UnsafeMutableRawPointer?) -> (any TransportPlugin)? {
        raw.map { Unmanaged<PluginBox>.fromOpaque($0).takeUnretainedValue().plugin }
    }
}

extension PluginError {
    /// Writes the message and key, NUL-terminated and truncated to fit, into a host gh_error.
    func write(into target: UnsafeMutablePointer<gh_error>?) {
        guard let target else { return }
        withUnsafeMutableBytes(of: &target.pointee.message) { Self.copy(message, into: $0) }
        withUnsafeMutableBytes(of: &target.pointee.config_key) { Self.copy(configKey ?? "", into: $0) }
    }

    private static func copy(_ text: String, into buffer: UnsafeMutableRawBufferPointer) {
        let bytes = Array(text.utf8.prefix(buffer.count - 1))
        buffer.copyBytes(from: bytes)
        buffer[bytes.count] = 0
    }
}
