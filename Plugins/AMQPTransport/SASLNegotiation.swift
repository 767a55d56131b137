/// The client side of AMQP 1.0's SASL layer (AMQP 1.0 §5.3) as Azure's C SDK speaks it to IoT
/// Hub (docs/protocols.md §3.4): the SASL protocol header, the server's header and
/// `sasl-mechanisms`, our `sasl-init` with mechanism `MSSBCBS` and no initial response, the
/// server's `sasl-outcome` (code 0 = ok). Authentication itself happens later, per device, on
/// the `$cbs` node; the mechanism only says so.
///
/// qpid-proton's SASL client knows only ANONYMOUS, PLAIN, EXTERNAL and XOAUTH2, so the plugin
/// speaks these few frames itself, over TLS, and hands the stream to a proton transport without
/// a SASL layer once the outcome is in. Byte-level and pure: no I/O, no proton.
struct SASLNegotiation: Sendable {
    /// How a connection authenticates at the SASL layer.
    enum Mode: String, Sendable, CaseIterable {
        /// `MSSBCBS`, as Azure's C SDK (the default).
        case mssbcbs
        /// `ANONYMOUS`, for peers that offer no `MSSBCBS`.
        case anonymous
        /// No SASL layer: the AMQP header straight after TLS, as the C# SDK does.
        case none

        var mechanism: String? {
            switch self {
            case .mssbcbs: "MSSBCBS"
            case .anonymous: "ANONYMOUS"
            case .none: nil
            }
        }
    }

    /// What the caller does next.
    enum Step: Sendable, Equatable {
        /// Write these bytes to the peer.
        case send([UInt8])
        /// SASL is done: hand these bytes (already received, past the outcome) and everything
        /// after them to the AMQP transport.
        case done(leftover: [UInt8])
        /// The peer refused or spoke something else; close the connection.
        case failed(String)
    }

    static let saslHeader: [UInt8] = Array("AMQP".utf8) + [3, 1, 0, 0]
    static let amqpHeader: [UInt8] = Array("AMQP".utf8) + [0, 1, 0, 0]

    /// The largest SASL frame accepted from the peer (AMQP's minimum max-frame-size is 512).
    static let maxFrameBytes = 65_536

    private enum State: Sendable { case header, mechanisms, outcome, finished }

    let mode: Mode
    private var state = State.header
    private var buffer: [UInt8] = []

    init(mode: Mode) {
        precondition(mode != .none, "no SASL layer: nothing to negotiate")
        self.mode = mode
    }

    /// What the client writes first: its SASL protocol header.
    var opening: [UInt8] { Self.saslHeader }

    /// Takes bytes from the peer; returns the steps they lead to, in order (none while a frame is
    /// incomplete).
    mutating func receive(_ bytes: some Collection<UInt8>) -> [Step] {
        buffer.append(contentsOf: bytes)
        var steps: [Step] = []
        while state != .finished {
            if state == .header {
                guard buffer.count >= 8 else { break }
                let header = Array(buffer.prefix(8))
                buffer.removeFirst(8)
                guard header == Self.saslHeader else {
                    state = .finished
                    let what = header == Self.amqpHeader ? "an AMQP header (no SASL layer)" : "no AMQP SASL header"
                    steps.append(.failed("the peer answered with \(what); set `sasl` to match the hub"))
                    break
                }
                state = .mechanisms
                continue
            }
            guard buffer.count >= 8 else { break }
            let size = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
            let dataOffset = Int(buffer[4]) * 4
            guard size >= 8, size <= Self.maxFrameBytes, dataOffset >= 8, dataOffset <= size, buffer[5] == 1 else {
                state = .finished
                steps.append(.failed("a malformed SASL frame (size \(size), type \(buffer[5]))"))
                break
            }
            guard buffer.count >= size else { break }
            let body = Array(buffer[dataOffset..<size])
            buffer.removeFirst(size)
            if size == 8 { continue }  // an empty frame (heartbeat)
            steps.append(contentsOf: handle(body))
        }
        return steps
    }

    private mutating func handle(_ body: [UInt8]) -> [Step] {
        var reader = AMQPBytesReader(body)
        guard let (code, fields) = reader.describedList() else {
            state = .finished
            return [.failed("a SASL frame that does not decode")]
        }
        switch (state, code) {
        case (.mechanisms, 0x40):
            let offered = fields.first.flatMap { $0 } ?? []
            guard let mechanism = mode.mechanism, offered.contains(mechanism) else {
                state = .finished
                return [
                    .failed(
                        "the peer offers SASL \(offered.joined(separator: ", ")), not \(mode.mechanism ?? "")")
                ]
            }
            state = .outcome
            return [.send(Self.initFrame(mechanism: mechanism))]
        case (.outcome, 0x44):
            state = .finished
            let outcome = reader.outcomeCode ?? 255
            guard outcome == 0 else { return [.failed("SASL outcome \(outcome) (authentication refused)")] }
            let leftover = buffer
            buffer = []
            return [.done(leftover: leftover)]
        case (.outcome, 0x42):
            state = .finished
            return [.failed("the peer sent a SASL challenge, which \(mode.mechanism ?? "") does not answer")]
        default:
            state = .finished
            return [.failed("an unexpected SASL frame (descriptor 0x\(String(code, radix: 16)))")]
        }
    }

    /// `sasl-init` (descriptor 0x41) with the mechanism only: no initial response, no hostname.
    static func initFrame(mechanism: String) -> [UInt8] {
        let name = Array(mechanism.utf8)
        precondition(name.count < 200, "a SASL mechanism name is short")
        let list: [UInt8] = [0xA3, UInt8(name.count)] + name
        let body: [UInt8] = [0x00, 0x53, 0x41, 0xC0, UInt8(list.count + 1), 1] + list
        let size = UInt32(8 + body.count)
        return [UInt8(size >> 24), UInt8(size >> 16 & 0xFF), UInt8(size >> 8 & 0xFF), UInt8(size & 0xFF), 2, 1, 0, 0]
            + body
    }
}

/// Just enough of AMQP's type system to read the SASL frames a client receives: a described
/// list whose fields are symbols (or arrays of them) or a ubyte.
struct AMQPBytesReader {
    private let bytes: [UInt8]
    private var position = 0
    /// The first field of the last list, when it was a ubyte (the outcome's code).
    private(set) var outcomeCode: UInt8?

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    private mutating func byte() -> UInt8? {
        guard position < bytes.count else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    private mutating func integer(_ width: Int) -> Int? {
        guard position + width <= bytes.count else { return nil }
        var value = 0
        for _ in 0..<width { value = value << 8 | Int(bytes[position]); position += 1 }
        return value
    }

    private mutating func take(_ count: Int) -> [UInt8]? {
        guard count >= 0, position + count <= bytes.count else { return nil }
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }

    /// Reads `0x00 descriptor list`: the descriptor's code (numeric, or the frame's name for a
    /// symbolic one) and each field as the symbols it holds (nil for other types).
    mutating func describedList() -> (UInt64, [[String]?])? {
        guard byte() == 0x00, let descriptorType = byte() else { return nil }
        let code: UInt64
        switch descriptorType {
        case 0x53: guard let value = byte() else { return nil }; code = UInt64(value)
        case 0x80: guard let value = integer(8) else { return nil }; code = UInt64(value)
        case 0xA3, 0xB3:
            guard let length = integer(descriptorType == 0xA3 ? 1 : 4), let name = take(length) else { return nil }
            let known: [String: UInt64] = [
                "amqp:sasl-mechanisms:list": 0x40, "amqp:sasl-challenge:list": 0x42, "amqp:sasl-outcome:list": 0x44,
            ]
            guard let value = known[String(decoding: name, as: UTF8.self)] else { return nil }
            code = value
        default: return nil
        }
        guard let listType = byte() else { return nil }
        let count: Int
        switch listType {
        case 0x45: count = 0
        case 0xC0: guard integer(1) != nil, let n = integer(1) else { return nil }; count = n
        case 0xD0: guard integer(4) != nil, let n = integer(4) else { return nil }; count = n
        default: return nil
        }
        var fields: [[String]?] = []
        for index in 0..<count {
            guard let field = symbols(first: index == 0) else { return nil }
            fields.append(field)
        }
        return (code, fields)
    }

    /// One field: a symbol, an array of symbols, null, or a ubyte (kept as `outcomeCode` when it
    /// is the first field). Other types are skipped only where their length is known.
    private mutating func symbols(first: Bool) -> [String]?? {
        guard let type = byte() else { return nil }
        switch type {
        case 0x40: return .some(nil)
        case 0x50:
            guard let value = byte() else { return nil }
            if first { outcomeCode = value }
            return .some(nil)
        case 0xA3, 0xB3:
            guard let length = integer(type == 0xA3 ? 1 : 4), let name = take(length) else { return nil }
            return [String(decoding: name, as: UTF8.self)]
        case 0xE0, 0xF0:
            let width = type == 0xE0 ? 1 : 4
            guard integer(width) != nil, let count = integer(width), let element = byte() else { return nil }
            guard element == 0xA3 || element == 0xB3 else { return nil }
            var names: [String] = []
            for _ in 0..<count {
                guard let length = integer(element == 0xA3 ? 1 : 4), let name = take(length) else { return nil }
                names.append(String(decoding: name, as: UTF8.self))
            }
            return names
        case 0xA0, 0xA1:  // vbin8, str8
            guard let length = integer(1), take(length) != nil else { return nil }
            return .some(nil)
        case 0xB0, 0xB1:  // vbin32, str32
            guard let length = integer(4), take(length) != nil else { return nil }
            return .some(nil)
        default: return nil
        }
    }
}
