extension TOMLTable {
    /// The table as a JSON object (RFC 8259), on one line: strings escaped, integers as
    /// integers, floats in their shortest form that reads back the same (`0.1`, `1e+20`), dates
    /// and times as the strings they were written as, and NaN and the infinities — which JSON
    /// cannot write — as the strings `"nan"`, `"inf"` and `"-inf"`. Keys are in document order,
    /// or with `sortedKeys` by Unicode code point (as Python's `sort_keys`).
    public func jsonText(sortedKeys: Bool = false) -> String {
        var writer = JSONWriter(sortedKeys: sortedKeys)
        writer.write(self, depth: 0)
        return String(decoding: writer.output, as: UTF8.self)
    }
}

extension TOMLValue {
    /// The value as JSON text, as ``TOMLTable/jsonText(sortedKeys:)`` writes it.
    public func jsonText(sortedKeys: Bool = false) -> String {
        var writer = JSONWriter(sortedKeys: sortedKeys)
        writer.write(self, depth: 0)
        return String(decoding: writer.output, as: UTF8.self)
    }
}

struct JSONWriter {
    let sortedKeys: Bool
    var output: [UInt8] = []

    init(sortedKeys: Bool) {
        self.sortedKeys = sortedKeys
    }

    /// `"text"` with `"`, `\` and the control characters escaped (the rest as it is, UTF-8).
    static func quoted(_ text: String) -> String {
        var writer = JSONWriter(sortedKeys: false)
        writer.writeString(text)
        return String(decoding: writer.output, as: UTF8.self)
    }

    /// Tables made in code can nest without limit; past this depth the rest is written as null
    /// rather than overflowing the stack.
    private static let maximumDepth = 600

    mutating func write(_ value: TOMLValue, depth: Int) {
        guard depth <= Self.maximumDepth else {
            output.append(contentsOf: "null".utf8)
            return
        }
        switch value {
        case .string(let text), .dateTime(let text):
            writeString(text)
        case .integer(let number):
            output.append(contentsOf: String(number).utf8)
        case .float(let number):
            if number.isNaN {
                writeString("nan")
            } else if number.isInfinite {
                writeString(number < 0 ? "-inf" : "inf")
            } else {
                output.append(contentsOf: number.description.utf8)
            }
        case .boolean(let flag):
            output.append(contentsOf: (flag ? "true" : "false").utf8)
        case .array(let elements):
            output.append(ASCII.openBracket)
            for (position, element) in elements.enumerated() {
                if position > 0 { output.append(ASCII.comma) }
                write(element, depth: depth + 1)
            }
            output.append(ASCII.closeBracket)
        case .table(let table):
            write(table, depth: depth + 1)
        }
    }

    mutating func write(_ table: TOMLTable, depth: Int) {
        guard depth <= Self.maximumDepth else {
            output.append(contentsOf: "null".utf8)
            return
        }
        let keys = sortedKeys ? table.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) } : table.keys
        output.append(ASCII.openBrace)
        var first = true
        for key in keys {
            guard let value = table[key] else { continue }
            if !first { output.append(ASCII.comma) }
            first = false
            writeString(key)
            output.append(UInt8(ascii: ":"))
            write(value, depth: depth + 1)
        }
        output.append(ASCII.closeBrace)
    }

    private mutating func writeString(_ text: String) {
        output.append(ASCII.quote)
        for byte in text.utf8 {
            switch byte {
            case ASCII.quote, ASCII.backslash:
                output.append(ASCII.backslash)
                output.append(byte)
            case ASCII.lineFeed: output.append(contentsOf: "\\n".utf8)
            case ASCII.carriageReturn: output.append(contentsOf: "\\r".utf8)
            case ASCII.tab: output.append(contentsOf: "\\t".utf8)
            case 0x08: output.append(contentsOf: "\\b".utf8)
            case 0x0C: output.append(contentsOf: "\\f".utf8)
            case ..<0x20:
                let hex = String(byte, radix: 16, uppercase: true)
                output.append(contentsOf: ("\\u00" + (hex.count == 1 ? "0" : "") + hex).utf8)
            default:
                output.append(byte)
            }
        }
        output.append(ASCII.quote)
    }
}
