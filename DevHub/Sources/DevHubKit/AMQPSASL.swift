/// The first bytes of an AMQP connection, before proton takes over (docs/protocols.md §3.1,
/// §3.4): the protocol header, and the SASL exchange IoT Hub's clients use.
///
/// - `AMQP 0 1 0 0` (no SASL layer, as the C# SDK opens): the stream goes to proton as it is.
/// - `AMQP 3 1 0 0`: DevHub answers with the same header and `sasl-mechanisms` offering
///   `MSSBCBS` (Azure's C SDK requires it; proton's SASL cannot offer it) and `ANONYMOUS`
///   (generic clients such as proton's); the client's `sasl-init` picks one, DevHub answers
///   `sasl-outcome` ok, and the stream from the client's next `AMQP 0 1 0 0` goes to proton.
///   Either mechanism authenticates nobody: each device proves itself with a CBS put-token.
///
/// A pure state machine, no I/O: feed it bytes, act on what it returns.
///
/// States and transitions:
/// - `protocolHeader` → (AMQP header) `amqp`; (SASL header) `saslInit`; else `failed`.
/// - `saslInit` → (sasl-init with an offered mechanism) `amqpHeader`; else `failed`.
/// - `amqpHeader` → (AMQP header) `amqp`; else `failed`.
struct AMQPSASLNegotiator {
    enum State: Equatable {
        case protocolHeader, saslInit, amqpHeader, amqp, failed
    }

    /// What the connection does next.
    enum Step: Equatable {
        /// Send these bytes (possibly none) and wait for more input.
        case reply([UInt8])
        /// Send these bytes, then hand `remaining` (starting with the AMQP header) and everything
        /// after it to proton.
        case startAMQP(reply: [UInt8], remaining: [UInt8])
        /// Send these bytes and close; `reason` is for the log.
        case fail(reply: [UInt8], reason: String)
    }

    static let amqpHeader: [UInt8] = Array("AMQP".utf8) + [0, 1, 0, 0]
    static let saslHeader: [UInt8] = Array("AMQP".utf8) + [3, 1, 0, 0]
    static let offeredMechanisms = ["MSSBCBS", "ANONYMOUS"]
    /// SASL frames are small (AMQP's minimum max-frame-size is 512); larger ones are refused.
    static let maxSASLFrameSize = 8192

    private(set) var state = State.protocolHeader
    /// The mechanism the client chose; nil when it opened without SASL.
    private(set) var mechanism: String?
    private var buffer: [UInt8] = []

    mutating func feed(_ bytes: [UInt8]) -> Step {
        buffer += bytes
        var reply: [UInt8] = []
        while true {
            switch state {
            case .protocolHeader:
                guard buffer.count >= 8 else { return .reply(reply) }
                let header = Array(buffer[..<8])
                if header == Self.amqpHeader {
                    state = .amqp
                    return .startAMQP(reply: reply, remaining: take(all: ()))
                } else if header == Self.saslHeader {
                    buffer.removeFirst(8)
                    reply += Self.saslHeader + Self.mechanismsFrame(Self.offeredMechanisms)
                    state = .saslInit
                } else {
                    state = .failed
                    return .fail(reply: Self.saslHeader, reason: "not an AMQP 1.0 protocol header")
                }
            case .saslInit:
                guard buffer.count >= 8 else { return .reply(reply) }
                let size = Int(buffer[0]) << 24 | Int(buffer[1]) << 16 | Int(buffer[2]) << 8 | Int(buffer[3])
                guard size >= 8, size <= Self.maxSASLFrameSize, buffer[4] >= 2, buffer[5] == 1,
                    Int(buffer[4]) * 4 <= size
                else {
                    state = .failed
                    return .fail(reply: reply, reason: "malformed SASL frame header")
                }
                guard buffer.count >= size else { return .reply(reply) }
                let body = Array(buffer[(Int(buffer[4]) * 4)..<size])
                buffer.removeFirst(size)
                if body.isEmpty { continue }  // an empty frame (heartbeat)
                guard let chosen = Self.saslInitMechanism(body) else {
                    state = .failed
                    return .fail(reply: reply + Self.outcomeFrame(code: 2), reason: "expected sasl-init")
                }
                guard Self.offeredMechanisms.contains(chosen) else {
                    state = .failed
                    return .fail(
                        reply: reply + Self.outcomeFrame(code: 1),
                        reason: "SASL mechanism \"\(chosen.prefix(40))\" is not offered")
                }
                mechanism = chosen
                reply += Self.outcomeFrame(code: 0)
                state = .amqpHeader
            case .amqpHeader:
                guard buffer.count >= 8 else { return .reply(reply) }
                guard Array(buffer[..<8]) == Self.amqpHeader else {
                    state = .failed
                    return .fail(reply: reply, reason: "expected the AMQP header after SASL")
                }
                state = .amqp
                return .startAMQP(reply: reply, remaining: take(all: ()))
            case .amqp, .failed:
                return .reply(reply)
            }
        }
    }

    private mutating func take(all: Void) -> [UInt8] {
        defer { buffer = [] }
        return buffer
    }

    // MARK: Frames

    /// A SASL frame: size, data offset 2, type 1 (SASL), channel 0, then `body`.
    static func frame(_ body: [UInt8]) -> [UInt8] {
        let size = UInt32(8 + body.count)
        return [UInt8(size >> 24), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff), UInt8(size & 0xff), 2, 1, 0, 0]
            + body
    }

    /// `sasl-mechanisms` (descriptor 0x40) with an array of symbols.
    static func mechanismsFrame(_ mechanisms: [String]) -> [UInt8] {
        var elements: [UInt8] = []
        for mechanism in mechanisms {
            elements.append(UInt8(mechanism.utf8.count))
            elements += mechanism.utf8
        }
        // array8: size (count byte + constructor + elements), count, constructor sym8.
        let array: [UInt8] = [0xe0, UInt8(2 + elements.count), UInt8(mechanisms.count), 0xa3] + elements
        let list: [UInt8] = [0xc0, UInt8(1 + array.count), 1] + array
        return frame([0x00, 0x53, 0x40] + list)
    }

    /// `sasl-outcome` (descriptor 0x44) with `code` (0 ok, 1 auth, 2 sys).
    static func outcomeFrame(code: UInt8) -> [UInt8] {
        frame([0x00, 0x53, 0x44, 0xc0, 0x03, 0x01, 0x50, code])
    }

    /// The mechanism of a `sasl-init` body, or nil if the body is not one.
    static func saslInitMechanism(_ body: [UInt8]) -> String? {
        var reader = Reader(body)
        guard reader.byte() == 0x00 else { return nil }
        switch reader.byte() {
        case 0x53: guard reader.byte() == 0x41 else { return nil }
        case 0x80:
            guard let code = reader.bytes(8), code == [0, 0, 0, 0, 0, 0, 0, 0x41] else { return nil }
        case 0xa3:
            guard let length = reader.byte(), let name = reader.bytes(Int(length)),
                name.elementsEqual("amqp:sasl-init:list".utf8)
            else { return nil }
        default: return nil
        }
        // list8 or list32, at least one field.
        switch reader.byte() {
        case 0xc0:
            guard reader.bytes(1) != nil, let count = reader.byte(), count >= 1 else { return nil }
        case 0xd0:
            guard reader.bytes(4) != nil, let count = reader.bytes(4), count.contains(where: { $0 != 0 }) else {
                return nil
            }
        default: return nil
        }
        let length: Int
        switch reader.byte() {
        case 0xa3: guard let byte = reader.byte() else { return nil }; length = Int(byte)
        case 0xb3:
            guard let bytes = reader.bytes(4) else { return nil }
            length = bytes.reduce(0) { $0 << 8 | Int($1) }
        default: return nil
        }
        guard length <= 64, let name = reader.bytes(length) else { return nil }
        return String(decoding: name, as: UTF8.self)
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0
        init(_ bytes: [UInt8]) { self.bytes = bytes }
        mutating func byte() -> UInt8? { bytes(1)?.first }
        mutating func bytes(_ count: Int) -> [UInt8]? {
            guard count >= 0, offset + count <= bytes.count else { return nil }
            defer { offset += count }
            return Array(bytes[offset..<offset + count])
        }
    }
}
