import TOMLReader
import Testing

@Suite struct ValueAccessorTests {
    @Test func accessorsReadOnlyTheirKind() throws {
        let table = try parse(
            "s = \"x\"\ni = 42\nbig = 9223372036854775807\nf = 2.5\nb = true\nd = 1979-05-27\na = [1]\nt = { k = 1 }")
        #expect(table["s"]?.string == "x" && table["i"]?.string == nil)
        #expect(table["i"]?.int == 42 && table["i"]?.int64 == 42 && table["f"]?.int == nil && table["s"]?.int == nil)
        #expect(table["big"]?.int == Int(exactly: Int64.max))
        #expect(table["f"]?.double == 2.5 && table["i"]?.double == 42.0 && table["b"]?.double == nil)
        #expect(table["b"]?.bool == true && table["i"]?.bool == nil)
        #expect(table["d"]?.dateTime == "1979-05-27" && table["d"]?.string == nil)
        #expect(table["a"]?.array == [1] && table["t"]?.array == nil)
        #expect(table["t"]?.table == ["k": 1] && table["a"]?.table == nil)
        let names = ["s", "i", "f", "b", "d", "a", "t"].compactMap { table[$0]?.typeName }
        #expect(names == ["string", "integer", "float", "boolean", "date-time", "array", "inline table"])
    }

    @Test func literalsBuildValues() {
        let value: TOMLValue = ["a": 1, "b": [true, 2.5, "x"]]
        #expect(value == .table(["a": .integer(1), "b": .array([.boolean(true), .float(2.5), .string("x")])]))
    }
}

@Suite struct TableEditingTests {
    @Test func subscriptSetReplacesAppendsAndRemoves() throws {
        var table = try parse("a = 1\nb = 2\nc = 3")
        table["b"] = "two"
        table["d"] = 4
        #expect(table.keys == ["a", "b", "c", "d"])
        #expect(table["b"] == "two")
        // A value set in code has no position; the others keep theirs.
        #expect(table.position(of: "b") == nil && table.position(of: "c") == TOMLPosition(line: 3, column: 1))
        table["a"] = nil
        table["missing"] = nil
        #expect(table.keys == ["b", "c", "d"] && table.count == 3 && table["a"] == nil)
        table.setValue(5, forKey: "e", position: TOMLPosition(line: 9, column: 2))
        #expect(table.position(of: "e") == TOMLPosition(line: 9, column: 2))
    }

    @Test func mergingASectionAsTheConfigLoaderDoes() throws {
        // A drop-in's [section] keys replace the defaults' one by one; the table is a value.
        var root = try parse("[site]\nhost = \"127.0.0.1\"\nport = 1883\n[hub]\nport = 8883")
        let dropIn = try parse("[site]\nport = 1884\ntopics = [\"x\"]")
        var site = try #require(root["site"]?.table)
        for key in try #require(dropIn["site"]?.table).keys { site[key] = dropIn["site"]?.table?[key] }
        root["site"] = .table(site)
        #expect(root["site"] == ["host": "127.0.0.1", "port": 1884, "topics": ["x"]])
        #expect(root.keys == ["site", "hub"])
    }

    @Test func equalityComparesKeysInOrderAndValuesOnly() throws {
        let parsed = try parse("[t]\na = 1\nb = { c = 2 }")
        #expect(parsed == ["t": ["a": 1, "b": ["c": 2]]])  // positions and isInline are not compared
        #expect(try parse("a = 1\nb = 2") != parse("b = 2\na = 1"))
        #expect(try parse("a = 1") != parse("a = 1.0"))
        #expect(TOMLTable() == [:] && TOMLTable().isEmpty && TOMLTable().position == nil)
    }

    @Test func errorsDescribeThemselves() {
        let error = TOMLError(line: 3, column: 7, message: #"duplicate key "port" (first defined on line 2)"#)
        #expect(error.description == #"line 3, column 7: duplicate key "port" (first defined on line 2)"#)
        #expect(error.position == TOMLPosition(line: 3, column: 7))
        #expect(
            parseError("a = 1\na = 2")?.description == #"line 2, column 1: duplicate key "a" (first defined on line 1)"#
        )
    }
}

@Suite struct JSONTextTests {
    @Test func rendersEveryKindOfValue() throws {
        let table = try parse(
            #"""
            s = "quote \" backslash \\ tab \t newline \n bell \u0007 del \u007F é 😀"
            i = -9223372036854775808
            f = [0.1, 1e20, 1e-7, -0.0, 100.0, 5e-324, inf, -inf, nan]
            b = [true, false]
            d = [1979-05-27T07:32:00Z, 07:32:00]
            t = { z = 1, a = {} }
            e = []
            """#)
        #expect(
            table.jsonText()
                == #"{"s":"quote \" backslash \\ tab \t newline \n bell \u0007 del "#
                + "\u{7F}"
                + #" é 😀","i":-9223372036854775808,"f":[0.1,1e+20,1e-07,-0.0,100.0,5e-324,"inf","-inf","nan"],"#
                + #""b":[true,false],"d":["1979-05-27T07:32:00Z","07:32:00"],"t":{"z":1,"a":{}},"e":[]}"#)
    }

    @Test func sortsKeysByCodePoint() throws {
        let table = try parse("b = 1\na = 2\n\"é\" = 3\nZ = 4\n\"\" = 5\n[t]\ny = 1\nx = 2")
        #expect(table.jsonText(sortedKeys: true) == #"{"":5,"Z":4,"a":2,"b":1,"t":{"x":2,"y":1},"é":3}"#)
        #expect(table.jsonText(sortedKeys: false) == #"{"b":1,"a":2,"é":3,"Z":4,"":5,"t":{"y":1,"x":2}}"#)
    }

    @Test func escapesEveryControlCharacter() throws {
        let text = String(decoding: (0..<0x20).map { UInt8($0) }, as: UTF8.self)
        let json = TOMLValue.string(text).jsonText()
        #expect(json.utf8.allSatisfy { $0 >= 0x20 })
        #expect(JSON(parsing: json) == .string(text))
        // StrictJSON's one way of escaping (the project's JSON writer): \t \n \r, the rest \u00xx.
        #expect(json.hasPrefix(#""\u0000\u0001"#) && json.contains(#"\u0008\t\n\u000b\u000c\r"#))
    }

    @Test func floatsReadBackExactly() throws {
        for number in [
            0.1, 1.0 / 3, 2.0 / 3e300, 123_456_789.123_456_79, -1e-300, .leastNonzeroMagnitude,
            .greatestFiniteMagnitude,
        ] {
            let json = TOMLValue.float(number).jsonText()
            #expect(Double(json) == number, "\(json)")
            #expect(JSON(parsing: json) == .float(number))
        }
    }
}
