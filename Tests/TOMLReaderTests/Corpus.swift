/// Documents for the differential test against Python's `tomllib`: valid ones, whose JSON must
/// match, and invalid ones, which both must reject. Raw strings: a backslash is TOML's.
enum Corpus {
    static let valid: [String] = [
        // 1. Every kind of value.
        #"""
        title = "TOML Example"
        count = 42
        ratio = 0.5
        enabled = true
        disabled = false
        when = 1979-05-27T07:32:00-08:00
        list = [1, 2, 3]
        point = { x = 1, y = 2 }
        """#,
        // 2. Comments everywhere.
        #"""
        # A comment on its own line
        key = "value"  # a comment after a value
        	# an indented comment, with a tab
        [table] # a comment after a header
        other = 1 #no space
        #
        """#,
        // 3. Bare, quoted, literal, empty and dotted keys.
        #"""
        bare_key = 1
        bare-key = 2
        1234 = 3
        "127.0.0.1" = 4
        "character encoding" = 5
        "ʎǝʞ" = 6
        'key2' = 7
        'quoted "value"' = 8
        "" = 9
        a."b.c".d = 10
        site . "google.com" = true
        """#,
        // 4. Dotted keys defining tables, and a header adding a sub-table to one.
        #"""
        [fruit]
        apple.color = "red"
        apple.taste.sweet = true
        orange.type = "navel"

        [fruit.apple.texture]
        smooth = true
        """#,
        // 5. Headers with whitespace and quoted parts.
        #"""
        [ a . b ]
        x = 1
        [ "x y" . 'z' ]
        w = 2
        [dog."tater.man"]
        type.name = "pug"
        """#,
        // 6. Implied super-tables defined later.
        #"""
        [x.y.z.w]
        a = 1
        [x]
        b = 2
        [x.y]
        c = 3
        """#,
        // 7. Arrays of tables with sub-tables (the spec's fruits).
        #"""
        [[fruits]]
        name = "apple"

        [fruits.physical]
        color = "red"
        shape = "round"

        [[fruits.varieties]]
        name = "red delicious"

        [[fruits.varieties]]
        name = "granny smith"

        [[fruits]]
        name = "banana"

        [[fruits.varieties]]
        name = "plantain"
        """#,
        // 8. Nested arrays of tables, and an empty element.
        #"""
        [[a]]
        [[a.b]]
        n = 1
        [[a.b]]
        n = 2
        [[a]]
        [[a.b]]
        n = 3
        [[products]]
        name = "Hammer"
        [[products]]
        [[products]]
        name = "Nail"
        """#,
        // 9. Inline tables: nested, dotted keys inside, empty.
        #"""
        name = { first = "Tom", last = "Preston-Werner" }
        point = {x=1,y=2}
        animal = { type.name = "pug", type.kind = "dog" }
        empty = {}
        nested = { a = { b = { c = "deep" } }, list = [1, { x = 2 }] }
        """#,
        // 10. Arrays: mixed, nested, multi-line with comments and trailing commas, empty.
        #"""
        integers = [ 1, 2, 3 ]
        colors = [ "red", "yellow", "green" ]
        nested_arrays_of_ints = [ [ 1, 2 ], [3, 4, 5] ]
        nested_mixed_array = [ [ 1, 2 ], ["a", "b", "c"] ]
        string_array = [ "all", 'strings', """are the same""", '''type''' ]
        numbers = [ 0.1, 0.2, 0.5, 1, 2, 5 ]
        contributors = [
          "Foo Bar <foo@example.com>",
          { name = "Baz Qux", email = "bazqux@example.com", url = "https://example.com/bazqux" }
        ]
        integers2 = [
          1, 2, 3
        ]
        integers3 = [
          1,
          2, # this is ok
        ]
        empty = [ ]
        empty2 = [
          # only a comment
        ]
        """#,
        // 11. Every escape.
        #"""
        str = "I'm a string. \"You can quote me\". Name\tJos\u00E9\nLocation\tSF."
        all = "\b\t\n\f\r\"\\"
        unicode = "\u00e9 \u20AC \U0001F600 \U0010FFFF \u0000"
        backslash = "C:\\Users\\nodejs"
        """#,
        // 12. Literal strings.
        #"""
        winpath  = 'C:\Users\nodejs\templates'
        winpath2 = '\\ServerX\admin$\system32\'
        quoted   = 'Tom "Dubs" Preston-Werner'
        regex    = '<\i\c*\s*>'
        empty = ''
        """#,
        // 13. Line-ending backslashes (the spec's three equal strings).
        #"""
        str1 = "The quick brown fox jumps over the lazy dog."

        str2 = """
        The quick brown \


          fox jumps over \
            the lazy dog."""

        str3 = """\
               The quick brown \
               fox jumps over \
               the lazy dog.\
               """
        """#,
        // 13b. A line-ending backslash with whitespace after it, and blank lines after that.
        "str4 = \"\"\"a \\   \n\n  \t\n   b\"\"\"\nstr5 = \"\"\"\\\n\"\"\"\n",
        // 14. Quotes inside multi-line basic strings.
        #"""
        str4 = """Here are two quotation marks: "". Simple enough."""
        str5 = """Here are three quotation marks: ""\"."""
        str6 = """Here are fifteen quotation marks: ""\"""\"""\"""\"""\"."""
        str7 = """"This," she said, "is just a pointless statement.""""
        str8 = """""x"""""
        """#,
        // 15. Multi-line literal strings.
        #"""
        regex2 = '''I [dw]on't need \d{2} apples'''
        lines  = '''
        The first newline is
        trimmed in raw strings.
           All other whitespace
           is preserved.
        '''
        quot15 = '''Here are fifteen quotation marks: """""""""""""""'''
        apos15 = "Here are fifteen apostrophes: '''''''''''''''"
        str = ''''That,' she said, 'is still pointless.''''
        """#,
        // 16. Integers.
        #"""
        int1 = +99
        int2 = 42
        int3 = 0
        int4 = -17
        int5 = 1_000
        int6 = 5_349_221
        int7 = 53_49_221
        int8 = 1_2_3_4_5
        plus_zero = +0
        minus_zero = -0
        hex1 = 0xDEADBEEF
        hex2 = 0xdeadbeef
        hex3 = 0xdead_beef
        hex4 = 0x00FF
        oct1 = 0o01234567
        oct2 = 0o755
        bin1 = 0b11010110
        bin2 = 0b0000_0001
        max = 9223372036854775807
        min = -9223372036854775808
        hexmax = 0x7FFFFFFFFFFFFFFF
        """#,
        // 17. Floats.
        #"""
        flt1 = +1.0
        flt2 = 3.1415
        flt3 = -0.01
        flt4 = 5e+22
        flt5 = 1e06
        flt6 = -2E-2
        flt7 = 6.626e-34
        flt8 = 224_617.445_991_228
        flt9 = 0e0
        flt10 = 1e-0_1
        zero = 0.0
        negzero = -0.0
        poszero = +0.0
        sf1 = inf
        sf2 = +inf
        sf3 = -inf
        sf4 = nan
        sf5 = +nan
        sf6 = -nan
        """#,
        // 18. Float extremes and rounding.
        #"""
        big = 1e308
        max = 1.7976931348623157e308
        tiny = 5e-324
        under = 1e-400
        tenth = 0.1
        long = 123456789.123456789
        third = 0.333333333333333333333333333
        e16 = 1e16
        e20 = 1e20
        """#,
        // 19. Dates and times.
        #"""
        odt1 = 1979-05-27T07:32:00Z
        odt2 = 1979-05-27T00:32:00-07:00
        odt3 = 1979-05-27T00:32:00.999999-07:00
        odt4 = 1979-05-27 07:32:00Z
        odt5 = 1979-05-27t07:32:00z
        odt6 = 1979-05-27T07:32:00-00:00
        odt7 = 1979-05-27T07:32:00.5+05:30
        ldt1 = 1979-05-27T07:32:00
        ldt2 = 1979-05-27T00:32:00.999999
        ldt3 = 1979-05-27 07:32:00.000
        ld1 = 1979-05-27
        ld2 = 2000-02-29
        lt1 = 07:32:00
        lt2 = 00:32:00.999999
        lt3 = 23:59:59.123456789
        in_array = [1979-05-27, 07:32:00, 1979-05-27 07:32:00Z]
        """#,
        // 20. Unicode keys and values.
        #"""
        "ключ" = "значение"
        "キー" = "値 🎉"
        'emoji 😀' = "😀"
        mixed = "é\u00e9"
        [ "日本" ]
        "東京" = 1
        """#,
        // 21. Tabs and spaces around everything.
        "\tkey\t=\t\"value\"\t\n  [\ttable\t]  \n\tx . y\t=\t1\t# comment\n",
        // 22. Keys needing sorting by code point.
        #"""
        b = 1
        a = 2
        "é" = 3
        Z = 4
        _ = 5
        10 = 6
        9 = 7
        "a b" = 8
        "ü" = 9
        "" = 10
        """#,
        // 23. Keys that look like other values.
        #"""
        true = 1
        false = "f"
        inf = 2
        nan = 3
        1234 = "x"
        -key = 4
        0x10 = 5
        1979-05-27 = 6
        [1]
        2.3 = "dotted numbers are two keys"
        """#,
        // 24. Dotted keys in array-of-tables elements.
        #"""
        [[a]]
        b.c = 1
        b.d = 2
        [[a]]
        b.c = 3
        [a.e]
        f = 4
        """#,
        // 25. Inline tables in arrays.
        #"""
        points = [ { x = 1, y = 2, z = 3 },
                   { x = 7, y = 8, z = 9 },
                   { x = 2, y = 4, z = 8 } ]
        """#,
        // 26. Arrays of arrays of everything.
        #"""
        a = [[1, 2], ["a", "b"], [1.5, true], [[[]]], [{}], [1979-05-27]]
        """#,
        // 27. Only comments and blank lines.
        "# nothing here\n\n   \n# still nothing\n",
        // 28. An empty document.
        "",
        // 29. `#` inside strings.
        ##"""
        a = "# not a comment"
        b = '# nor this'
        c = """# or
        # this"""
        d = "a#b" # but this is
        """##,
        // 30. Escapes in multi-line basic strings.
        #"""
        a = """\tTab\nNewline \"quoted\" \u00E9\\"""
        b = """
        line one
          line two\ttabbed
        """
        """#,
        // 31. A gatehouse-like firewall section.
        #"""
        [firewall]
        plugin = "nftables"
        allow = [
          { port = 8883, proto = "tcp", interface = "eth1", source = "10.20.0.0/16", comment = "site broker TLS" },
          { port = 22, source = "10.0.0.0/24", comment = "ssh from the management network" },
        ]
        site_interface = "eth1"
        syn_rate = 25
        disable_ipv6 = ["all"]
        tcp_syncookies = true
        """#,
        // 32. Deep inline nesting with arrays.
        #"""
        a = { b = [ { c = 1 } ], d = { e = { f = "g" } } }
        m = { list = [
          1,
          2,
        ] }
        """#,
        // 33. A table defined after its sub-tables, with an array of tables beside them.
        #"""
        [a.b.c]
        x = 1
        [a]
        y = 2
        [a.d]
        z = 3
        [[a.e]]
        w = 4
        [[a.e]]
        w = 5
        """#,
        // 34. Dotted keys extending an implied table.
        #"""
        [a.b.c]
        z = 9
        [a]
        b.d = 1
        b.e.f = 2
        """#,
        // 35. Headers through dotted-key tables.
        #"""
        a.b.c = 1
        a.d = 2
        [a.b.e]
        f = 3
        [a.g]
        h = 4
        """#,
        // 36. Literal and basic strings with tabs and unicode.
        "tab = \"a\tb\"\nlit = 'c\td'\nml = '''e\tf'''\nu = \"\u{00FC}ber\"\n",
        // 37. Time fractions past microseconds.
        #"""
        lt = 07:32:00.123456789
        ldt = 1979-05-27T07:32:00.1
        odt = 1979-05-27T07:32:00.000001Z
        """#,
        // 38. Offsets.
        #"""
        a = 1979-05-27T07:32:00+00:00
        b = 1979-05-27T07:32:00+23:59
        c = 1979-05-27T07:32:00-23:59
        d = 2024-12-31T23:59:59.999999+14:00
        """#,
        // 39. Many sections, like gatehouse's defaults.
        #"""
        [gateway]
        state_db = "/var/lib/gatehouse/state.db"   # registry, outbox
        log_level = "info"
        audit_max_rows = 1000000
        [outbox]
        max_bytes = "256 MiB"
        inflight_per_device = 64
        [site]
        topics = ["devices/+/messages/events/#"]
        commands = true
        [hub]
        port = 8883
        [twin]
        report = true
        """#,
        // 40. Strings with every kind of quote.
        #"""
        a = "'"
        b = '"'
        c = """'''"""
        d = '''"""'''
        e = "\"\""
        f = """ " "" """
        g = ''' ' '' '''
        """#,
        // 41. Sub-table of an array-of-tables element, then arrays in it.
        #"""
        [[servers]]
        name = "alpha"
        [servers.tls]
        ciphers = ["a", "b"]
        [[servers.tls.certs]]
        file = "x.pem"
        [[servers]]
        name = "beta"
        [servers.tls]
        ciphers = []
        """#,
        // 42. Keys with every bare character and numbers that are keys.
        #"""
        ABC-def_123 = 1
        ---- = 2
        ____ = 3
        [2024-01-01]
        x = 1
        """#,
        // 43. A key and value with no spaces, and an empty line with only whitespace.
        "a=1\nb=\"2\"\n   \t  \nc=[3]\nd={e=4}\n",
        // 44. Quoted keys with escapes.
        #"""
        "a\tb" = 1
        "\u0041" = 2
        "quote\"inside" = 3
        'back\slash' = 4
        """#,
        // 45. Large and small integers in other bases.
        #"""
        a = 0x0
        b = 0o0
        c = 0b0
        d = 0xFFFF_FFFF
        e = 0b111111111111111111111111111111111111111111111111111111111111111 # Int64.max
        """#,
    ]

    /// The valid documents with CR LF line ends, which read the same (newlines in multi-line
    /// strings too).
    static var validCRLF: [String] {
        valid.map { text in
            text.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\r\n")
        }
    }

    static let invalid: [String] = [
        "a = 1\na = 2\n",
        "[a]\n[a]\n",
        "a = []\n[[a]]\n",
        "a = {b = 1}\n[a.c]\n",
        "a = {b = 1}\na.c = 2\n",
        "a.b = 1\na.b = 2\n",
        "a.b = 1\na = 2\n",
        "a = 1\na.b = 2\n",
        "[fruit]\napple.color = \"red\"\n[fruit.apple]\n",
        "[fruit]\napple.taste.sweet = true\n[fruit.apple.taste]\n",
        "[a.b]\n[a]\nb.c = 1\n",
        "[[a]]\n[a]\n",
        "[a]\n[[a]]\n",
        #"a = "\x41""#,
        #"a = "\uD800""#,
        #"a = "\U00110000""#,
        #"a = "\u12""#,
        "a = \"x\u{01}\"\n",
        "a = 'x\u{7F}'\n",
        "# bell \u{07}\n",
        "a = 1\rb = 2\n",
        "a = 01\n",
        "a = 1__0\n",
        "a = _1\n",
        "a = 1_\n",
        "a = +0x10\n",
        "a = 0x\n",
        "a = 1.\n",
        "a = .5\n",
        "a = 1.e5\n",
        "a = 1e\n",
        "a = infinity\n",
        "a = \"unterminated\n",
        "a = \"\"\"unterminated\n",
        "a = [1, 2\n",
        "a = {b = 1,}\n",
        "a = {b = 1\n}\n",
        "a = 1 b = 2\n",
        "[a] b = 1\n",
        "a = \n",
        "= 1\n",
        "a b = 1\n",
        "a = 1979-13-01\n",
        "a = 1979-02-29\n",
        "a = 07:32\n",
        "a = 24:00:00\n",
        "a = 1979-05-27T07:32:00+25:00\n",
        "a = TRUE\n",
        "[a]]\n",
        "[[a]\n",
        "a = \"\"\"x\"\"\"\"\"\"\n",
        "a = 'multi\nline'\n",
        "\"\"\"key\"\"\" = 1\n",
        "a = {}\n[a]\n",
        "[a.b]\n[a]\n[a.b]\n",
        "a = [1, 2,, 3]\n",
        "a.\"b = 1\n",
        "[]\n",
        "a = 0o8\n",
        "a = 0b2\n",
        "a = 0xG\n",
        "a.b.c = 1\n[a.b]\n",
        "a = 1\n\u{0B}b = 2\n",
        "a = \"\\ \"\n",
        "a = \"\"\"\\ x\"\"\"\n",
        "a = 1979-05-27T\n",
        "a = 1979-05-27 07:32\n",
        "\"a\" = 1\na = 2\n",
        "a = [{ b = 1 }]\n[a.c]\n",
        "[[a]]\nb = 1\n[a.b]\n",
        "a = 00.5\n",
        "a = -0x1\n",
        "a = 1e_5\n",
        "a = nan_\n",
        "a = { b = 1, b = 2 }\n",
        "a = { b.c = 1, b = 2 }\n",
        "a = { b = { c = 1 }, b.d = 2 }\n",
        "a = [\n1\n2\n]\n",
    ]

    /// Invalid UTF-8, which both must reject.
    static let invalidBytes: [[UInt8]] = [
        Array("a = \"".utf8) + [0xFF] + Array("\"\n".utf8),
        Array("a = \"".utf8) + [0xC0, 0x80] + Array("\"\n".utf8),
        Array("a = \"".utf8) + [0xED, 0xA0, 0x80] + Array("\"\n".utf8),
        Array("# comment ".utf8) + [0xE2, 0x82] + Array("\na = 1\n".utf8),
        Array("a = 'x".utf8) + [0xF4, 0x90, 0x80, 0x80] + Array("'\n".utf8),
    ]
}
