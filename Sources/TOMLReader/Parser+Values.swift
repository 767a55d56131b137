extension Parser {
    /// A value, at `depth` tables and arrays deep (for the nesting limit).
    mutating func parseValue(depth: Int) throws(TOMLError) -> TOMLValue {
        switch peek() {
        case ASCII.quote?:
            if peek(1) == ASCII.quote, peek(2) == ASCII.quote { return .string(try parseMultilineBasicString()) }
            return .string(try parseBasicString())
        case ASCII.apostrophe?:
            if peek(1) == ASCII.apostrophe, peek(2) == ASCII.apostrophe {
                return .string(try parseMultilineLiteralString())
            }
            return .string(try parseLiteralString())
        case ASCII.openBracket?:
            return try parseArray(depth: depth)
        case ASCII.openBrace?:
            return try parseInlineTable(depth: depth)
        default:
            return try parseBareValue()
        }
    }

    /// `[ 1, "two", [3.0], { four = 4 }, ]`: any values, over several lines, with comments and a
    /// trailing comma.
    private mutating func parseArray(depth: Int) throws(TOMLError) -> TOMLValue {
        let open = index
        try checkNesting(depth, at: open)
        index += 1
        var elements: [TOMLValue] = []
        while true {
            try skipBlankLines()
            switch peek() {
            case ASCII.closeBracket?:
                index += 1
                return .array(elements)
            case nil:
                throw error("unterminated array (opened on line \(position(of: open).line)): expected ']'", at: index)
            case ASCII.comma?:
                throw error("expected a value or ']' in the array, found ','", at: index)
            default:
                elements.append(try parseValue(depth: depth + 1))
            }
            try skipBlankLines()
            switch peek() {
            case ASCII.comma?:
                index += 1
            case ASCII.closeBracket?:
                index += 1
                return .array(elements)
            case nil:
                throw error("unterminated array (opened on line \(position(of: open).line)): expected ']'", at: index)
            default:
                throw error("expected ',' or ']' after an array element, found \(describe(at: index))", at: index)
            }
        }
    }

    /// `{ a = 1, b.c = "x" }`: on one line (TOML 1.0), no trailing comma; complete once closed.
    private mutating func parseInlineTable(depth: Int) throws(TOMLError) -> TOMLValue {
        let open = index
        try checkNesting(depth, at: open)
        let table = Node(origin: .inline, position: position(of: open), path: [], depth: depth)
        index += 1
        skipWhitespace()
        if peek() == ASCII.closeBrace {
            index += 1
            return .table(table.table(inline: true))
        }
        while true {
            if isAtLineEnd { throw unterminatedInlineTable(opened: open, expected: "a key") }
            try parseKeyValue(in: table)
            skipWhitespace()
            switch peek() {
            case ASCII.comma?:
                index += 1
                skipWhitespace()
                if peek() == ASCII.closeBrace {
                    throw error("a trailing comma is not allowed in an inline table (TOML 1.0)", at: index)
                }
            case ASCII.closeBrace?:
                index += 1
                return .table(table.table(inline: true))
            default:
                if isAtLineEnd { throw unterminatedInlineTable(opened: open, expected: "',' or '}'") }
                throw error("expected ',' or '}' in the inline table, found \(describe(at: index))", at: index)
            }
        }
    }

    private func unterminatedInlineTable(opened open: Int, expected: String) -> TOMLError {
        let place = position(of: open)
        return error(
            "expected \(expected) in the inline table opened at line \(place.line), column \(place.column), found "
                + "\(describe(at: index)); an inline table must be on one line in TOML 1.0", at: index)
    }

    private func checkNesting(_ depth: Int, at offset: Int) throws(TOMLError) {
        guard depth <= TOMLTable.maximumDepth else {
            throw error("arrays and tables are nested more than \(TOMLTable.maximumDepth) deep", at: offset)
        }
    }
}
