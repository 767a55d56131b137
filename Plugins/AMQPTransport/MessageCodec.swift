import CQpidProton
import GatehousePluginKit

#if canImport(Glibc)
    import Glibc
#endif

/// A received AMQP message, as the transport reads it.
struct ReceivedMessage: Sendable, Equatable {
    var messageID: AMQPScalar = .null
    var correlationID: AMQPScalar = .null
    var userID: [UInt8] = []
    var to: String?
    var contentType: String?
    var contentEncoding: String?
    var absoluteExpiryMS: Int64 = 0
    var applicationProperties: [(String, AMQPScalar)] = []
    var annotations: [(String, AMQPScalar)] = []
    /// A data section's bytes, or an AMQP value string's UTF-8.
    var body: [UInt8] = []

    func property(_ name: String) -> AMQPScalar? {
        applicationProperties.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    static func == (a: Self, b: Self) -> Bool {
        a.messageID == b.messageID && a.correlationID == b.correlationID && a.userID == b.userID && a.to == b.to
            && a.contentType == b.contentType && a.contentEncoding == b.contentEncoding
            && a.applicationProperties.elementsEqual(b.applicationProperties, by: { $0.0 == $1.0 && $0.1 == $1.1 })
            && a.body == b.body
    }
}

/// Encodes and decodes the AMQP messages of IoT Hub's device protocol through qpid-proton's
/// `pn_message_t` (docs/protocols.md §3.1, §3.2): CBS put-tokens, telemetry, method responses;
/// C2D messages, method requests and CBS responses in.
///
/// One message object and one growing buffer, reused: confined to one thread (the I/O thread,
/// or a test).
final class MessageCodec {
    private let message: OpaquePointer
    private var buffer = pn_rwbytes_t(size: 0, start: nil)

    init() { message = pn_message()! }

    deinit {
        pn_message_free(message)
        free(buffer.start)
    }

    /// The put-token request (`PutTokenRequest`): the SAS token is in the body, so the caller
    /// wipes what it copied (`wipe()` clears the codec's own buffer).
    func encode(_ request: PutTokenRequest) -> [UInt8] {
        pn_message_clear(message)
        pn_data_put_ulong(pn_message_id(message), request.messageID)
        pn_message_set_reply_to(message, PutTokenRequest.replyTo)
        putStringMap(pn_message_properties(message), request.applicationProperties)
        let body = pn_message_body(message)
        withBytes(request.token) { pn_data_put_string(body, $0) }
        return encoded()
    }

    /// A telemetry message: the payload as one data section; IoT Hub's system properties from
    /// the property bag (`$.mid` message-id, `$.cid` correlation-id, `$.ct` content-type, `$.ce`
    /// content-encoding, `$.uid` user-id; `$.sub` as the `dt-subject` annotation) and every other
    /// property as a string application property, in order.
    func encode(telemetry: PluginMessage) -> [UInt8] {
        pn_message_clear(message)
        pn_message_set_inferred(message, true)
        var application: [(String, String)] = []
        var annotations: [(String, String)] = []
        for property in telemetry.properties {
            switch property.key {
            case "$.mid": withBytes(property.value) { pn_data_put_string(pn_message_id(message), $0) }
            case "$.cid": withBytes(property.value) { pn_data_put_string(pn_message_correlation_id(message), $0) }
            case "$.ct": pn_message_set_content_type(message, property.value)
            case "$.ce": pn_message_set_content_encoding(message, property.value)
            case "$.uid": withBytes(property.value) { pn_message_set_user_id(message, $0) }
            case "$.sub": annotations.append(("dt-subject", property.value))
            default: application.append((property.key, property.value))
            }
        }
        if !application.isEmpty { putStringMap(pn_message_properties(message), application) }
        if !annotations.isEmpty { putStringMap(pn_message_annotations(message), annotations, symbolKeys: true) }
        let body = pn_message_body(message)
        telemetry.payload.withUnsafeBufferPointer { payload in
            payload.withMemoryRebound(to: CChar.self) {
                _ = pn_data_put_binary(body, pn_bytes(payload.count, $0.baseAddress))
            }
        }
        return encoded()
    }

    /// A direct method's response: the request's correlation-id, `IoThub-status` (int), the
    /// JSON body as a data section (docs/protocols.md §3.2).
    func encodeMethodResponse(correlationID: AMQPScalar, status: Int32, body: [UInt8]) -> [UInt8] {
        pn_message_clear(message)
        pn_message_set_inferred(message, true)
        put(correlationID, into: pn_message_correlation_id(message))
        let properties = pn_message_properties(message)
        pn_data_put_map(properties)
        pn_data_enter(properties)
        withBytes("IoThub-status") { pn_data_put_string(properties, $0) }
        pn_data_put_int(properties, status)
        pn_data_exit(properties)
        let data = pn_message_body(message)
        body.withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) {
                _ = pn_data_put_binary(data, pn_bytes(bytes.count, $0.baseAddress))
            }
        }
        return encoded()
    }

    /// Clears the codec's buffer (it held a token).
    func wipe() {
        if let start = buffer.start { memset(start, 0, buffer.size) }
        pn_message_clear(message)
    }

    func decode(_ bytes: [UInt8]) -> ReceivedMessage? {
        pn_message_clear(message)
        let status = bytes.withUnsafeBufferPointer { raw in
            raw.withMemoryRebound(to: CChar.self) { pn_message_decode(message, $0.baseAddress, raw.count) }
        }
        guard status == 0 else { return nil }
        var received = ReceivedMessage()
        received.messageID = Self.first(pn_message_id(message))
        received.correlationID = Self.first(pn_message_correlation_id(message))
        let user = pn_message_get_user_id(message)
        if user.size > 0, let start = user.start {
            received.userID = Array(UnsafeRawBufferPointer(start: start, count: user.size))
        }
        received.to = pn_message_get_address(message).map { String(cString: $0) }
        received.contentType = pn_message_get_content_type(message).map { String(cString: $0) }
        received.contentEncoding = pn_message_get_content_encoding(message).map { String(cString: $0) }
        received.absoluteExpiryMS = pn_message_get_expiry_time(message)
        received.applicationProperties = Self.map(pn_message_properties(message))
        received.annotations = Self.map(pn_message_annotations(message))
        switch Self.first(pn_message_body(message)) {
        case .binary(let bytes): received.body = bytes
        case .string(let text): received.body = Array(text.utf8)
        default: break
        }
        return received
    }

    // MARK: pn_data helpers

    private func encoded() -> [UInt8] {
        let size = pn_message_encode2(message, &buffer)
        guard size >= 0, let start = buffer.start else { return [] }
        return Array(UnsafeRawBufferPointer(start: start, count: size))
    }

    private func putStringMap(_ data: OpaquePointer?, _ entries: [(String, String)], symbolKeys: Bool = false) {
        pn_data_put_map(data)
        pn_data_enter(data)
        for (key, value) in entries {
            withBytes(key) { symbolKeys ? pn_data_put_symbol(data, $0) : pn_data_put_string(data, $0) }
            withBytes(value) { pn_data_put_string(data, $0) }
        }
        pn_data_exit(data)
    }

    private func put(_ value: AMQPScalar, into data: OpaquePointer?) {
        switch value {
        case .string(let text): withBytes(text) { pn_data_put_string(data, $0) }
        case .symbol(let text): withBytes(text) { pn_data_put_symbol(data, $0) }
        case .uint(let number): pn_data_put_ulong(data, number)
        case .int(let number): pn_data_put_long(data, number)
        case .binary(let bytes):
            bytes.withUnsafeBufferPointer { raw in
                raw.withMemoryRebound(to: CChar.self) {
                    _ = pn_data_put_binary(data, pn_bytes(raw.count, $0.baseAddress))
                }
            }
        case .uuid(let bytes) where bytes.count == 16:
            var uuid = pn_uuid_t()
            withUnsafeMutableBytes(of: &uuid.bytes) { $0.copyBytes(from: bytes) }
            pn_data_put_uuid(data, uuid)
        default: break
        }
    }

    /// The first value of `data` (a message id, a body).
    static func first(_ data: OpaquePointer?) -> AMQPScalar {
        guard let data else { return .null }
        pn_data_rewind(data)
        guard pn_data_next(data) else { return .null }
        return scalar(data)
    }

    /// The entries of a map at the start of `data` (application properties, annotations); keys
    /// that are not strings or symbols are skipped.
    static func map(_ data: OpaquePointer?) -> [(String, AMQPScalar)] {
        guard let data else { return [] }
        pn_data_rewind(data)
        guard pn_data_next(data), pn_data_type(data) == PN_MAP else { return [] }
        pn_data_enter(data)
        defer { pn_data_exit(data) }
        var entries: [(String, AMQPScalar)] = []
        while pn_data_next(data) {
            let key = scalar(data)
            guard pn_data_next(data) else { break }
            let value = scalar(data)
            switch key {
            case .string(let name), .symbol(let name): entries.append((name, value))
            default: continue
            }
        }
        return entries
    }

    /// The value at the current node.
    static func scalar(_ data: OpaquePointer) -> AMQPScalar {
        switch pn_data_type(data) {
        case PN_NULL: return .null
        case PN_BOOL: return .bool(pn_data_get_bool(data))
        case PN_UBYTE: return .uint(UInt64(pn_data_get_ubyte(data)))
        case PN_USHORT: return .uint(UInt64(pn_data_get_ushort(data)))
        case PN_UINT: return .uint(UInt64(pn_data_get_uint(data)))
        case PN_ULONG: return .uint(pn_data_get_ulong(data))
        case PN_BYTE: return .int(Int64(pn_data_get_byte(data)))
        case PN_SHORT: return .int(Int64(pn_data_get_short(data)))
        case PN_INT: return .int(Int64(pn_data_get_int(data)))
        case PN_LONG: return .int(pn_data_get_long(data))
        case PN_FLOAT: return .double(Double(pn_data_get_float(data)))
        case PN_DOUBLE: return .double(pn_data_get_double(data))
        case PN_TIMESTAMP: return .timestamp(pn_data_get_timestamp(data))
        case PN_STRING: return .string(text(pn_data_get_string(data)))
        case PN_SYMBOL: return .symbol(text(pn_data_get_symbol(data)))
        case PN_BINARY: return .binary(bytes(pn_data_get_binary(data)))
        case PN_UUID:
            var uuid = pn_data_get_uuid(data)
            return .uuid(withUnsafeBytes(of: &uuid.bytes) { Array($0) })
        default: return .other
        }
    }

    static func bytes(_ value: pn_bytes_t) -> [UInt8] {
        guard value.size > 0, let start = value.start else { return [] }
        return Array(UnsafeRawBufferPointer(start: start, count: value.size))
    }

    static func text(_ value: pn_bytes_t) -> String { String(decoding: bytes(value), as: UTF8.self) }
}

/// Calls `body` with a `pn_bytes_t` view of a string's UTF-8 (borrowed for the call).
@discardableResult
func withBytes<R>(_ text: String, _ body: (pn_bytes_t) -> R) -> R {
    var text = text
    return text.withUTF8 { utf8 in
        utf8.withMemoryRebound(to: CChar.self) { body(pn_bytes(utf8.count, $0.baseAddress)) }
    }
}
