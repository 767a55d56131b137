import CQpidProton
import FoundationEssentials

/// AMQP 1.0 message encoding through qpid-proton's codec (`pn_message_t`, `pn_data_t`): the one
/// place DevHub turns ``AMQPMessage`` into bytes and back. Decoding never traps: bytes that are
/// not a message give nil.
enum ProtonCodec {
    /// The message-format of a batch, as Azure's SDKs send telemetry (docs/protocols.md §3.4).
    static let batchMessageFormat: UInt32 = 0x8001_3700

    // MARK: Decoding

    /// The message encoded in `bytes`, or nil if they are not one.
    static func decode(_ bytes: [UInt8]) -> AMQPMessage? {
        guard !bytes.isEmpty, let message = pn_message() else { return nil }
        defer { pn_message_free(message) }
        let status = bytes.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                pn_message_decode(message, $0, buffer.count)
            }
        }
        guard status == 0 else { return nil }
        var result = AMQPMessage()
        result.messageID = messageID(pn_message_id(message))
        result.correlationID = messageID(pn_message_correlation_id(message))
        let user = pn_message_get_user_id(message)
        if user.size > 0, let start = user.start {
            result.userID = Array(UnsafeRawBufferPointer(start: start, count: user.size))
        }
        result.to = pn_message_get_address(message).map { String(cString: $0) }
        result.subject = pn_message_get_subject(message).map { String(cString: $0) }
        result.replyTo = pn_message_get_reply_to(message).map { String(cString: $0) }
        result.contentType = pn_message_get_content_type(message).map { String(cString: $0) }
        result.contentEncoding = pn_message_get_content_encoding(message).map { String(cString: $0) }
        let expiry = pn_message_get_expiry_time(message)
        if expiry != 0 { result.absoluteExpiryTime = expiry }
        let creation = pn_message_get_creation_time(message)
        if creation != 0 { result.creationTime = creation }
        result.applicationProperties = map(pn_message_properties(message))
        result.messageAnnotations = map(pn_message_annotations(message))
        if let body = pn_message_body(message) {
            pn_data_rewind(body)
            if pn_data_next(body) {
                let value = self.value(body)
                if pn_message_is_inferred(message), case .binary(let bytes) = value {
                    result.body = .data(bytes)
                } else {
                    result.body = .value(value)
                }
            }
        }
        return result
    }

    /// The inner messages of a batch (message-format 0x80013700: every data section an encoded
    /// message; docs/protocols.md §3.4), or nil if `bytes` is not one. Proton does not expose a
    /// transfer's message-format, so a batch is known by its shape: data sections only (besides
    /// header, annotations and properties), each of which decodes as a message.
    static func batch(_ bytes: [UInt8]) -> [[UInt8]]? {
        guard let data = pn_data(16) else { return nil }
        defer { pn_data_free(data) }
        var parts: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            pn_data_clear(data)
            let consumed = bytes.withUnsafeBufferPointer { buffer in
                (buffer.baseAddress! + offset).withMemoryRebound(to: CChar.self, capacity: buffer.count - offset) {
                    pn_data_decode(data, $0, buffer.count - offset)
                }
            }
            guard consumed > 0 else { return nil }
            offset += consumed
            pn_data_rewind(data)
            guard pn_data_next(data), pn_data_type(data) == PN_DESCRIBED else { return nil }
            pn_data_enter(data)
            guard pn_data_next(data), pn_data_type(data) == PN_ULONG else { return nil }
            let code = pn_data_get_ulong(data)
            guard pn_data_next(data) else { return nil }
            switch code {
            case 0x75:  // data
                guard pn_data_type(data) == PN_BINARY else { return nil }
                parts.append(bytesOf(pn_data_get_binary(data)))
            case 0x70...0x74, 0x78:  // header, annotations, properties, application-properties, footer
                continue
            default:  // amqp-sequence, amqp-value: an ordinary message
                return nil
            }
        }
        guard !parts.isEmpty, parts.allSatisfy(isEncodedMessage) else { return nil }
        return parts
    }

    /// Whether `bytes` start with a message section (`0x00 0x53 0x70…0x78`) and decode as a message.
    private static func isEncodedMessage(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 3, bytes[0] == 0x00, bytes[1] == 0x53, (0x70...0x78).contains(bytes[2]) else {
            return false
        }
        return decode(bytes) != nil
    }

    private static func bytesOf(_ bytes: pn_bytes_t) -> [UInt8] {
        guard bytes.size > 0, let start = bytes.start else { return [] }
        return Array(UnsafeRawBufferPointer(start: start, count: bytes.size))
    }

    private static func string(_ bytes: pn_bytes_t) -> String {
        String(decoding: bytesOf(bytes), as: UTF8.self)
    }

    private static func uuid(_ value: pn_uuid_t) -> UUID {
        withUnsafeBytes(of: value.bytes) { raw in
            UUID(uuid: raw.load(as: uuid_t.self))
        }
    }

    private static func messageID(_ data: OpaquePointer?) -> AMQPMessageID? {
        guard let data else { return nil }
        pn_data_rewind(data)
        guard pn_data_next(data) else { return nil }
        switch pn_data_type(data) {
        case PN_ULONG: return .ulong(pn_data_get_ulong(data))
        case PN_UUID: return .uuid(uuid(pn_data_get_uuid(data)))
        case PN_BINARY: return .binary(bytesOf(pn_data_get_binary(data)))
        case PN_STRING: return .string(string(pn_data_get_string(data)))
        case PN_SYMBOL: return .string(string(pn_data_get_symbol(data)))
        default: return nil
        }
    }

    /// The current value of `data` (after `pn_data_next`).
    private static func value(_ data: OpaquePointer) -> AMQPValue {
        switch pn_data_type(data) {
        case PN_NULL: return .null
        case PN_BOOL: return .bool(pn_data_get_bool(data))
        case PN_UBYTE: return .int(Int64(pn_data_get_ubyte(data)))
        case PN_BYTE: return .int(Int64(pn_data_get_byte(data)))
        case PN_USHORT: return .int(Int64(pn_data_get_ushort(data)))
        case PN_SHORT: return .int(Int64(pn_data_get_short(data)))
        case PN_UINT: return .int(Int64(pn_data_get_uint(data)))
        case PN_INT: return .int32(pn_data_get_int(data))
        case PN_ULONG:
            let value = pn_data_get_ulong(data)
            return value <= UInt64(Int64.max) ? .int(Int64(value)) : .other(String(value))
        case PN_LONG: return .int(pn_data_get_long(data))
        case PN_FLOAT: return .double(Double(pn_data_get_float(data)))
        case PN_DOUBLE: return .double(pn_data_get_double(data))
        case PN_TIMESTAMP: return .timestamp(pn_data_get_timestamp(data))
        case PN_UUID: return .uuid(uuid(pn_data_get_uuid(data)))
        case PN_STRING: return .string(string(pn_data_get_string(data)))
        case PN_SYMBOL: return .symbol(string(pn_data_get_symbol(data)))
        case PN_BINARY: return .binary(bytesOf(pn_data_get_binary(data)))
        default: return .other(rendered(data))
        }
    }

    /// Proton's text for a value DevHub does not interpret (bounded).
    private static func rendered(_ data: OpaquePointer) -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count - 1
        guard let copy = pn_data(0) else { return "?" }
        defer { pn_data_free(copy) }
        pn_data_narrow(data)
        pn_data_copy(copy, data)
        pn_data_widen(data)
        let status = pn_data_format(copy, &buffer, &size)
        guard status == 0 || status == PN_OVERFLOW else { return "?" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A map section's entries with string or symbol keys; other keys are skipped.
    private static func map(_ data: OpaquePointer?) -> [(String, AMQPValue)] {
        guard let data else { return [] }
        pn_data_rewind(data)
        guard pn_data_next(data), pn_data_type(data) == PN_MAP else { return [] }
        pn_data_enter(data)
        defer { pn_data_exit(data) }
        var entries: [(String, AMQPValue)] = []
        while pn_data_next(data) {
            let keyType = pn_data_type(data)
            let key: String? =
                keyType == PN_STRING
                ? string(pn_data_get_string(data))
                : keyType == PN_SYMBOL ? string(pn_data_get_symbol(data)) : nil
            guard pn_data_next(data) else { break }
            if let key { entries.append((key, value(data))) }
        }
        return entries
    }

    // MARK: Encoding

    /// The encoded message (a data body is one data section).
    static func encode(_ message: AMQPMessage) -> [UInt8] {
        guard let handle = pn_message() else { return [] }
        defer { pn_message_free(handle) }
        if let id = message.messageID { putID(id, into: pn_message_id(handle)) }
        if let id = message.correlationID { putID(id, into: pn_message_correlation_id(handle)) }
        if let userID = message.userID {
            userID.withUnsafeBufferPointer { buffer in
                buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                    _ = pn_message_set_user_id(handle, pn_bytes(buffer.count, $0))
                }
            }
        }
        if let to = message.to { pn_message_set_address(handle, to) }
        if let subject = message.subject { pn_message_set_subject(handle, subject) }
        if let replyTo = message.replyTo { pn_message_set_reply_to(handle, replyTo) }
        if let contentType = message.contentType { pn_message_set_content_type(handle, contentType) }
        if let contentEncoding = message.contentEncoding { pn_message_set_content_encoding(handle, contentEncoding) }
        if let expiry = message.absoluteExpiryTime { pn_message_set_expiry_time(handle, expiry) }
        if let creation = message.creationTime { pn_message_set_creation_time(handle, creation) }
        if !message.applicationProperties.isEmpty {
            putMap(message.applicationProperties, keysAsSymbols: false, into: pn_message_properties(handle))
        }
        if !message.messageAnnotations.isEmpty {
            putMap(message.messageAnnotations, keysAsSymbols: true, into: pn_message_annotations(handle))
        }
        switch message.body {
        case .none:
            break
        case .data(let bytes):
            pn_message_set_inferred(handle, true)
            put(AMQPValue.binary(bytes), into: pn_message_body(handle))
        case .value(let value):
            pn_message_set_inferred(handle, false)
            put(value, into: pn_message_body(handle))
        }
        var capacity = 1024 + message.bodyBytes.count
        while true {
            var buffer = [CChar](repeating: 0, count: capacity)
            var size = capacity
            let status = pn_message_encode(handle, &buffer, &size)
            if status == 0 { return buffer[..<size].map { UInt8(bitPattern: $0) } }
            guard status == PN_OVERFLOW, capacity < 1 << 26 else { return [] }
            capacity *= 2
        }
    }

    private static func withBytes<R>(_ bytes: [UInt8], _ body: (pn_bytes_t) -> R) -> R {
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, !buffer.isEmpty else { return body(pn_bytes(0, nil)) }
            return base.withMemoryRebound(to: CChar.self, capacity: buffer.count) { body(pn_bytes(buffer.count, $0)) }
        }
    }

    private static func putID(_ id: AMQPMessageID, into data: OpaquePointer?) {
        guard let data else { return }
        pn_data_clear(data)
        switch id {
        case .ulong(let value): pn_data_put_ulong(data, value)
        case .uuid(let value): putValue(.uuid(value), into: data)
        case .binary(let bytes): _ = withBytes(bytes) { pn_data_put_binary(data, $0) }
        case .string(let text): _ = withBytes(Array(text.utf8)) { pn_data_put_string(data, $0) }
        }
    }

    private static func putMap(_ entries: [(String, AMQPValue)], keysAsSymbols: Bool, into data: OpaquePointer?) {
        guard let data else { return }
        pn_data_clear(data)
        pn_data_put_map(data)
        pn_data_enter(data)
        for (key, value) in entries {
            _ = withBytes(Array(key.utf8)) {
                keysAsSymbols ? pn_data_put_symbol(data, $0) : pn_data_put_string(data, $0)
            }
            putValue(value, into: data)
        }
        pn_data_exit(data)
    }

    private static func put(_ value: AMQPValue, into data: OpaquePointer?) {
        guard let data else { return }
        pn_data_clear(data)
        putValue(value, into: data)
    }

    private static func putValue(_ value: AMQPValue, into data: OpaquePointer) {
        switch value {
        case .null: pn_data_put_null(data)
        case .bool(let value): pn_data_put_bool(data, value)
        case .int(let value): pn_data_put_long(data, value)
        case .int32(let value): pn_data_put_int(data, value)
        case .double(let value): pn_data_put_double(data, value)
        case .timestamp(let value): pn_data_put_timestamp(data, value)
        case .uuid(let value):
            var raw = pn_uuid_t()
            withUnsafeMutableBytes(of: &raw.bytes) { target in
                withUnsafeBytes(of: value.uuid) { target.copyMemory(from: $0) }
            }
            pn_data_put_uuid(data, raw)
        case .string(let text), .other(let text): _ = withBytes(Array(text.utf8)) { pn_data_put_string(data, $0) }
        case .symbol(let text): _ = withBytes(Array(text.utf8)) { pn_data_put_symbol(data, $0) }
        case .binary(let bytes): _ = withBytes(bytes) { pn_data_put_binary(data, $0) }
        }
    }
}
