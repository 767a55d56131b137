/// A TOML value.
public enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    /// An offset date-time, local date-time, local date or local time, as it was written
    /// (checked: `1979-05-27T07:32:00Z`, `1979-05-27 07:32:00.5`, `1979-05-27`, `07:32:00`).
    case dateTime(String)
    case array([TOMLValue])
    case table(TOMLTable)

    /// The string, or nil for any other value.
    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    /// The integer as an `Int`, or nil for any other value.
    public var int: Int? {
        if case .integer(let value) = self { return Int(exactly: value) }
        return nil
    }

    /// The integer, or nil for any other value.
    public var int64: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    /// A float, or an integer as the nearest `Double`; nil for any other value.
    public var double: Double? {
        switch self {
        case .float(let value): value
        case .integer(let value): Double(value)
        default: nil
        }
    }

    /// The boolean, or nil for any other value.
    public var bool: Bool? {
        if case .boolean(let value) = self { return value }
        return nil
    }

    /// The date and/or time as written, or nil for any other value.
    public var dateTime: String? {
        if case .dateTime(let value) = self { return value }
        return nil
    }

    /// The array (an array of tables too), or nil for any other value.
    public var array: [TOMLValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    /// The table (inline or not), or nil for any other value.
    public var table: TOMLTable? {
        if case .table(let value) = self { return value }
        return nil
    }

    /// What the value is, for messages: "string", "integer", "float", "boolean", "date-time",
    /// "array", "table" or "inline table".
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .boolean: "boolean"
        case .dateTime: "date-time"
        case .array: "array"
        case .table(let table): table.isInline ? "inline table" : "table"
        }
    }
}

extension TOMLValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .float(value) }
    public init(booleanLiteral value: Bool) { self = .boolean(value) }
    public init(arrayLiteral elements: TOMLValue...) { self = .array(elements) }

    public init(dictionaryLiteral elements: (String, TOMLValue)...) {
        var table = TOMLTable()
        for (key, value) in elements { table[key] = value }
        self = .table(table)
    }
}
