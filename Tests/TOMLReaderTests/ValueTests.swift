import TOMLReader
import Testing

@Suite struct StringTests {
    @Test func basicStringEscapes() throws {
        #expect(try value(#""a\bb\tc\nd\fe\rf\"g\\h""#) == .string("a\u{8}b\tc\nd\u{C}e\rf\"g\\h"))
        #expect(try value(#""\u00E9\u20ac \U0001F600 \U0010FFFF \u0000""#) == .string("é€ 😀 \u{10FFFF} \u{0}"))
        #expect(try value("\"tab\\tand a real\ttab\"") == .string("tab\tand a real\ttab"))
        #expect(try value(#""""#) == .string(""))
        #expect(try value(#""日本語 ✓""#) == .string("日本語 ✓"))
    }

    @Test func literalStringsKeepBackslashes() throws {
        #expect(try value(#"'C:\Users\nodejs\templates'"#) == .string(#"C:\Users\nodejs\templates"#))
        #expect(try value(#"'Tom "Dubs" Preston-Werner'"#) == .string(#"Tom "Dubs" Preston-Werner"#))
        #expect(try value("''") == .string(""))
    }

    @Test func multilineBasicStrings() throws {
        // The newline right after the opening quotes is trimmed; the others are kept.
        #expect(
            try value("\"\"\"\nRoses are red\nViolets are blue\"\"\"") == .string("Roses are red\nViolets are blue"))
        // CR LF is read as a line feed, inside strings too.
        #expect(try value("\"\"\"\r\none\r\ntwo\"\"\"") == .string("one\ntwo"))
        // A line-ending backslash eats the newline and the whitespace (and blank lines) after it.
        let folded = "\"\"\"\\\n  The quick brown \\\n\n    fox jumps over \\   \n\t the lazy dog.\\\n  \"\"\""
        #expect(try value(folded) == .string("The quick brown fox jumps over the lazy dog."))
        // Up to two quotes before the closing three, and quotes inside.
        #expect(try value(#""""Here are two: "". Three: ""\".""""#) == .string(#"Here are two: "". Three: """."#))
        #expect(
            try value("\"\"\"\"This,\" she said, \"is pointless.\"\"\"\"\"")
                == .string("\"This,\" she said, \"is pointless.\"\""))
        #expect(try value(#"""" "" """"#) == .string(#" "" "#))
        #expect(try value(#""""\tescaped\u0041""""#) == .string("\tescapedA"))
    }

    @Test func multilineLiteralStrings() throws {
        #expect(
            try value("'''\nThe first newline is\n   trimmed.\n'''") == .string("The first newline is\n   trimmed.\n"))
        #expect(try value(#"'''I [dw]on't need \d{2} apples'''"#) == .string(#"I [dw]on't need \d{2} apples"#))
        #expect(try value("''''That,' she said.''''") == .string("'That,' she said.'"))
        #expect(try value("'''a\\\nb'''") == .string("a\\\nb"))
    }

    @Test func controlCharactersInStringsAreErrors() {
        for (document, column) in [
            ("v = \"a\u{1}b\"", 7), ("v = 'a\u{7F}b'", 7), ("v = \"\"\"a\u{0}\"\"\"", 9), ("v = '''\u{1B}'''", 8),
            ("v = \"a\rb\"", 7), ("v = \"\"\"a\rb\"\"\"", 9),
        ] {
            let error = parseError(document)
            #expect(
                error?.line == 1 && error?.column == column,
                "\(document.debugDescription): \(String(describing: error))")
        }
        #expect(
            parseError("v = \"\u{1}\"")?.message
                == #"control character U+0001 is not allowed in a string; write it as \u0001"#)
    }

    @Test func invalidEscapesAreErrors() {
        let cases: [(String, Int, String)] = [
            (#"v = "\x41""#, 6, #"invalid escape '\x'"#),
            (#"v = "\e""#, 6, #"invalid escape '\e'"#),
            ("v = \"\\\u{1}\"", 6, #"invalid escape '\' followed by control character U+0001"#),
            ("v = \"\\é\"", 6, #"invalid escape '\' followed by 'é'"#),
            (#"v = "\ ""#, 6, #"invalid escape '\' followed by a space"#),
            (#"v = "\u12G4""#, 10, #"\u needs 4 hexadecimal digits, found 'G'"#),
            (#"v = "\U0001F60""#, 15, #"\U needs 8 hexadecimal digits, found '"'"#),
            (#"v = "\uD800""#, 6, #"\u escape U+D800 is a surrogate, not a Unicode scalar value"#),
            (#"v = "\uDFFF""#, 6, #"\u escape U+DFFF is a surrogate"#),
            (#"v = "\U00110000""#, 6, #"\U escape U+110000 is past U+10FFFF"#),
            (#"v = """\x""""#, 8, #"invalid escape '\x'"#),
            (#"v = """a\ b""""#, 9, #"invalid escape '\' followed by a space"#),
        ]
        for (document, column, message) in cases {
            let error = parseError(document)
            #expect(error?.column == column, "\(document)")
            #expect(error?.message.hasPrefix(message) == true, "\(document): \(String(describing: error))")
        }
    }

    @Test func unterminatedStrings() {
        #expect(parseError("v = \"abc\nw = 1")?.position == TOMLPosition(line: 1, column: 9))
        #expect(
            parseError("v = 'abc")?.message.hasPrefix("unterminated literal string (opened at line 1, column 5)")
                == true)
        let error = parseError("v = \"\"\"abc\n\nmore")
        #expect(error?.line == 3 && error?.column == 5)
        #expect(error?.message.hasPrefix("unterminated multi-line string (opened at line 1, column 5)") == true)
        #expect(parseError("v = '''abc''''''")?.message.hasPrefix("too many quotes") == true)
        #expect(parseError("v = \"x")?.message.hasSuffix("found end of input") == true)
    }
}

@Suite struct NumberTests {
    @Test(
        arguments: [
            ("+99", 99), ("42", 42), ("0", 0), ("-17", -17), ("+0", 0), ("-0", 0), ("1_000", 1000),
            ("5_349_221", 5_349_221), ("1_2_3_4_5", 12345), ("0xDEADBEEF", 0xDEAD_BEEF), ("0xdead_beef", 0xDEAD_BEEF),
            ("0x00FF", 255), ("0o01234567", 0o1234567), ("0o755", 0o755), ("0b11010110", 0b1101_0110),
            ("9223372036854775807", Int64.max), ("-9223372036854775808", Int64.min), ("0x7FFFFFFFFFFFFFFF", Int64.max),
            ("0o777777777777777777777", Int64.max),
        ] as [(String, Int64)])
    func integers(literal: String, expected: Int64) throws {
        #expect(try value(literal) == .integer(expected))
    }

    @Test(arguments: [
        "01", "00", "-01", "0_0", "1__0", "1_", "_1", "+0x1", "-0o7", "0x", "0xG", "0o8", "0b2", "0b_1", "0x1_",
        "9223372036854775808", "-9223372036854775809", "0x8000000000000000", "99999999999999999999", "++1", "1-2",
        "0X10", "0B1", "1a",
    ])
    func invalidIntegers(literal: String) {
        let error = parseError("v = \(literal)")
        #expect(error?.line == 1, "\(literal)")
        #expect(
            error?.message.hasPrefix("invalid") == true || error?.message.hasPrefix("integer") == true, "\(literal)")
    }

    @Test func overflowNamesTheRange() {
        let message = parseError("v = 9223372036854775808")?.message
        #expect(message?.hasPrefix(#"integer "9223372036854775808" does not fit in 64 bits"#) == true)
        #expect(message?.hasSuffix("(-9223372036854775808 to 9223372036854775807)") == true)
    }

    @Test(
        arguments: [
            ("+1.0", 1.0), ("3.1415", 3.1415), ("-0.01", -0.01), ("5e+22", 5e22), ("1e06", 1e6), ("-2E-2", -0.02),
            ("6.626e-34", 6.626e-34), ("224_617.445_991_228", 224_617.445_991_228), ("0e0", 0), ("1e-0_1", 0.1),
            ("0.1", 0.1), ("1.7976931348623157e308", .greatestFiniteMagnitude), ("1e400", .infinity),
            ("inf", .infinity), ("+inf", .infinity), ("-inf", -.infinity),
        ] as [(String, Double)])
    func floats(literal: String, expected: Double) throws {
        #expect(try value(literal) == .float(expected))
    }

    @Test func signedZerosAndNaN() throws {
        #expect(try value("-0.0").double?.sign == .minus)
        #expect(try value("+0.0").double?.sign == .plus)
        for literal in ["nan", "+nan", "-nan"] { #expect(try value(literal).double?.isNaN == true) }
    }

    @Test(arguments: [
        "1.", ".5", "1.e5", "1e", "1e+", "1.5e", "00.5", "01.5", "1__0.5", "1.0_", "1._0", "1e_5", "1.5.3", "infinity",
        "Inf", "NaN", "nan_", "+-1.0", "1e5.5",
    ])
    func invalidFloats(literal: String) {
        let error = parseError("v = \(literal)")
        #expect(
            error?.line == 1 && error?.message.hasPrefix("invalid") == true, "\(literal): \(String(describing: error))")
    }

    @Test func numberErrorsSayWhatIsWrong() {
        #expect(parseError("v = 012")?.message == #"invalid number "012": leading zeros are not allowed"#)
        #expect(parseError("v = 1__2")?.message == #"invalid number "1__2": '_' must be between two digits"#)
        #expect(parseError("v = 1__2")?.column == 6)
        #expect(
            parseError("v = -0x1")?.message.hasSuffix("hexadecimal, octal and binary integers take no sign") == true)
        #expect(parseError("v = 0o9")?.message == #"invalid number "0o9": expected an octal digit, found '9'"#)
        #expect(
            parseError("v = 3.")?.message
                == #"invalid number "3.": expected a digit after '.', found the end of the number"#)
    }
}

@Suite struct BooleanAndDateTimeTests {
    @Test func booleans() throws {
        #expect(try value("true") == .boolean(true))
        #expect(try value("false") == .boolean(false))
        for literal in ["True", "TRUE", "yes", "truee", "t"] {
            #expect(parseError("v = \(literal)")?.message.hasPrefix("invalid value \"\(literal)\"") == true)
        }
    }

    @Test(arguments: [
        "1979-05-27T07:32:00Z", "1979-05-27T00:32:00-07:00", "1979-05-27T00:32:00.999999-07:00", "1979-05-27 07:32:00Z",
        "1979-05-27t07:32:00z", "1979-05-27T07:32:00+14:00", "1979-05-27T07:32:00", "1979-05-27T00:32:00.999999",
        "1979-05-27", "2000-02-29", "2024-12-31", "07:32:00", "00:32:00.999999", "23:59:59.123456789", "0000-01-01",
    ])
    func dateTimesKeepTheirText(literal: String) throws {
        #expect(try value(literal) == .dateTime(literal))
        #expect(try value(literal).dateTime == literal)
    }

    @Test(arguments: [
        ("1979-13-27", "the month must be 1 to 12, not 13"), ("1979-00-27", "the month must be 1 to 12, not 0"),
        ("1979-02-29", "day 29 is past the end of the month (28 days)"), ("1900-02-29", "day 29 is past"),
        ("1979-04-31", "day 31 is past"), ("1979-05-00", "the day must be 1 to 31, not 0"),
        ("24:00:00", "the hour must be 0 to 23"), ("07:60:00", "the minute must be 0 to 59"),
        ("07:32:60", "the second must be 0 to 59"), ("07:32", "expected ':' after the minute (seconds are required)"),
        ("07:32:00Z", "unexpected 'Z' after a local time"), ("1979-05-27T07:32", "seconds are required"),
        ("1979-05-27T", "expected 2 digits for the hour"), ("1979-05-27T07:32:00.", "expected digits after '.'"),
        ("1979-05-27T07:32:00+25:00", "the offset's hours must be 0 to 23"),
        ("1979-05-27T07:32:00+05", "expected ':' after the offset's hours"),
        ("1979-05-27T07:32:00X", "expected an offset"), ("1979-5-27", "expected 2 digits for the month"),
        ("1979-05-27_07:32:00", "expected 'T' or a space"), ("7:32:00", "invalid number"),
    ])
    func invalidDateTimes(literal: String, reason: String) {
        let error = parseError("v = \(literal)")
        #expect(error?.column == 5, "\(literal)")
        #expect(error?.message.contains(reason) == true, "\(literal): \(String(describing: error))")
    }

    @Test func dateAndTimeSeparatedBySpaceOnlyBeforeADigit() throws {
        let table = try parse(
            "a = 1979-05-27 07:32:00\nb = 1979-05-27 # a comment\nc = [1979-05-27 ,1979-05-27 00:00:00]")
        #expect(table["a"] == .dateTime("1979-05-27 07:32:00"))
        #expect(table["b"] == .dateTime("1979-05-27"))
        #expect(table["c"] == [.dateTime("1979-05-27"), .dateTime("1979-05-27 00:00:00")])
    }
}

@Suite struct ArrayAndInlineTableTests {
    @Test func arrays() throws {
        #expect(try value("[]") == [])
        #expect(try value("[ 1, 2, 3 ]") == [1, 2, 3])
        #expect(
            try value(#"[ 0.1, "two", [3], { four = 4 }, true, 1979-05-27 ]"#) == [
                0.1, "two", [3], ["four": 4], true, .dateTime("1979-05-27"),
            ])
        let multiline = "[\n  1, # one\n  # a comment line\n\n  2,\n  3,   # trailing comma\n]"
        #expect(try value(multiline) == [1, 2, 3])
        #expect(try value("[\r\n1,\r\n2\r\n]") == [1, 2])
        #expect(try value("[[1, 2], [\"a\"], [[]]]") == [[1, 2], ["a"], [[]]])
    }

    @Test func arrayErrors() {
        #expect(parseError("v = [1 2]")?.message == "expected ',' or ']' after an array element, found '2'")
        #expect(parseError("v = [1 2]")?.column == 8)
        #expect(parseError("v = [,]")?.message == "expected a value or ']' in the array, found ','")
        #expect(parseError("v = [1,,2]")?.column == 8)
        let unterminated = parseError("v = [1,\n2,\n")
        #expect(
            unterminated?.line == 3 && unterminated?.message == "unterminated array (opened on line 1): expected ']'")
    }

    @Test func inlineTables() throws {
        let table = try parse(
            #"name = { first = "Tom", last = "Preston-Werner" }"# + "\nanimal = { type.name = \"pug\" }\ne = {}")
        #expect(table["name"] == ["first": "Tom", "last": "Preston-Werner"])
        #expect(table["name"]?.table?.keys == ["first", "last"])
        #expect(table["animal"] == ["type": ["name": "pug"]])
        #expect(table["e"] == .table(TOMLTable()))
        #expect(table["name"]?.table?.isInline == true)
        #expect(table["animal"]?.table?["type"]?.table?.isInline == true)
        let nested = try value("{ a = { b = [ { c = 1 } ] }, d = [\n1,\n2\n] }")
        #expect(nested == ["a": ["b": [["c": 1]]], "d": [1, 2]])
        #expect(nested.table?["a"]?.table?["b"]?.array?.first?.table?.isInline == true)
    }

    @Test func inlineTableErrors() {
        let cases: [(String, Int, Int, String)] = [
            ("v = { a = 1, }", 1, 14, "a trailing comma is not allowed in an inline table (TOML 1.0)"),
            (
                "v = { a = 1\n}", 1, 12,
                "expected ',' or '}' in the inline table opened at line 1, column 5, found end of line"
            ),
            ("v = {\na = 1 }", 1, 6, "expected a key in the inline table opened at line 1, column 5"),
            ("v = { a = 1 b = 2 }", 1, 13, "expected ',' or '}' in the inline table, found 'b'"),
            ("v = { a = 1, a = 2 }", 1, 14, #"duplicate key "a" (first defined on line 1)"#),
            ("v = { a.b = 1, a = 2 }", 1, 16, #"duplicate key "a" (first defined on line 1, as a table)"#),
            ("v = { a = { b = 1 }, a.c = 2 }", 1, 22, #"cannot set "a.c": "a" is already an inline table (line 1)"#),
            (
                "v = { a = 1 # no\n}", 1, 13,
                "expected ',' or '}' in the inline table opened at line 1, column 5, found '#'"
            ),
        ]
        for (document, line, column, message) in cases {
            let error = parseError(document)
            #expect(error?.line == line && error?.column == column, "\(document): \(String(describing: error))")
            #expect(error?.message.hasPrefix(message) == true, "\(document): \(String(describing: error))")
        }
    }
}
