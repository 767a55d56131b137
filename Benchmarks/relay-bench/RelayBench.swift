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
/// CLOCK_MONOTONIC time it was sent; the receiver subtracts.
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
        let outstandingRef = Unmanaged.passRetained(outstanding)
        var publishers: [OpaquePointer] = []
        for index in 0..<connections {
            guard
                let client = mosquitto_new(
                    "relay-bench-pub-\(getpid())-\(options.label)-\(index)", true, outstandingRef.toOpaque())
            else {
                return #"{"error":"mosquitto_new failed"}"#
            }
            _ = mosquitto_int_option(client, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
            _ = mosquitto_max_inflight_messages_set(client, 100)
            mosquitto_publish_callback_set(client) { _, user, _ in
                guard let user else { return }
                Unmanaged<Outstanding>.fromOpaque(user).takeUnretainedValue().count.subtract(1, ordering: .relaxed)
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
                while monotonicNS() < due {}  // pace precisely; one core spins while the load runs
            } else {
                while outstanding.count.load(ordering: .relaxed) > 2000 { usleep(50) }
            }
            payload.withUnsafeMutableBytes { bytes in
                bytes.storeBytes(of: UInt64(seq), toByteOffset: 0, as: UInt64.self)
                bytes.storeBytes(of: monotonicNS(), toByteOffset: 8, as: UInt64.self)
            }
            outstanding.count.add(1, ordering: .relaxed)
            let rc = payload.withUnsafeBytes { bytes in
                mosquitto_publish(
                    publishers[seq % connections], nil, topics[seq % options.devices], Int32(bytes.count),
                    bytes.baseAddress, 1, false)
            }
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                return #"{"error":"publish failed: \#(String(cString: mosquitto_strerror(rc)))"}"#
            }
        }
        let published = monotonicNS()
        let deadline = Date().addingTimeInterval(options.timeout)
        while arrivals.state.withLock({ $0.unique }) < options.messages, Date() < deadline {
            usleep(2000)
        }
        for client in publishers {
            _ = mosquitto_disconnect(client)
            _ = mosquitto_loop_stop(client, false)
        }
        _ = mosquitto_disconnect(subscriber)
        _ = mosquitto_loop_stop(subscriber, false)

        return arrivals.state.withLock { state in
            let elapsed = Double(max(state.lastArrivalNS, published) - start) / 1e9
            let sorted = state.latencyNS.sorted()
            func percentile(_ p: Double) -> Double {
                guard !sorted.isEmpty else { return -1 }
                return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
            }
            let rate = Double(state.unique) / elapsed
            return String(
                format:
                    #"{"label":"%@","sent":%d,"received":%d,"duplicates":%d,"seconds":%.3f,"msgs_per_s":%.0f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}"#,
                options.label, options.messages, state.unique, state.duplicates, elapsed, rate, percentile(0.50),
                percentile(0.99),
                percentile(1.0))
        }
    }
}
