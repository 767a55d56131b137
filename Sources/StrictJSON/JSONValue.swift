/// A JSON value, read strictly and written deterministically: gatehouse's one JSON module.
///
/// What it keeps that Foundation's `JSONSerialization` and `JSONDecoder` lose: the order of
/// object members (``JSONObject``) and the exact text of numbers (``JSONNumber``). What it
/// refuses that they accept: a member name twice in one object, nesting deeper than a limit,
/// invalid UTF-8, a lone surrogate escape, a number beyond `Double`'s range and anything after
/// the value. See ``init(parsing:maximumDepth:)`` for the grammar and
/// ``JSONParseError`` for what a refusal says; ``description`` and ``formatted(_:)`` write.
///
/// Written by hand because every hostile document meets it first: a caller's token and method
/// payload in the command gate, a JWKS, a DPS response, a device's twin patch in DevHub. A
/// parser that read `{"aud":"us","aud":"them"}` differently from the next one in line would
/// make gatehouse a confused deputy (RFC 7515 §5.2, RFC 8259 §4).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The deepest nesting of arrays and objects the parser accepts unless told otherwise:
    /// `[[1]]` is depth 2.
    public static let defaultMaximumDepth = 64

    /// An integer number.
    public static func int(_ value: some BinaryInteger) -> JSONValue { .number(JSONNumber(value)) }

    // MARK: Reading

    public var stringValue: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// The number, exact, if this is one.
    public var numberValue: JSONNumber? {
        if case .number(let value) = self { return value }
        return nil
    }

    /// The number if it is an integer that fits an `Int` (``JSONNumber/intValue``).
    public var intValue: Int? { numberValue?.intValue }

    /// The number if it is an integer that fits an `Int64` (``JSONNumber/int64Value``).
    public var int64Value: Int64? { numberValue?.int64Value }

    /// The number if it is a non-negative integer that fits a `UInt64` (``JSONNumber/uint64Value``).
    public var uint64Value: UInt64? { numberValue?.uint64Value }

    /// The nearest `Double` to the number (``JSONNumber/doubleValue``); rounded, never infinite.
    public var doubleValue: Double? { numberValue?.doubleValue }

    public var arrayValue: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let value) = self { return value }
        return nil
    }

    public var isObject: Bool { objectValue != nil }

    /// The member `key` of an object, or nil (also when this is not an object).
    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    // MARK: Changing

    /// Sets (or appends) member `key` of an object; no effect on other values.
    public mutating func set(_ key: String, _ value: JSONValue) {
        guard case .object(var members) = self else { return }
        members[key] = value
        self = .object(members)
    }

    /// Removes member `key` of an object; no effect on other values.
    public mutating func remove(_ key: String) {
        guard case .object(var members) = self else { return }
        members.removeValue(forKey: key)
        self = .object(members)
    }

    /// RFC 7396 JSON Merge Patch, the semantics of twin patches: members of `patch` that are
    /// objects merge recursively, `null` deletes, anything else replaces.
    public func merging(patch: JSONValue) -> JSONValue {
        guard case .object(let patchMembers) = patch else { return patch }
        var result: JSONValue = isObject ? self : .object([:])
        for member in patchMembers {
            if member.value == .null {
                result.remove(member.key)
            } else {
                let current = result[member.key] ?? .null
                result.set(member.key, current.merging(patch: member.value))
            }
        }
        return result
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByFloatLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    /// A float literal; it must be finite (JSON has no infinities or NaN).
    public init(floatLiteral value: Double) {
        guard let number = JSONNumber(value) else { preconditionFailure("JSON has no \(value)") }
        self = .number(number)
    }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    /// An object of the literal's members in their order; a repeated name is a programming error.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(uniqueKeysWithValues: elements))
    }
    public init(nilLiteral: ()) { self = .null }
}
