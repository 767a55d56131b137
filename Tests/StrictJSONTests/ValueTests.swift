import StrictJSON
import Testing

/// Exact numbers: the text kept, integers and doubles read only when they are exact.
@Suite struct NumberTests {
    func number(_ text: String) throws -> JSONNumber {
        try #require(try JSONValue(parsing: text).numberValue)
    }

    @Test func numbersBeyondInt64AndDoublePrecisionKeepTheirText() throws {
        let document = #"[12345678901234567890123,9007199254740993,0.1000000000000000055511151231257827,1E+3]"#
        #expect(try JSONValue(parsing: document).description == document)

        let huge = try number("12345678901234567890123")
        #expect(huge.int64Value == nil && huge.uint64Value == nil && huge.intValue == nil)
        #expect(huge.exactDoubleValue == nil)
        #expect(huge.doubleValue == 1.2345678901234568e22)

        let beyondDouble = try number("9007199254740993")  // 2^53 + 1
        #expect(beyondDouble.int64Value == 9_007_199_254_740_993)
        #expect(beyondDouble.exactDoubleValue == nil)
        #expect(beyondDouble.doubleValue == 9_007_199_254_740_992)
        #expect(try number("9007199254740992").exactDoubleValue == 9_007_199_254_740_992)
        #expect(beyondDouble != (try number("9007199254740992")))
    }

    @Test func integersAtTheLimits() throws {
        #expect(try number("9223372036854775807").int64Value == .max)
        #expect(try number("9223372036854775808").int64Value == nil)
        #expect(try number("9223372036854775808").uint64Value == 9_223_372_036_854_775_808)
        #expect(try number("-9223372036854775808").int64Value == .min)
        #expect(try number("-9223372036854775809").int64Value == nil)
        #expect(try number("18446744073709551615").uint64Value == .max)
        #expect(try number("18446744073709551616").uint64Value == nil)
        #expect(try number("-1").uint64Value == nil)
        #expect(try number("-0").uint64Value == 0)
        // Integers written with a fraction or an exponent are integers; fractions are not.
        #expect(try number("1e3").int64Value == 1000)
        #expect(try number("1.0").intValue == 1)
        #expect(try number("12.30e1").intValue == 123)
        #expect(try number("1.5").int64Value == nil)
        #expect(try number("1e-1").int64Value == nil)
        #expect(try number("1e19").int64Value == nil)
        #expect(try number("1e19").uint64Value == 10_000_000_000_000_000_000)
        #expect(JSONNumber("1e99999999999999999999999") == nil)
    }

    @Test func doublesAreExactOrNil() throws {
        #expect(try number("0.5").exactDoubleValue == 0.5)
        #expect(try number("-2.25e2").exactDoubleValue == -225)
        #expect(try number("0.1").exactDoubleValue == nil)
        #expect(try number("0.1").doubleValue == 0.1)
        #expect(try number("1267650600228229401496703205376").exactDoubleValue == 0x1p100)
        #expect(try number("1267650600228229401496703205377").exactDoubleValue == nil)
        // 2^-1074, the least subnormal, written out in full, and with its last digit changed.
        let least =
            "4.9406564584124654417656879286822137236505980261432476442558568250067550727020875186529983636163"
            + "599237979656469544571773092665671035593979639877479601078187812630071319031140452784581716784898"
            + "210368871863605699873072305000638740915356498438731247339727316961514003171538539807412623856559"
            + "117102665855668676818703956031062493194527159149245532930545654440112748012970999954193198940908"
            + "041656332452475714786901472678015935523861155013480352649347201937902681071074917033322268447533"
            + "357208324319360923828934583680601060115061698097530783422773183292479049825247307763759272478746"
            + "560847782037344696995336470179726777175851256605511991315048911014510378627381672509558373897335"
            + "98993664809941164205702637090279242767544565229087538682506419718265533447265625e-324"
        #expect(try number(least).exactDoubleValue == .leastNonzeroMagnitude)
        #expect(try number(least.replacing("5e-324", with: "6e-324")).exactDoubleValue == nil)
        #expect(try number("5e-324").exactDoubleValue == nil)
        #expect(try number("5e-324").doubleValue == .leastNonzeroMagnitude)
        let greatest =
            "179769313486231570814527423731704356798070567525844996598917476803157260780028538760589558632766"
            + "878171540458953514382464234321326889464182768467546703537516986049910576551282076245490090389328"
            + "944075868508455133942304583236903222948165808559332123348274797826204144723168738177180919299881"
            + "250404026184124858368"
        #expect(try number(greatest).exactDoubleValue == .greatestFiniteMagnitude)
        #expect(try number(greatest + ".0e0").exactDoubleValue == .greatestFiniteMagnitude)
        // The shortest text that reads back as the greatest Double is not its exact value.
        #expect(try number(String(Double.greatestFiniteMagnitude)).exactDoubleValue == nil)
        #expect(try number("-0.0").exactDoubleValue == 0)
        // Far below Double's range: accepted (it is a number), read as 0, never exact.
        #expect(try number("1e-400").doubleValue == 0)
        #expect(try number("1e-400").exactDoubleValue == nil)
        #expect(try number("0e999999").exactDoubleValue == 0)
    }

    @Test func equalityIsByValue() throws {
        #expect(try number("1") == number("1.0"))
        #expect(try number("100") == number("1E+2"))
        #expect(try number("-0") == number("0.000e5"))
        #expect(try number("0.10") == number("1e-1"))
        #expect(try number("1") != number("-1"))
        #expect(try number("1") != number("1.0000000000000000000001"))
        #expect(try Set([number("1"), number("1.0"), number("10e-1"), number("2")]).count == 2)
        // Exponents too large for an Int compare as text, never as a wrong value.
        #expect(try number("1e-99999999999999999999") != number("1e-99999999999999999998"))
        #expect(try number("1e-99999999999999999999") == number("1e-99999999999999999999"))
        #expect(try number("1.0").text == "1.0")
    }

    @Test func madeFromSwiftNumbers() throws {
        #expect(JSONNumber(-42).text == "-42")
        #expect(JSONNumber(UInt64.max).text == "18446744073709551615")
        #expect(JSONNumber(0.1)?.text == "0.1")
        #expect(JSONNumber(1e-5)?.exactDoubleValue == nil)
        #expect(JSONNumber(0.25)?.exactDoubleValue == 0.25)
        #expect(JSONNumber(Double.nan) == nil && JSONNumber(Double.infinity) == nil)
        for value in [1e16, 1e-7, 123.456, -0.0, Double.leastNonzeroMagnitude, Double.greatestFiniteMagnitude] {
            let text = try #require(JSONNumber(value)).text
            #expect(JSONNumber(text) != nil, "\(text)")
            #expect(try number(text).doubleValue == value)
        }
        #expect(JSONNumber("1.5e3")?.intValue == 1500)
        for invalid in ["", "01", "+1", "1.", ".5", "1e", "-", "NaN", "Infinity", "1e400", " 1", "1 ", "0x10"] {
            #expect(JSONNumber(invalid) == nil, "\(invalid)")
        }
    }
}

@Suite struct ObjectTests {
    @Test func membersKeepTheirOrderAndReplaceInPlace() throws {
        var object: JSONObject = ["z": 1, "a": 2]
        object["m"] = 3
        object["z"] = "replaced"
        #expect(object.keys == ["z", "a", "m"])
        #expect(JSONValue.object(object).description == #"{"z":"replaced","a":2,"m":3}"#)
        object["a"] = nil
        #expect(object.keys == ["z", "m"] && object["m"] == 3 && object["a"] == nil)
        #expect(object.removeValue(forKey: "z") == "replaced")
        #expect(object.removeValue(forKey: "z") == nil)
        #expect(object.keys == ["m"])
        #expect(object.filter { $0.key != "m" }.isEmpty)
    }

    @Test func equalityIgnoresOrder() throws {
        let one = try JSONValue(parsing: #"{"a":1,"b":[1,{"c":null}]}"#)
        let two = try JSONValue(parsing: #"{"b":[1,{"c":null}],"a":1.0}"#)
        #expect(one == two)
        #expect(one.hashValue == two.hashValue)
        #expect(one != (try JSONValue(parsing: #"{"b":[{"c":null},1],"a":1}"#)))
        #expect(one != (try JSONValue(parsing: #"{"a":1}"#)))
        #expect(Set([one, two]).count == 1)
    }

    @Test func valuesReadAndChange() throws {
        var value = try JSONValue(parsing: #"{"s":"x","b":true,"n":-3,"a":[1],"o":{}}"#)
        #expect(value["s"]?.stringValue == "x" && value["b"]?.boolValue == true && value["n"]?.intValue == -3)
        #expect(value["a"]?.arrayValue == [1] && value["o"]?.objectValue == [:] && value["o"]?.isObject == true)
        #expect(value["n"]?.doubleValue == -3 && value["n"]?.int64Value == -3 && value["n"]?.uint64Value == nil)
        #expect(value["s"]?.intValue == nil && value["missing"] == nil && JSONValue.string("x")["s"] == nil)
        value.set("s", .int(7))
        value.remove("b")
        #expect(value.description == #"{"s":7,"n":-3,"a":[1],"o":{}}"#)
        var notAnObject: JSONValue = [1]
        notAnObject.set("a", 1)
        #expect(notAnObject == [1])
    }
}

@Suite struct WriterTests {
    let value: JSONValue = [
        "b": [1, "two", nil, true, ["y": false, "x": [:]]], "a": "é\u{0}\u{1f}\"\\\n\r\t/", "c": [],
    ]

    @Test func compactPrettyAndSorted() {
        #expect(
            value.description == #"{"b":[1,"two",null,true,{"y":false,"x":{}}],"a":"é\u0000\u001f\"\\\n\r\t/","c":[]}"#)
        #expect(value.utf8Bytes == Array(value.description.utf8))
        #expect(
            value.formatted(JSONFormat(sortsKeys: true))
                == #"{"a":"é\u0000\u001f\"\\\n\r\t/","b":[1,"two",null,true,{"x":{},"y":false}],"c":[]}"#)
        #expect(
            value.prettyDescription == """
                {
                  "b": [
                    1,
                    "two",
                    null,
                    true,
                    {
                      "y": false,
                      "x": {}
                    }
                  ],
                  "a": "é\\u0000\\u001f\\"\\\\\\n\\r\\t/",
                  "c": []
                }
                """)
        #expect(JSONValue.string("x").formatted(JSONFormat(indentation: "\t", sortsKeys: true)) == #""x""#)
    }

    @Test func sortingIsByUTF8Bytes() {
        let value: JSONValue = ["b": 1, "B": 2, "_": 3, "é": 4, "a": 5, "aa": 6]
        #expect(value.formatted(JSONFormat(sortsKeys: true)) == #"{"B":2,"_":3,"a":5,"aa":6,"b":1,"é":4}"#)
    }

    @Test func whatIsWrittenParsesBackToTheSameValueAndBytes() throws {
        for format in [JSONFormat.compact, .pretty, JSONFormat(sortsKeys: true)] {
            let text = value.formatted(format)
            let parsed = try JSONValue(parsing: text)
            #expect(parsed == value)
            #expect(parsed.formatted(format) == text)
        }
        let odd = #"{"n":[-0.0e-0,1E400000000000000000000000000000000000000000000000000000000000000000000000000]}"#
        #expect(throws: JSONParseError(offset: 14, reason: .numberOutOfRange)) { try JSONValue(parsing: odd) }
    }
}
