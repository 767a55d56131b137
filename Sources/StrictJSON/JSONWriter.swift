/// How ``JSONValue/formatted(_:)`` lays out JSON text. Whatever the format, the same value
/// gives the same bytes: members in their order (or sorted), numbers as their literal text,
/// strings escaped one way (`\"`, `\\`, `\n`, `\r`, `\t`, other control characters as
/// `\u00XX`, everything else as UTF-8).
public struct JSONFormat: Sendable, Equatable {
    /// One level of indentation, with each member and element on its own line and `": "` after
    /// names; nil for compact text without any whitespace.
    public var indentation: String?
    /// Members sorted by their names' UTF-8 bytes rather than in the object's own order.
    public var sortsKeys: Bool

    public init(indentation: String? = nil, sortsKeys: Bool = false) {
        self.indentation = indentation
        self.sortsKeys = sortsKeys
    }

    /// No whitespace, members in order.
    public static let compact = JSONFormat()
    /// Two-space indentation, members in order: for people.
    public static let pretty = JSONFormat(indentation: "  ")
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON text, members in order.
    public var description: String { formatted(.compact) }

    /// JSON text with two-space indentation, for people.
    public var prettyDescription: String { formatted(.pretty) }

    /// The UTF-8 bytes of the compact text.
    public var utf8Bytes: [UInt8] { Array(description.utf8) }

    /// The JSON text of this value in `format`.
    public func formatted(_ format: JSONFormat) -> String {
        var output = ""
        write(into: &output, format: format, level: 0)
        return output
    }

    private func write(into output: inout String, format: JSONFormat, level: Int) {
        switch self {
        case .null: output += "null"
        case .bool(let value): output += value ? "true" : "false"
        case .number(let number): output += number.text
        case .string(let value): Self.writeString(value, into: &output)
        case .array(let values):
            guard !values.isEmpty else {
                output += "[]"
                return
            }
            output += "["
            for (index, value) in values.enumerated() {
                if index > 0 { output += "," }
                Self.newline(&output, format, level + 1)
                value.write(into: &output, format: format, level: level + 1)
            }
            Self.newline(&output, format, level)
            output += "]"
        case .object(let object):
            guard !object.isEmpty else {
                output += "{}"
                return
            }
            output += "{"
            for (index, member) in (format.sortsKeys ? object.sortedByKey() : object).enumerated() {
                if index > 0 { output += "," }
                Self.newline(&output, format, level + 1)
                Self.writeString(member.key, into: &output)
                output += format.indentation == nil ? ":" : ": "
                member.value.write(into: &output, format: format, level: level + 1)
            }
            Self.newline(&output, format, level)
            output += "}"
        }
    }

    private static func newline(_ output: inout String, _ format: JSONFormat, _ level: Int) {
        guard let indentation = format.indentation else { return }
        output += "\n"
        for _ in 0..<level { output += indentation }
    }

    private static func writeString(_ value: String, into output: inout String) {
        output += "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                output += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: output.unicodeScalars.append(scalar)
            }
        }
        output += "\""
    }
}
