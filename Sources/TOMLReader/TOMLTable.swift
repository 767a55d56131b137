/// TOMLReader: TOML 1.0 (https://toml.io/en/v1.0.0) for gatehouse's configuration files, on the
/// Swift standard library alone.
///
/// Why hand-written: gatehouse read its configuration with TOMLKit, which wraps the C++ toml++
/// and imports Foundation; full Foundation pulls ICU (37 MiB) into the package
/// (`packaging/README.md`, "Size"). This module imports nothing, covers TOML 1.0 and its tests
/// check it against Python's `tomllib` on valid and invalid documents.
///
/// How it reads: a recursive-descent parser straight over the UTF-8 bytes, no lexer.
/// - `Parser.swift`: the document — lines, comments, keys, `[table]` and `[[array]]` headers;
///   positions and error messages;
/// - `Parser+Tree.swift`: the tables while they are read, and TOML's rules on defining them once;
/// - `Parser+Values.swift`: a value — arrays and inline tables, or one of the next two;
/// - `Parser+Strings.swift`: the four kinds of string;
/// - `Parser+Scalars.swift`: integers, floats, booleans, dates and times;
/// - `TOMLValue.swift`: the values handed out; `TOMLTable+JSON.swift`: tables as JSON (StrictJSON).
///
/// Every error is a `TOMLError` with the line and column it was found at; no input makes it
/// trap, and nesting deeper than ``TOMLTable/maximumDepth`` levels is an error.

/// A TOML table: keys in the order the document defined them, each with its value and the
/// place it was defined.
///
/// Two tables are equal when they have the same keys in the same order with equal values; where
/// they were written (positions, ``isInline``) is not compared.
public struct TOMLTable: Sendable, Equatable {
    /// Tables, arrays and inline tables nested deeper than this are an error.
    public static let maximumDepth = 128

    struct Entry: Sendable {
        var value: TOMLValue
        var position: TOMLPosition?
    }

    /// The keys, in the order they were defined (appended ones last).
    public private(set) var keys: [String] = []
    private var entries: [String: Entry] = [:]

    /// Whether the table was written inline, `{ … }`, or is a table inside an inline table.
    public var isInline = false

    /// Where the table was defined: its `[header]`, the first dotted key that made it, or its
    /// `{`. Nil for the root table, for tables only implied by a header (`a` in `[a.b]`) and
    /// for tables made in code.
    public var position: TOMLPosition?

    /// An empty table.
    public init() {}

    /// Parses a TOML document.
    public init(parsing text: String) throws(TOMLError) {
        self = try Parser.parse(Array(text.utf8), validatingUTF8: false)
    }

    /// Parses a TOML document from its bytes, which must be UTF-8 (a leading byte order mark is
    /// skipped).
    public init(parsing bytes: [UInt8]) throws(TOMLError) {
        self = try Parser.parse(bytes, validatingUTF8: true)
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }

    /// The value of `key`. Setting replaces the value in place or appends the key; setting nil
    /// removes it. A set value has no position (see ``setValue(_:forKey:position:)``).
    public subscript(key: String) -> TOMLValue? {
        get { entries[key]?.value }
        set { setValue(newValue, forKey: key, position: nil) }
    }

    /// Sets, replaces or (with nil) removes `key`, recording where the value came from.
    public mutating func setValue(_ value: TOMLValue?, forKey key: String, position: TOMLPosition?) {
        guard let value else {
            if entries.removeValue(forKey: key) != nil { keys.removeAll { $0 == key } }
            return
        }
        if entries.updateValue(Entry(value: value, position: position), forKey: key) == nil {
            keys.append(key)
        }
    }

    /// Where `key` was defined: the key itself for a key/value pair or a dotted key, the
    /// `[header]` (the first `[[header]]`) for a table (an array of tables). Nil for an unknown
    /// key or one set in code.
    public func position(of key: String) -> TOMLPosition? {
        entries[key]?.position
    }

    public static func == (lhs: TOMLTable, rhs: TOMLTable) -> Bool {
        lhs.keys == rhs.keys && lhs.keys.allSatisfy { lhs.entries[$0]?.value == rhs.entries[$0]?.value }
    }
}

extension TOMLTable: ExpressibleByDictionaryLiteral {
    /// A table with these keys in this order (a repeated key keeps its first place, last value).
    public init(dictionaryLiteral elements: (String, TOMLValue)...) {
        for (key, value) in elements { self[key] = value }
    }
}

/// A place in a document: 1-based line, and 1-based column counted in Unicode scalars.
public struct TOMLPosition: Sendable, Hashable, CustomStringConvertible {
    public let line: Int
    public let column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "line \(line), column \(column)" }
}

/// Why a document is not TOML 1.0, and where: 1-based line, and 1-based column counted in
/// Unicode scalars.
public struct TOMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public let line: Int
    public let column: Int
    /// What was expected and what was found, such as `expected '=' after key "port", found '1'`.
    public let message: String

    public init(line: Int, column: Int, message: String) {
        self.line = line
        self.column = column
        self.message = message
    }

    public var position: TOMLPosition { TOMLPosition(line: line, column: column) }

    /// `line 3, column 7: duplicate key "port" (first defined on line 2)`.
    public var description: String { "line \(line), column \(column): \(message)" }
}
