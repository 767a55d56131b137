import StrictJSON

extension TOMLTable {
    /// The table as JSON (StrictJSON's values, members in document order): integers as integers,
    /// floats in their shortest form that reads back the same (`0.1`, `1e+20`), dates and times
    /// as the strings they were written as, and NaN and the infinities — which JSON cannot
    /// write — as the strings `"nan"`, `"inf"` and `"-inf"`.
    public var json: JSONObject { Self.json(self, depth: 0) }

    /// ``json`` as compact text, keys in document order, or with `sortedKeys` by their UTF-8
    /// bytes (as Python's `sort_keys` for the keys TOML allows).
    public func jsonText(sortedKeys: Bool = false) -> String {
        JSONValue.object(json).formatted(JSONFormat(sortsKeys: sortedKeys))
    }

    /// Tables made in code can nest without limit; past this depth the rest is null rather than
    /// overflowing the stack.
    static let maximumJSONDepth = 600

    static func json(_ table: TOMLTable, depth: Int) -> JSONObject {
        JSONObject(
            uniqueKeysWithValues: table.keys.compactMap { key in
                table[key].map { (key, json($0, depth: depth + 1)) }
            })
    }

    static func json(_ value: TOMLValue, depth: Int) -> JSONValue {
        guard depth <= maximumJSONDepth else { return .null }
        switch value {
        case .string(let text), .dateTime(let text): return .string(text)
        case .integer(let number): return .int(number)
        case .float(let number):
            if let finite = JSONNumber(number) { return .number(finite) }
            return .string(number.isNaN ? "nan" : number < 0 ? "-inf" : "inf")
        case .boolean(let flag): return .bool(flag)
        case .array(let elements): return .array(elements.map { json($0, depth: depth + 1) })
        case .table(let table): return .object(json(table, depth: depth + 1))
        }
    }
}

extension TOMLValue {
    /// The value as JSON, as ``TOMLTable/json`` converts it.
    public var json: JSONValue { TOMLTable.json(self, depth: 0) }

    /// ``json`` as compact text, as ``TOMLTable/jsonText(sortedKeys:)`` writes it.
    public func jsonText(sortedKeys: Bool = false) -> String {
        json.formatted(JSONFormat(sortsKeys: sortedKeys))
    }
}
