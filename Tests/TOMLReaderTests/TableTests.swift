import TOMLReader
import Testing

@Suite struct KeyAndTableTests {
    @Test func keysKeepSourceOrder() throws {
        let table = try parse("b = 1\na = 2\nc.z = 3\nc.y = 4\n[zz]\n[aa]\nx = 1\n[[mm]]")
        #expect(table.keys == ["b", "a", "c", "zz", "aa", "mm"])
        #expect(table["c"]?.table?.keys == ["z", "y"])
    }

    @Test func bareQuotedAndDottedKeys() throws {
        let table = try parse(
            #"""
            bare_key-1 = 1
            1234 = 2
            "127.0.0.1" = 3
            'literal "key"' = 4
            "" = 5
            a . "b.c" . d = 6
            3.14159 = "pi"
            "\u0041" = 7
            """#)
        #expect(table.keys == ["bare_key-1", "1234", "127.0.0.1", "literal \"key\"", "", "a", "3", "A"])
        #expect(table["a"] == ["b.c": ["d": 6]])
        #expect(table["3"] == ["14159": "pi"])
        #expect(table[""] == 5)
    }

    @Test func headersMakeNestedTables() throws {
        let table = try parse("[a.b.c]\nx = 1\n[a]\ny = 2\n[ a . 'q r' ]\nz = 3")
        #expect(table == ["a": ["b": ["c": ["x": 1]], "y": 2, "q r": ["z": 3]]])
        #expect(table["a"]?.table?.isInline == false)
    }

    @Test func dottedKeysMakeTablesAndHeadersMayAddSubTables() throws {
        let table = try parse(
            "[fruit]\napple.color = \"red\"\napple.taste.sweet = true\n[fruit.apple.texture]\nsmooth = true")
        #expect(
            table == [
                "fruit": ["apple": ["color": "red", "taste": ["sweet": true], "texture": ["smooth": true]]]
            ])
    }

    @Test func arraysOfTables() throws {
        let table = try parse(
            #"""
            [[fruits]]
            name = "apple"
            [fruits.physical]
            color = "red"
            [[fruits.varieties]]
            name = "red delicious"
            [[fruits.varieties]]
            name = "granny smith"
            [[fruits]]
            name = "banana"
            [[fruits.varieties]]
            name = "plantain"
            [[empty]]
            [[empty]]
            """#)
        let expected: TOMLValue = [
            [
                "name": "apple", "physical": ["color": "red"],
                "varieties": [["name": "red delicious"], ["name": "granny smith"]],
            ],
            ["name": "banana", "varieties": [["name": "plantain"]]],
        ]
        #expect(table["fruits"] == expected)
        #expect(table["empty"] == [[:], [:]])
    }

    @Test func positionsOfKeysAndTables() throws {
        let text = """
            top = 1
            [server]
              port = 8883   # line 3
            [a.b]
            [a]
            x.y = 2
            [[list]]
            [[list]]
            inline = { "é" = 1, b = 2 }
            """
        let table = try parse(text)
        #expect(table.position == nil)
        #expect(table.position(of: "top") == TOMLPosition(line: 1, column: 1))
        #expect(table.position(of: "server") == TOMLPosition(line: 2, column: 1))
        let server = try #require(table["server"]?.table)
        #expect(server.position == TOMLPosition(line: 2, column: 1))
        #expect(server.position(of: "port") == TOMLPosition(line: 3, column: 3))
        #expect(server.position(of: "missing") == nil)
        // `a` was implied by [a.b] on line 4 and defined by [a] on line 5.
        let a = try #require(table["a"]?.table)
        #expect(table.position(of: "a") == TOMLPosition(line: 5, column: 1))
        #expect(a.position == TOMLPosition(line: 5, column: 1))
        #expect(a.position(of: "b") == TOMLPosition(line: 4, column: 1))
        // A table made by a dotted key is where that key is.
        #expect(a.position(of: "x") == TOMLPosition(line: 6, column: 1))
        #expect(a["x"]?.table?.position == TOMLPosition(line: 6, column: 1))
        #expect(a["x"]?.table?.position(of: "y") == TOMLPosition(line: 6, column: 3))
        // An array of tables is where its first [[header]] is; each element at its own.
        #expect(table.position(of: "list") == TOMLPosition(line: 7, column: 1))
        #expect(table["list"]?.array?.map { $0.table?.position?.line } == [7, 8])
        // Columns count Unicode scalars, not bytes.
        let inline = try #require(table["list"]?.array?.last?.table?["inline"]?.table)
        #expect(inline.position == TOMLPosition(line: 9, column: 10))
        #expect(inline.position(of: "b") == TOMLPosition(line: 9, column: 21))
    }

    @Test func implicitTablesHaveNoPosition() throws {
        let table = try parse("[a.b]\nx = 1")
        #expect(table["a"]?.table?.position == nil)
        #expect(table.position(of: "a") == TOMLPosition(line: 1, column: 1))
    }

    /// Each of TOML 1.0's rules on defining a table once, with where the error is reported.
    @Test(
        arguments: [
            ("a = 1\nb = 2\na = 3", 3, 1, #"duplicate key "a" (first defined on line 1)"#),
            ("[s]\nport = 1\n\nport = 2", 4, 1, #"duplicate key "port" (first defined on line 2)"#),
            ("a = 1\n\"a\" = 2", 2, 1, #"duplicate key "a" (first defined on line 1)"#),
            ("a.b = 1\na.b = 2", 2, 1, #"duplicate key "a.b" (first defined on line 1)"#),
            ("a.b = 1\na = 2", 2, 1, #"duplicate key "a" (first defined on line 1, as a table)"#),
            ("a = 1\na.b = 2", 2, 1, #"cannot set "a.b": "a" is already an integer (line 1)"#),
            ("[a]\nx = 1\n[a]", 3, 1, "table [a] is defined twice (first on line 1)"),
            ("[a.b]\n[a]\n[a.b]", 3, 1, "table [a.b] is defined twice (first on line 1)"),
            (
                "[a]\nb.c = 1\n[a.b]", 3, 1,
                "table [a.b] cannot be defined by a header: dotted keys already defined it on line 2"
            ),
            (
                "[a.b]\nx = 1\n[a]\nb.y = 2", 4, 1,
                #"cannot set "b.y" with a dotted key: table [a.b] is defined by its header on line 1"#
            ),
            (
                "a = []\n[[a]]", 2, 1,
                #"cannot append to "a" with [[a]]: it is a static array (line 1), which cannot be extended"#
            ),
            ("a = [{ b = 1 }]\n[a.c]", 2, 2, #"cannot define [a.c]: "a" is already a static array (line 1)"#),
            ("a = { b = 1 }\n[a]", 2, 1, #"cannot define table [a]: key "a" is already an inline table (line 1)"#),
            (
                "a = { b = 1 }\n[a.c]", 2, 2,
                #"cannot define [a.c]: "a" is already an inline table (line 1), which cannot be extended"#
            ),
            (
                "a = { b = 1 }\na.c = 2", 2, 1,
                #"cannot set "a.c": "a" is already an inline table (line 1), which cannot be extended"#
            ),
            ("[[a]]\n[a]", 2, 1, "[a] is an array of tables (first [[a]] on line 1): add to it with [[a]]"),
            ("[a]\n[[a]]", 2, 1, #"cannot define [[a]]: "a" is already a table (line 1), not an array of tables"#),
            ("[[a]]\nb = 1\n[a.b]", 3, 1, #"cannot define table [a.b]: key "a.b" is already an integer (line 2)"#),
            ("[a]\n[[b]]\n[a]\nb.x = 1", 3, 1, "table [a] is defined twice (first on line 1)"),
            ("[[a.b]]\n[a]\nb.c = 1", 3, 1, #"cannot set "b.c" with a dotted key: "b" is an array of tables (line 1)"#),
            ("x = 1\n[x.y]", 2, 2, #"cannot define [x.y]: "x" is already an integer (line 1)"#),
            ("x = 1\n[[x]]", 2, 1, #"cannot define [[x]]: key "x" is already an integer (line 1)"#),
        ] as [(String, Int, Int, String)])
    func tableRules(document: String, line: Int, column: Int, message: String) {
        let error = parseError(document)
        #expect(error?.line == line && error?.column == column, "\(String(describing: error))")
        #expect(error?.message.hasPrefix(message) == true, "\(String(describing: error))")
    }

    @Test func allowedRedefinitions() throws {
        // An implied table may be defined later, and extended by dotted keys from its parent.
        #expect(try parse("[a.b.c]\n[a]\n[a.b]").count == 1)
        #expect(try parse("[a.b.c]\nz = 9\n[a]\nb.d = 1")["a"] == ["b": ["c": ["z": 9], "d": 1]])
        // A new element of an array of tables starts its sub-tables afresh.
        #expect(try parse("[[a]]\n[a.b]\n[[a]]\n[a.b]")["a"] == [["b": [:]], ["b": [:]]])
        // Headers may go through tables made by dotted keys.
        #expect(try parse("a.b.c = 1\n[a.b.d]\ne = 2")["a"] == ["b": ["c": 1, "d": ["e": 2]]])
    }
}

@Suite struct DocumentSyntaxTests {
    @Test(
        arguments: [
            ("a = 1 b = 2", 1, 7, "expected a newline or a comment after the value of key \"a\", found 'b'"),
            ("[a] b = 1", 1, 5, "expected a newline or a comment after the table header, found 'b'"),
            ("port 8883", 1, 6, "expected '=' after key \"port\", found '8'"),
            ("port\n= 1", 1, 5, "expected '=' after key \"port\", found end of line"),
            ("a = # nothing", 1, 5, "expected a value after '=' for key \"a\", found '#'"),
            ("a =", 1, 4, "expected a value after '=' for key \"a\", found end of input"),
            ("= 1", 1, 1, "expected a key (letters, digits, '_', '-' or a quoted string), found '='"),
            ("a. = 1", 1, 4, "expected a key after '.' (letters, digits, '_', '-' or a quoted string), found '='"),
            ("[]", 1, 2, "expected a key (letters, digits, '_', '-' or a quoted string), found ']'"),
            ("[a", 1, 3, "expected ']' to close the table header [a], found end of input"),
            ("[a]]", 1, 4, "expected a newline or a comment after the table header, found ']'"),
            ("[[a] ]", 1, 5, "expected ']]' to close the array-of-tables header [[a]], found a space"),
            ("[ [a]]", 1, 3, "expected a key (letters, digits, '_', '-' or a quoted string), found '['"),
            ("\"\"\"k\"\"\" = 1", 1, 1, "a multi-line string cannot be a key"),
            ("k\u{E9} = 1", 1, 2, "expected '=' after key \"k\", found 'é'"),
            ("a = 1\r\nb = 2\rc = 3", 2, 6, "a carriage return must be followed by a line feed"),
            ("# bell\u{7}\na = 1", 1, 7, "control character U+0007 is not allowed in a comment"),
            ("# del\u{7F}", 1, 6, "control character U+007F is not allowed in a comment"),
            ("a = 1 # x\rb", 1, 10, "a carriage return is not allowed in a comment"),
            (
                "\u{0}", 1, 1,
                "expected a key (letters, digits, '_', '-' or a quoted string), found control character U+0000"
            ),
            ("a = \"x\" \"y\"", 1, 9, "expected a newline or a comment after the value of key \"a\", found '\"'"),
            ("a = yes", 1, 5, "invalid value \"yes\": a string needs quotes, a boolean is true or false"),
            ("a = ]", 1, 5, "expected a value, found ']'"),
        ] as [(String, Int, Int, String)])
    func syntaxErrors(document: String, line: Int, column: Int, message: String) {
        let error = parseError(document)
        #expect(error?.line == line && error?.column == column, "\(String(describing: error))")
        #expect(error?.message == message, "\(String(describing: error))")
    }

    @Test func whitespaceCommentsAndLineEnds() throws {
        let text = "\t# comment with\ttab and é\r\n  a\t=\t1\t# end\r\n\r\n[ t ]\t# header\r\nb = 2"
        #expect(try parse(text) == ["a": 1, "t": ["b": 2]])
        #expect(try parse("") == TOMLTable())
        #expect(try parse("\n\n# only comments\n   \n").isEmpty)
    }

    @Test func bytesMustBeUTF8() {
        let cases: [([UInt8], Int, Int)] = [
            (Array("a = \"".utf8) + [0xFF, 0x22], 1, 6),
            (Array("a = 1\n# é".utf8) + [0xC3], 2, 4),
            (Array("a = '".utf8) + [0xC0, 0x80, 0x27], 1, 6),
            (Array("a = 'x".utf8) + [0xED, 0xA0, 0x80, 0x27], 1, 7),
            (Array("a = '".utf8) + [0xF4, 0x90, 0x80, 0x80, 0x27], 1, 6),
            (Array("a = '".utf8) + [0xE2, 0x28, 0xA1, 0x27], 1, 6),
            ([0x80], 1, 1),
        ]
        for (bytes, line, column) in cases {
            do {
                _ = try TOMLTable(parsing: bytes)
                Issue.record("parsed \(bytes)")
            } catch {
                #expect(error.line == line && error.column == column, "\(bytes): \(error)")
                #expect(error.message.hasPrefix("invalid UTF-8"), "\(bytes): \(error)")
            }
        }
    }

    @Test func bytesAndStringsReadAlike() throws {
        let text = "k = \"é😀\"\n[t]\nx = [1, 2.5]"
        #expect(try TOMLTable(parsing: Array(text.utf8)) == parse(text))
        // A byte order mark is skipped.
        #expect(try TOMLTable(parsing: [0xEF, 0xBB, 0xBF] + Array("a = 1".utf8)) == ["a": 1])
        #expect(try parse("\u{FEFF}a = 1") == ["a": 1])
    }
}
