import Foundation
import TOMLReader
import Testing

/// Parses `text`, recording the error as the test's failure if there is one.
func parse(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> TOMLTable {
    do {
        return try TOMLTable(parsing: text)
    } catch {
        Issue.record("unexpected error: \(error)", sourceLocation: sourceLocation)
        throw error
    }
}

/// The value of `key` in a one-line document `key = <value>`.
func value(_ literal: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> TOMLValue {
    try #require(try parse("v = \(literal)", sourceLocation: sourceLocation)["v"], sourceLocation: sourceLocation)
}

/// The error `text` gives; records a failure if it parses.
func parseError(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> TOMLError? {
    do {
        let table = try TOMLTable(parsing: text)
        Issue.record("expected an error, parsed \(table.jsonText())", sourceLocation: sourceLocation)
        return nil
    } catch {
        return error
    }
}

/// A JSON value, read back from text so that two renderings can be compared structurally:
/// numbers keep whether they were integers, objects keep their key order.
indirect enum JSON: Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case integer(String)
    case float(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    static func == (lhs: JSON, rhs: JSON) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.integer(let a), .integer(let b)): a == b
        case (.float(let a), .float(let b)): a == b && a.sign == b.sign
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)): a.map(\.0) == b.map(\.0) && a.map(\.1) == b.map(\.1)
        default: false
        }
    }

    var description: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .integer(let text): text
        case .float(let value): "\(value)"
        case .string(let text): "\"\(text)\""
        case .array(let elements): "[\(elements.map(\.description).joined(separator: ","))]"
        case .object(let members): "{\(members.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ","))}"
        }
    }

    /// A strict reader: RFC 8259, nothing after the value. Nil for anything else.
    init?(parsing text: String) {
        var reader = JSONReader(bytes: Array(text.utf8))
        guard let value = reader.value(), reader.atEnd else { return nil }
        self = value
    }
}

private struct JSONReader {
    let bytes: [UInt8]
    var index = 0

    var atEnd: Bool {
        mutating get {
            skipSpace()
            return index == bytes.count
        }
    }

    mutating func skipSpace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    mutating func literal(_ word: String) -> Bool {
        let expected = Array(word.utf8)
        guard bytes[index...].starts(with: expected) else { return false }
        index += expected.count
        return true
    }

    mutating func value() -> JSON? {
        skipSpace()
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            index += 1
            var members: [(String, JSON)] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipSpace()
                guard case .string(let key)? = value() else { return nil }
                skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
                index += 1
                guard let member = value() else { return nil }
                members.append((key, member))
                skipSpace()
                guard index < bytes.count else { return nil }
                index += 1
                if bytes[index - 1] == UInt8(ascii: "}") { return .object(members) }
                guard bytes[index - 1] == UInt8(ascii: ",") else { return nil }
            }
        case UInt8(ascii: "["):
            index += 1
            var elements: [JSON] = []
            skipSpace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            while true {
                guard let element = value() else { return nil }
                elements.append(element)
                skipSpace()
                guard index < bytes.count else { return nil }
                index += 1
                if bytes[index - 1] == UInt8(ascii: "]") { return .array(elements) }
                guard bytes[index - 1] == UInt8(ascii: ",") else { return nil }
            }
        case UInt8(ascii: "\""):
            return string()
        case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
        case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
        case UInt8(ascii: "n"): return literal("null") ? .null : nil
        default:
            return number()
        }
    }

    mutating func number() -> JSON? {
        let start = index
        var isFloat = false
        while index < bytes.count, "0123456789+-.eE".utf8.contains(bytes[index]) {
            if !"0123456789-".utf8.contains(bytes[index]) { isFloat = true }
            index += 1
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        guard !text.isEmpty, text.wholeMatch(of: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/) != nil else {
            return nil
        }
        if isFloat { return Double(text).map { .float($0) } }
        return .integer(text == "-0" ? "0" : text)
    }

    mutating func string() -> JSON? {
        index += 1
        var scalars = String.UnicodeScalarView()
        var pendingHigh: UInt32?
        var raw: [UInt8] = []
        func flush() {
            scalars.append(contentsOf: String(decoding: raw, as: UTF8.self).unicodeScalars)
            raw.removeAll()
        }
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                flush()
                return pendingHigh == nil ? .string(String(scalars)) : nil
            case UInt8(ascii: "\\"):
                flush()
                guard index < bytes.count else { return nil }
                let letter = bytes[index]
                index += 1
                let simple: [UInt8: UInt32] = [
                    UInt8(ascii: "\""): 0x22, UInt8(ascii: "\\"): 0x5C, UInt8(ascii: "/"): 0x2F,
                    UInt8(ascii: "b"): 0x08,
                    UInt8(ascii: "f"): 0x0C, UInt8(ascii: "n"): 0x0A, UInt8(ascii: "r"): 0x0D, UInt8(ascii: "t"): 0x09,
                ]
                if let code = simple[letter], pendingHigh == nil {
                    scalars.append(Unicode.Scalar(code)!)
                    continue
                }
                guard letter == UInt8(ascii: "u"), index + 4 <= bytes.count,
                    let code = UInt32(String(decoding: bytes[index..<index + 4], as: UTF8.self), radix: 16)
                else { return nil }
                index += 4
                if let high = pendingHigh {
                    guard (0xDC00...0xDFFF).contains(code) else { return nil }
                    scalars.append(Unicode.Scalar(0x10000 + (high - 0xD800) << 10 + (code - 0xDC00))!)
                    pendingHigh = nil
                } else if (0xD800...0xDBFF).contains(code) {
                    pendingHigh = code
                } else {
                    guard let scalar = Unicode.Scalar(code) else { return nil }
                    scalars.append(scalar)
                }
            case ..<0x20:
                return nil
            default:
                guard pendingHigh == nil else { return nil }
                raw.append(byte)
            }
        }
        return nil
    }
}

/// Runs `python3` with `arguments`; nil (with the reason) when it cannot be started.
func runPython(_ arguments: [String]) -> (status: Int32, output: String)? {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3"] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    do {
        try process.run()
    } catch {
        return nil
    }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Whether `python3` with `tomllib` (Python 3.11+) can run here, and if not, why.
let pythonTOMLLib: (available: Bool, reason: String) = {
    guard let result = runPython(["-c", "import tomllib, sys; print(sys.version)"]) else {
        return (false, "python3 not found on PATH")
    }
    guard result.status != 127 else { return (false, "python3 not found on PATH: \(result.output)") }
    guard result.status == 0 else { return (false, "python3 has no tomllib (3.11+ needed): \(result.output)") }
    return (true, "python3 \(result.output.prefix { $0 != " " })")
}()

/// A scratch directory, removed by the caller.
func makeTemporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("tomlreader-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}
