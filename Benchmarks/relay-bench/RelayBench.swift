import CMosquitto
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// relay-bench — the load side of Benchmarks/relay-bench.sh.
///
/// Publishes QoS 1 telemetry as simulated leaf devices to one broker and receives it, by
/// subscription, at another (or the same), then prints throughput and end-to-end latency as
/// one JSON line. What sits between the two brokers (gatehoused, mosquitto's bridge, nothing)
/// is the script's business; this tool measures whatever path it is given.
///
///     relay-bench --pub-port P --sub-port S [--sub-ca CA] --devices N --messages M [--rate R]
///
/// `--rate 0` publishes as fast as QoS 1 flow control allows (throughput); a rate paces the
/// publishers (latency at that load). Every payload carries its sequence number and the
/// CLOCK_MONOTONIC time it was sent; the receiver subtracts. The publishers also record which
/// messages the broker acknowledged (PUBACK): `acked` counts them and `acked_lost` those of them
/// that never arrived, which packaging/test-site-broker-outage.sh requires to be 0.
@main
struct RelayBench {
    static func main() {
        let options = Options(CommandLine.arguments)
        _ = mosquitto_lib_init()
        let result = Run(options).execute()
        print(result)
    }
}

struct Options {
    var pubPort = 1883
    var subPort = 1883
    var subCA: String?
    var devices = 10
    var messages = 20_000
    var rate = 0
    var payloadSize = 128
    var timeout = 120.0
    var label = "path"

    init(_ arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let flag = iterator.next() {
            let value = iterator.next() ?? ""
            switch flag {
            case "--pub-port": pubPort = Int(value)!
            case "--sub-port": subPort = Int(value)!
            case "--sub-ca": subCA = value
            case "--devices": devices = Int(value)!
            case "--messages": messages = Int(value)!
            case "--rate": rate = Int(value)!
            case "--payload": payloadSize = max(Int(value)!, 16)
            case "--timeout": timeout = Double(value)!
            case "--label": label = value
            default:
                FileHandle.standardError.write(Data("relay-bench: unknown option \(flag)\n".utf8))
                exit(64)
            }
        }
    }
}

func monotonicNS() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// What the subscriber records, shared with libmosquitto's callback thread.
final class Arrivals: Sendable {
    struct State {
        var seen: [Bool]
        var latencyNS: [UInt64]
        var unique = 0
        var duplicates = 0
        var lastArrivalNS: UInt64 = 0
    }
    let state: Mutex<State>

    init(count: Int) {
        var latencies: [UInt64] = []
        latencies.reserveCapacity(count)
        state = Mutex(State(seen: Array(repeating: false, count: count), latencyNS: latencies))
    }

    func record(_ payload: UnsafeRawBufferPointer) {
        let now = monotonicNS()
        guard payload.count >= 16 else { return }
        let seq = Int(payload.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let sent = payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        state.withLock { state in
            guard seq < state.seen.count else { return }
            if state.seen[seq] {
                state.duplicates += 1
                return
            }
            state.seen[seq] = true
            state.unique += 1
            state.latencyNS.append(now &- sent)
            state.lastArrivalNS = now
        }
    }
}

/// Publisher flow control: how many sends await their PUBACK.
final class Outstanding: Sendable {
    let count = Atomic<Int>(0)
}

/// Which messages the broker acknowledged. A PUBACK names the connection's message id; the id is
/// known only once `mosquitto_publish` returns, and the PUBACK may be handled on libmosquitto's
/// thread before that, so whichever of the two comes second resolves it. Never held while
/// calling into libmosquitto.
final class Acknowledgements: Sendable {
    struct State {
        var acked: [Bool]
        var count = 0
        /// (connection, message id) → sequence number, sent and not yet acknowledged.
        var sent: [Int: Int] = [:]
        /// (connection, message id) acknowledged before `sent` knew it.
        var early: Set<Int> = []
    }
    let state: Mutex<State>

    init(count: Int) { state = Mutex(State(acked: Array(repeating: false, count: count))) }

    private static func key(_ connection: Int, _ mid: Int32) -> Int { connection << 16 | Int(mid) }

    func published(seq: Int, connection: Int, mid: Int32) {
        let key = Self.key(connection, mid)
        state.withLock { state in
            if state.early.remove(key) != nil {
                state.acked[seq] = true
                state.count += 1
            } else {
                state.sent[key] = seq
            }
        }
    }

    func acknowledged(connection: Int, mid: Int32) {
        let key = Self.key(connection, mid)
        state.withLock { state in
            if let seq = state.sent.removeValue(forKey: key) {
                state.acked[seq] = true
                state.count += 1
            } else {
                state.early.insert(key)
            }
        }
    }
}

/// One publisher connection's callback context.
final class Publisher: Sendable {
    let index: Int
    let outstanding: Outstanding
    let acknowledgements: Acknowledgements

    init(index: Int, outstanding: Outstanding, acknowledgements: Acknowledgements) {
        self.index = index
        self.outstanding = outstanding
        self.acknowledgements = acknowledgements
    }
}

struct Run {
    let options: Options

    init(_ options: Options) { self.options = options }

    func execute() -> String {
        let arrivals = Arrivals(count: options.messages)
        let arrivalsRef = Unmanaged.passRetained(arrivals)
        // The subscriber at the far end.
        guard
            let subscriber = mosquitto_new("relay-bench-sub-\(getpid())-\(options.label)", true, arrivalsRef.toOpaque())
        else {
            return #"{"error":"mosquitto_new failed"}"#
        }
        _ = mosquitto_int_option(subscriber, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
        if let ca = options.subCA { _ = mosquitto_tls_set(subscriber, ca, nil, nil, nil, nil) }
        mosquitto_message_callback_set(subscriber) { _, user, message in
            guard let user, let message, message.pointee.payloadlen > 0 else { return }
            Unmanaged<Arrivals>.fromOpaque(user).takeUnretainedValue()
                .record(UnsafeRawBufferPointer(start: message.pointee.payload, count: Int(message.pointee.payloadlen)))
        }
        guard mosquitto_connect(subscriber, "127.0.0.1", Int32(options.subPort), 60) == MOSQ_ERR_SUCCESS.rawValue else {
            return #"{"error":"subscriber cannot connect to port \#(options.subPort)"}"#
        }
        _ = mosquitto_subscribe(subscriber, nil, "devices/#", 1)
        _ = mosquitto_loop_start(subscriber)
        Thread.sleep(forTimeInterval: 0.5)

        // Publishers: up to 8 connections, the devices spread over them.
        let connections = min(options.devices, 8)
        let outstanding = Outstanding()
        let acknowledgements = Acknowledgements(count: options.messages)
        var publishers: [OpaquePointer] = []
        for index in 0..<connections {
            let context = Unmanaged.passRetained(
                Publisher(index: index, outstanding: outstanding, acknowledgements: acknowledgements))
            guard
                let client = mosquitto_new(
                    "relay-bench-pub-\(getpid())-\(options.label)-\(index)", true, context.toOpaque())
            else {
                return #"{"error":"mosquitto_new failed"}"#
            }
            _ = mosquitto_int_option(client, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
            _ = mosquitto_max_inflight_messages_set(client, 100)
            mosquitto_publish_callback_set(client) { _, user, mid in
                guard let user else { return }
                let publisher = Unmanaged<Publisher>.fromOpaque(user).takeUnretainedValue()
                publisher.outstanding.count.subtract(1, ordering: .relaxed)
                publisher.acknowledgements.acknowledged(connection: publisher.index, mid: mid)
            }
            guard mosquitto_connect(client, "127.0.0.1", Int32(options.pubPort), 60) == MOSQ_ERR_SUCCESS.rawValue else {
                return #"{"error":"publisher cannot connect to port \#(options.pubPort)"}"#
            }
            _ = mosquitto_loop_start(client)
            publishers.append(client)
        }
        let topics = (0..<options.devices).map { "devices/bench-\($0)/messages/events/" }

        var payload = [UInt8](repeating: UInt8(ascii: "x"), count: options.payloadSize)
        let start = monotonicNS()
        let interval = options.rate > 0 ? 1_000_000_000 / UInt64(options.rate) : 0
        for seq in 0..<options.messages {
            if interval > 0 {
                let due = start + UInt64(seq) * interval
                // Pace precisely: sleep while more than 300 µs remain (slow rates leave the cores
                // to the processes under test), then spin.
                var now = monotonicNS()
                while now < due {
                    if due - now > 300_000 { usleep(UInt32((due - now - 200_000) / 1000)) }
                    now = monotonicNS()
                }
            } else {
                while outstanding.count.load(ordering: .relaxed) > 2000 { usleep(50) }
            }
            payload.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: UInt64(seq), toByteOffset: 0, as: UInt64.self)
                bytes.storeBytes(of: monotonicNS(), toByteOffset: 8, as: UInt64.self)
            }
            outstanding.count.add(1, ordering: .relaxed)
            var mid: Int32 = 0
            let rc = payload.withUnsafeBytes { bytes in
                mosquitto_publish(
                    publishers[seq % connections], &mid, topics[seq % options.devices], Int32(bytes.count),
                    bytes.baseAddress, 1, false)
            }
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                return #"{"error":"publish failed: \#(String(cString: mosquitto_strerror(rc)))"}"#
            }
            acknowledgements.published(seq: seq, connection: seq % connections, mid: mid)
        }
        let published = monotonicNS()
        let deadline = Date().addingTimeInterval(options.timeout)
        while arrivals.state.withLock({ $0.unique }) < options.messages, Date() < deadline {
            usleep(2000)
        }
        // Every PUBACK is in once nothing awaits one (or by the deadline).
        while outstanding.count.load(ordering: .relaxed) > 0, Date() < deadline { usleep(2000) }
        for client in publishers {
            _ = mosquitto_disconnect(client)
            _ = mosquitto_loop_stop(client, false)
        }
        _ = mosquitto_disconnect(subscriber)
        _ = mosquitto_loop_stop(subscriber, false)

        let (acked, ackedFlags) = acknowledgements.state.withLock { ($0.count, $0.acked) }
        return arrivals.state.withLock { state in
            let ackedLost = zip(ackedFlags, state.seen).reduce(0) { $0 + ($1.0 && !$1.1 ? 1 : 0) }
            let elapsed = Double(max(state.lastArrivalNS, published) - start) / 1e9
            let sorted = state.latencyNS.sorted()
            func percentile(_ p: Double) -> Double {
                guard !sorted.isEmpty else { return -1 }
                return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
            }
            let rate = Double(state.unique) / elapsed
            return String(
                format:
                    #"{"label":"%@","sent":%d,"acked":%d,"received":%d,"acked_lost":%d,"duplicates":%d,"seconds":%.3f,"msgs_per_s":%.0f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}"#,
                options.label, options.messages, acked, state.unique, ackedLost, state.duplicates, elapsed, rate,
                percentile(0.50),
                percentile(0.99),
                percentile(1.0))
        }
    }
}
