import GatehousePluginABI
import GatehousePluginKit
import Synchronization

/// One running instance of a plugin, as the host holds it.
///
/// The host's side of `gh_host_api` lives here: a C function table whose `host_ctx` is an
/// unmanaged reference to a `HostContext`, which forwards to the host's `PluginHostDelegate`.
/// Lifecycle calls (create, start, stop, destroy) come from one control thread, as the header
/// requires; `send`, `openIdentity` and `closeIdentity` may come from any thread.
///
/// The owner drives the lifecycle with explicit calls (in gatehoused: `Gateway`); releasing the
/// object calls nothing in the plugin, so dropping a reference can never stop a plugin, and a
/// firewall's stop (which may remove its rules) runs only when the owner says so.
public final class PluginInstance: Sendable {
    public let library: PluginLibrary
    public let role: TransportRole?
    /// The config section that configured it, e.g. "site" or "hub": used in every log line.
    public let label: String

    private let context: Unmanaged<HostContext>
    // The host table must outlive every plugin call; deinit frees it only after destroy().
    private let hostAPI: SendablePointer<gh_host_api>
    private let state: Mutex<State>

    private enum State {
        case created(UnsafeMutableRawPointer?)
        case started(UnsafeMutableRawPointer?)
        case stopped(UnsafeMutableRawPointer?)
        case destroyed
    }

    private var ops: gh_plugin_ops { library.descriptor.pointee.ops }

    public init(
        library: PluginLibrary, role: TransportRole?, label: String, configJSON: [UInt8],
        delegate: any PluginHostDelegate
    ) throws(PluginError) {
        self.library = library
        self.role = role
        self.label = label
        let context = Unmanaged.passRetained(HostContext(delegate: delegate, label: label))
        self.context = context
        let api = UnsafeMutablePointer<gh_host_api>.allocate(capacity: 1)
        api.initialize(to: HostContext.makeAPI())
        self.hostAPI = SendablePointer(api)

        var error = gh_error()
        var instance: UnsafeMutableRawPointer?
        let status = configJSON.withUnsafeBufferPointer { json in
            library.descriptor.pointee.ops.create(
                api, context.toOpaque(), role?.rawValue ?? 0,
                gh_bytes(data: json.baseAddress, len: UInt64(json.count)), &instance, &error)
        }
        guard status == GH_OK else {
            api.deallocate()
            context.release()
            throw PluginError.from(
                error, fallback: "plugin `\(library.name)` refused its configuration (status \(status))")
        }
        self.state = Mutex(.created(instance))
        context.takeUnretainedValue().owner.withLock { $0 = WeakInstance(self) }
    }

    deinit {
        // No plugin call here (see above). An instance its owner never destroyed may still call
        // the host, so its host table and context are then left allocated.
        guard state.withLock({ if case .destroyed = $0 { true } else { false } }) else { return }
        hostAPI.pointer.deallocate()
        context.release()
    }

    public func start() throws(PluginError) {
        let failure: PluginError? = state.withLock { state in
            guard case .created(let instance) = state else { return nil }
            var error = gh_error()
            let status = ops.start(instance, &error)
            state = .started(instance)
            guard status != GH_OK else { return nil }
            return PluginError.from(
                error, fallback: "plugin `\(library.name)` [\(label)] failed to start (status \(status))")
        }
        if let failure { throw failure }
    }

    /// Stops I/O, giving in-flight work `drainMilliseconds` to finish.
    public func stop(drainMilliseconds: UInt32) {
        // Take the instance out under the lock, call stop outside it: stop joins plugin threads,
        // which may be calling `send`'s neighbours on this object.
        let instance: UnsafeMutableRawPointer?? = state.withLock { state in
            switch state {
            case .created(let instance), .started(let instance):
                state = .stopped(instance)
                return .some(instance)
            case .stopped, .destroyed:
                return .none
            }
        }
        if case .some(let instance) = instance {
            ops.stop(instance, drainMilliseconds)
        }
    }

    public func destroy() {
        stop(drainMilliseconds: 0)
        let instance: UnsafeMutableRawPointer?? = state.withLock { state in
            guard case .stopped(let instance) = state else { return .none }
            state = .destroyed
            return .some(instance)
        }
        if case .some(let instance) = instance {
            ops.destroy(instance)
        }
    }

    /// Frees a firewall instance without calling its stop: for a firewall, stop means gatehoused
    /// stops (`on_stop` applies), which an instance replaced on reload, or one the CLI used, must
    /// not do — the rules it applied belong to its successor or stay (docs/firewall.md). A
    /// transport is stopped first, as `destroy()` does.
    public func discard() {
        guard library.kind == GH_KIND_FIREWALL else { return destroy() }
        let instance: UnsafeMutableRawPointer?? = state.withLock { state in
            switch state {
            case .created(let instance), .started(let instance), .stopped(let instance):
                state = .destroyed
                return .some(instance)
            case .destroyed:
                return .none
            }
        }
        if case .some(let instance) = instance {
            ops.destroy(instance)
        }
    }

    private var liveInstance: UnsafeMutableRawPointer?? {
        state.withLock { state in
            if case .started(let instance) = state { return .some(instance) }
            return .none
        }
    }

    // MARK: Upstream operations

    public func openIdentity(_ deviceID: String) -> PluginStatus {
        guard case .some(let instance) = liveInstance, let open = ops.open_identity else { return .stopped }
        return PluginStatus(rawValue: withGHBytes(deviceID) { open(instance, $0) })
    }

    public func closeIdentity(_ deviceID: String) -> PluginStatus {
        guard case .some(let instance) = liveInstance, let close = ops.close_identity else { return .stopped }
        return PluginStatus(rawValue: withGHBytes(deviceID) { close(instance, $0) })
    }

    public func send(_ message: PluginMessage, token: UInt64) -> PluginStatus {
        guard case .some(let instance) = liveInstance, let send = ops.send else { return .stopped }
        return PluginStatus(rawValue: message.withCMessage { send(instance, $0, token) })
    }

    // MARK: Firewall operations

    /// Runs a firewall action; its text on success, the plugin's error (naming the rule) otherwise.
    public func control(_ action: FirewallAction) -> Result<String, PluginError> {
        guard
            case .some(let instance) = state.withLock({ state -> UnsafeMutableRawPointer?? in
                switch state {
                case .created(let instance), .started(let instance): return .some(instance)
                case .stopped, .destroyed: return .none
                }
            })
        else { return .failure(PluginError("plugin `\(library.name)` is stopped")) }
        guard let control = ops.control else {
            return .failure(PluginError("plugin `\(library.name)` has no firewall control"))
        }
        final class Reply: @unchecked Sendable {
            // @unchecked: written by the plugin's reply call, read after control returns, one thread.
            var text = ""
        }
        let reply = Reply()
        var error = gh_error()
        let status = control(
            instance, action.rawValue,
            { context, text in
                guard let context else { return }
                Unmanaged<Reply>.fromOpaque(context).takeUnretainedValue().text = String(ghBytes: text)
            }, Unmanaged.passUnretained(reply).toOpaque(), &error)
        withExtendedLifetime(reply) {}
        guard status == GH_OK else {
            return .failure(PluginError.from(error, fallback: "firewall \(action) failed (status \(status))"))
        }
        return .success(reply.text)
    }

    // MARK: Downstream operations

    /// Hands an allowed command to the site side; the outcome comes back through the delegate's
    /// `deliverResult` with the same token. `.invalid` when the plugin cannot deliver commands.
    public func deliver(_ command: PluginCommand, token: UInt64) -> PluginStatus {
        guard case .some(let instance) = liveInstance else { return .stopped }
        guard let deliver = ops.deliver else { return .invalid }
        return PluginStatus(rawValue: command.withCCommand { deliver(instance, $0, token) })
    }

    fileprivate func commandResult(token: UInt64, status: Int32, body: [UInt8]) {
        guard case .some(let instance) = liveInstance, let result = ops.command_result else { return }
        body.withUnsafeBufferPointer { buffer in
            result(instance, token, status, gh_bytes(data: buffer.baseAddress, len: UInt64(buffer.count)))
        }
    }
}

/// A raw pointer the owner promises to use safely across threads. Used only for memory that is
/// written once before it is shared and freed after every user is gone.
struct SendablePointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

final class WeakInstance: Sendable {
    // A `weak let` is immutable and therefore Sendable.
    weak let instance: PluginInstance?
    init(_ instance: PluginInstance) { self.instance = instance }
}

/// The host_ctx handed to a plugin: where its callbacks land.
final class HostContext: Sendable {
    let delegate: any PluginHostDelegate
    let label: String
    let owner = Mutex<WeakInstance?>(nil)

    init(delegate: any PluginHostDelegate, label: String) {
        self.delegate = delegate
        self.label = label
    }

    static func from(_ raw: UnsafeMutableRawPointer?) -> HostContext? {
        raw.map { Unmanaged<HostContext>.fromOpaque($0).takeUnretainedValue() }
    }

    /// The C function table. Each entry is a non-capturing closure that finds its context
    /// through host_ctx, so one table shape serves every plugin instance.
    static func makeAPI() -> gh_host_api {
        var api = gh_host_api()
        api.abi_version = GH_PLUGIN_ABI_VERSION
        api.struct_size = UInt32(MemoryLayout<gh_host_api>.size)
        api.log = { raw, level, message, length in
            guard let context = HostContext.from(raw), let message else { return }
            let text = String(
                decoding: UnsafeRawBufferPointer(start: message, count: Int(length)), as: UTF8.self)
            context.delegate.log(
                level: PluginLogLevel(rawValue: level) ?? .info, message: text, plugin: context.label)
        }
        api.ingest = { raw, messages, count in
            guard let context = HostContext.from(raw) else { return GH_ERR_INVALID }
            guard let messages, count > 0 else { return count == 0 ? GH_OK : GH_ERR_INVALID }
            let batch = UnsafeBufferPointer(start: messages, count: Int(count)).map(PluginMessage.init)
            return context.delegate.ingest(batch, from: context.label).rawValue
        }
        api.delivered = { raw, token, status in
            HostContext.from(raw)?.delegate.delivered(token: token, status: PluginStatus(rawValue: status))
        }
        api.link_state = { raw, device, state, reason in
            guard let context = HostContext.from(raw) else { return }
            context.delegate.linkStateChanged(
                deviceID: String(ghBytes: device), state: LinkState(rawValue: state) ?? .down,
                reason: String(ghBytes: reason), plugin: context.label)
        }
        api.sign_sas = { raw, device, resource, expiry, out, capacity, outLength in
            guard let context = HostContext.from(raw), let out else { return GH_ERR_INVALID }
            switch context.delegate.signSAS(
                deviceID: String(ghBytes: device), resource: String(ghBytes: resource), expiry: expiry)
            {
            case .failure(let error):
                return error.status.rawValue
            case .success(let token):
                let utf8 = Array(token.utf8)
                guard UInt64(utf8.count) < capacity else { return GH_ERR_NO_SPACE }
                utf8.withUnsafeBufferPointer { source in
                    UnsafeMutableRawPointer(out).copyMemory(from: source.baseAddress!, byteCount: source.count)
                }
                out[utf8.count] = 0
                outLength?.pointee = UInt64(utf8.count)
                return GH_OK
            }
        }
        api.command = { raw, command, token in
            guard let context = HostContext.from(raw), let command else { return }
            let owner = context.owner.withLock { $0 }
            guard let parsed = PluginCommand(command.pointee) else {
                owner?.instance?.commandResult(
                    token: token, status: 400, body: Array(#"{"error":"unknown command kind"}"#.utf8))
                return
            }
            context.delegate.command(parsed) { status, body in
                owner?.instance?.commandResult(token: token, status: status, body: body)
            }
        }
        api.deliver_result = { raw, token, status, body in
            guard let context = HostContext.from(raw) else { return }
            context.delegate.deliverResult(
                token: token, status: status, body: [UInt8](ghBytes: body), plugin: context.label)
        }
        api.dead_letter = { raw, letter in
            guard let context = HostContext.from(raw), let letter else { return GH_ERR_INVALID }
            // A writer's struct may be smaller than ours only if it predates a field we read.
            guard letter.pointee.struct_size >= MemoryLayout<gh_dead_letter>.offset(of: \.reserved)! else {
                return GH_ERR_INVALID
            }
            return context.delegate.deadLetter(PluginDeadLetter(letter.pointee), plugin: context.label).rawValue
        }
        return api
    }
}
