import CQpidProton
import GatehousePluginKit

/// One device identity on a hub connection: its CBS authorisation, its four links and the
/// telemetry `send` accepted for it. Confined to the I/O thread; it outlives its connection's
/// reconnects (the links do not: they belong to one AMQP connection).
///
/// States and their transitions:
///
///     waiting ──(connection open)──▶ authorizing ──(put-token 2xx)──▶ attaching ──(telemetry attach)──▶ up
///        ▲                              │ (refused, timeout, not signed)     │ (detach, timeout)            │
///        │                              ▼                                    ▼                              │
///        └──(connection lost)──── refused(retry at) ◀───────────────────────┴──(detach, renewal refused)──┘
///
/// A refused device waits out its own jittered backoff; the other devices of its connection go
/// on. Telemetry: `waiting` (accepted by `send`, not yet on the wire) and `outstanding` (sent,
/// no outcome yet), by token in send order. A connection or link that is lost puts the
/// outstanding ones back at the front of `waiting`, in order: the plugin keeps every message
/// until the hub settles it `accepted` or the identity is closed.
final class DeviceSession {
    enum State: Equatable {
        case waiting
        case authorizing(request: UInt64)
        case attaching
        case up
        case refused
    }

    /// A telemetry message, encoded once (re-sent as is after a lost connection).
    struct Pending {
        var token: UInt64
        var bytes: [UInt8]
    }

    let address: HubAddress
    var state = State.waiting

    // The links of the current connection (nil when there is none).
    var telemetry: OpaquePointer?
    var cloudToDevice: OpaquePointer?
    var methodRequests: OpaquePointer?
    var methodResponses: OpaquePointer?

    var waiting: [Pending] = []
    /// Whether the device waits in its connection's queue for room among the messages in flight.
    var throttled = false
    var outstanding: [UInt64: Pending] = [:]
    var sendOrder: [UInt64] = []
    /// How many times in a row the hub rejected each message (see `HubConnection.settled`).
    var rejections: [UInt64: Int] = [:]
    /// When this device last had a message reported refused, and whether the hub accepted any
    /// of its messages since.
    var lastRefusalMS: Int64?
    var acceptedSinceRefusal = false
    /// No telemetry goes out before this (after the hub released or deferred a message).
    var pausedUntilMS: Int64 = 0

    /// When the token in force is renewed; the put-token of a renewal in flight.
    var renewAtMS: Int64 = .max
    var renewal: UInt64?
    /// When the current request (put-token, attach) was sent, for its timeout.
    var requestSentMS: Int64 = 0
    var retryAtMS: Int64 = 0
    var backoff = Backoff(initial: .seconds(1), maximum: .seconds(120))
    /// When the telemetry link came up, and whether it proved itself since (accepted, or up a
    /// while): only then is the backoff reset.
    var upSinceMS: Int64 = 0
    var proven = false
    /// What the host was last told of the link (`AMQPHub.reportUp`/`reportDown`).
    var reported: LinkState?

    init(address: HubAddress) { self.address = address }

    var deviceID: String { address.deviceID }

    var links: [OpaquePointer] { [telemetry, cloudToDevice, methodRequests, methodResponses].compactMap { $0 } }

    /// Every message not yet settled, in order: outstanding first, then waiting.
    var unsettledInOrder: [Pending] { sendOrder.compactMap { outstanding[$0] } + waiting }

    /// Puts every outstanding message back at the front of `waiting`, in send order.
    func requeueOutstanding() {
        let unanswered = sendOrder.compactMap { outstanding[$0] }
        outstanding.removeAll()
        sendOrder.removeAll()
        waiting.insert(contentsOf: unanswered, at: 0)
    }

    /// Forgets a settled message. Once nothing is outstanding the storage goes too (a dictionary
    /// keeps its capacity after removals: a thousand idle devices would each hold room for the
    /// most messages they ever had in flight).
    @discardableResult
    func settle(_ token: UInt64) -> Pending? {
        guard let pending = outstanding.removeValue(forKey: token) else { return nil }
        if let index = sendOrder.firstIndex(of: token) { sendOrder.remove(at: index) }
        if outstanding.isEmpty {
            outstanding = [:]
            sendOrder = []
        }
        return pending
    }

    /// Forgets the links (their connection freed them, or the device closed them).
    func dropLinks() {
        telemetry = nil
        cloudToDevice = nil
        methodRequests = nil
        methodResponses = nil
    }
}
