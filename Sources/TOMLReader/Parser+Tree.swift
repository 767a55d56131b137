/// A table while the document is read. A class, so that headers and dotted keys can reach into
/// it by path; `table(inline:)` turns it into the `TOMLTable` handed out.
final class Node {
    /// How the table came to be, which decides what may still define or extend it (TOML 1.0,
    /// "Table"; the same rules as Python's `tomllib`).
    enum Origin {
        /// Only named on the way to a header's table (`a` in `[a.b]`): a later `[a]` may
        /// define it, dotted keys may extend it (and then it is `.dotted`).
        case implied
        /// Defined by `[a]` or `[[a]]`, or the root: defined once, and dotted keys from an
        /// enclosing table may not add to it.
        case header
        /// Made by a dotted key (`a.b = 1` makes `a`): more dotted keys may extend it, no
        /// `[a]` may define it (a header may add sub-tables, `[a.c]`).
        case dotted
        /// An inline table being read: complete, and unchangeable, once `}` closes it.
        case inline
    }

    enum Slot {
        case value(TOMLValue)
        case table(Node)
        case tables(NodeArray)
    }

    struct Entry {
        var slot: Slot
        var position: TOMLPosition
    }

    var origin: Origin
    /// Where the table was defined (nil for the root and implied tables).
    var position: TOMLPosition?
    /// Its keys from the root (from the inline table, inside one), for messages.
    let path: [String]
    /// How many tables and arrays it is inside.
    let depth: Int
    private(set) var keys: [String] = []
    var entries: [String: Entry] = [:]

    init(origin: Origin, position: TOMLPosition?, path: [String], depth: Int? = nil) {
        self.origin = origin
        self.position = position
        self.path = path
        self.depth = depth ?? path.count
    }

    func insert(_ key: String, _ slot: Slot, at position: TOMLPosition) {
        keys.append(key)
        entries[key] = Entry(slot: slot, position: position)
    }

    /// The finished table; `inline` for an inline table and every table inside one.
    func table(inline: Bool) -> TOMLTable {
        var table = TOMLTable()
        table.isInline = inline
        table.position = position
        for key in keys {
            guard let entry = entries[key] else { continue }
            let value: TOMLValue =
                switch entry.slot {
                case .value(let value): value
                case .table(let node): .table(node.table(inline: inline))
                case .tables(let array): .array(array.elements.map { .table($0.table(inline: inline)) })
                }
            table.setValue(value, forKey: key, position: entry.position)
        }
        return table
    }
}

/// An array of tables, `[[a]]`: never empty.
final class NodeArray {
    private(set) var elements: [Node]
    /// The element the latest `[[a]]` started; `[a.b]` and `[[a.b]]` go into it.
    var last: Node { elements[elements.count - 1] }

    init(_ first: Node) {
        elements = [first]
    }

    func append(_ node: Node) {
        elements.append(node)
    }
}

extension Parser {
    /// `[a.b.c]`: walks to `a.b` and defines `c` there, which must not be defined yet (an
    /// implied table, named by an earlier `[a.b.c.d]`, may be).
    func defineTable(
        _ path: [KeySegment], root: Node, header: TOMLPosition, at headerOffset: Int
    ) throws(TOMLError) -> Node {
        let parent = try walkToParent(of: path, from: root, header: header, what: "[\(spelling(path))]")
        let last = path[path.count - 1]  // parseKey returns at least one segment
        guard let entry = parent.entries[last.name] else {
            return try addTable(last, origin: .header, at: header, to: parent)
        }
        let name = spelling(path)
        let line = entry.position.line
        switch entry.slot {
        case .table(let table) where table.origin == .implied:
            table.origin = .header
            table.position = header
            parent.entries[last.name]?.position = header
            return table
        case .table(let table) where table.origin == .dotted:
            throw error(
                "table [\(name)] cannot be defined by a header: dotted keys already defined it on line \(line) "
                    + "(a header may only add sub-tables to it)", at: headerOffset)
        case .table:
            throw error("table [\(name)] is defined twice (first on line \(line))", at: headerOffset)
        case .tables:
            throw error(
                "[\(name)] is an array of tables (first [[\(name)]] on line \(line)): add to it with [[\(name)]]",
                at: headerOffset)
        case .value(let value):
            throw error(
                "cannot define table [\(name)]: key \(display(path)) is already \(describe(value, line: line))",
                at: headerOffset)
        }
    }

    /// `[[a.b.c]]`: walks to `a.b` and appends a table to the array of tables `c` there,
    /// starting it if `c` is not defined yet.
    func appendTable(
        _ path: [KeySegment], root: Node, header: TOMLPosition, at headerOffset: Int
    ) throws(TOMLError) -> Node {
        let parent = try walkToParent(of: path, from: root, header: header, what: "[[\(spelling(path))]]")
        let last = path[path.count - 1]  // parseKey returns at least one segment
        guard let entry = parent.entries[last.name] else {
            try checkDepth(of: parent, at: last.offset)
            let table = Node(
                origin: .header, position: header, path: parent.path + [last.name], depth: parent.depth + 1)
            parent.insert(last.name, .tables(NodeArray(table)), at: header)
            return table
        }
        let name = spelling(path)
        let line = entry.position.line
        switch entry.slot {
        case .tables(let array):
            let table = Node(
                origin: .header, position: header, path: parent.path + [last.name], depth: parent.depth + 1)
            array.append(table)
            return table
        case .table:
            throw error(
                "cannot define [[\(name)]]: \(display(path)) is already a table (line \(line)), not an array of tables",
                at: headerOffset)
        case .value(.array):
            throw error(
                "cannot append to \(display(path)) with [[\(name)]]: it is a static array (line \(line)), "
                    + "which cannot be extended", at: headerOffset)
        case .value(let value):
            throw error(
                "cannot define [[\(name)]]: key \(display(path)) is already \(describe(value, line: line))",
                at: headerOffset)
        }
    }

    /// `a.b.c = value` in `table`: walks to (or makes) `a.b` and sets `c` there, which must not
    /// be defined yet.
    func assign(_ value: TOMLValue, to path: [KeySegment], in table: Node) throws(TOMLError) {
        var node = table
        for (count, segment) in path.dropLast().enumerated() {
            let prefix = path.prefix(count + 1)
            guard let entry = node.entries[segment.name] else {
                node = try addTable(segment, origin: .dotted, at: segment.position, to: node)
                continue
            }
            let line = entry.position.line
            switch entry.slot {
            case .table(let child) where child.origin == .dotted:
                node = child
            case .table(let child) where child.origin == .implied:
                child.origin = .dotted
                child.position = segment.position
                node = child
            case .table(let child):
                throw error(
                    "cannot set \(display(path)) with a dotted key: table [\(spelling(names: child.path))] is defined "
                        + "by its header on line \(line); set the key under that header", at: segment.offset)
            case .tables:
                throw error(
                    "cannot set \(display(path)) with a dotted key: \(display(prefix)) is an array of tables "
                        + "(line \(line))", at: segment.offset)
            case .value(let value):
                throw error(
                    "cannot set \(display(path)): \(display(prefix)) is already \(describe(value, line: line))",
                    at: segment.offset)
            }
        }
        let last = path[path.count - 1]  // parseKey returns at least one segment
        if let entry = node.entries[last.name] {
            let what =
                switch entry.slot {
                case .value: ""
                case .table: ", as a table"
                case .tables: ", as an array of tables"
                }
            throw error(
                "duplicate key \(display(path)) (first defined on line \(entry.position.line)\(what))",
                at: path[0].offset)
        }
        node.insert(last.name, .value(value), at: last.position)
    }

    /// Walks a header's path up to its last key, making implied tables on the way and going
    /// into the latest element of an array of tables.
    private func walkToParent(
        of path: [KeySegment], from root: Node, header: TOMLPosition, what: String
    ) throws(TOMLError) -> Node {
        var node = root
        for (count, segment) in path.dropLast().enumerated() {
            guard let entry = node.entries[segment.name] else {
                node = try addTable(segment, origin: .implied, at: header, to: node)
                continue
            }
            switch entry.slot {
            case .table(let child): node = child
            case .tables(let array): node = array.last
            case .value(let value):
                let prefix = path.prefix(count + 1)
                throw error(
                    "cannot define \(what): \(display(prefix)) is already "
                        + describe(value, line: entry.position.line), at: segment.offset)
            }
        }
        return node
    }

    private func addTable(
        _ segment: KeySegment, origin: Node.Origin, at position: TOMLPosition, to parent: Node
    ) throws(TOMLError) -> Node {
        try checkDepth(of: parent, at: segment.offset)
        let table = Node(
            origin: origin, position: origin == .implied ? nil : position, path: parent.path + [segment.name],
            depth: parent.depth + 1)
        parent.insert(segment.name, .table(table), at: position)
        return table
    }

    private func checkDepth(of parent: Node, at offset: Int) throws(TOMLError) {
        guard parent.depth < TOMLTable.maximumDepth else {
            throw error("tables are nested more than \(TOMLTable.maximumDepth) deep", at: offset)
        }
    }

    /// "a string (line 3)", "an inline table (line 3), which cannot be extended", for messages.
    private func describe(_ value: TOMLValue, line: Int) -> String {
        switch value {
        case .table(let table) where table.isInline: "an inline table (line \(line)), which cannot be extended"
        case .array: "a static array (line \(line)), which cannot be extended"
        case .integer: "an integer (line \(line))"
        default: "a \(value.typeName) (line \(line))"
        }
    }
}
