/// What may not reach a log line or a terminal as it is: text that a caller chose (a command's
/// name, its properties, a device id, a reason quoting them) could otherwise rewrite the line
/// (CR, LF), the terminal (ESC sequences), or the order in which a reader sees it (bidi
/// controls). Every log line (`LogfmtLogHandler`) and every `gatehouse audit` output goes
/// through here.
///
/// Escaped, as Swift string literals write them:
///
/// | input | output |
/// |---|---|
/// | `\` | `\\` |
/// | LF, CR, TAB | `\n`, `\r`, `\t` |
/// | other C0 (U+0000–U+001F), DEL (U+007F), C1 (U+0080–U+009F) | `\u{1B}`, `\u{7F}`, `\u{85}` |
/// | U+2028, U+2029 (line and paragraph separators) | `\u{2028}`, `\u{2029}` |
/// | format characters (general category Cf: bidi controls U+200E, U+200F, U+202A–U+202E, U+2066–U+2069, zero-width characters, U+FEFF, tags, …) | `\u{202E}` |
///
/// Everything else is kept. An escaped text has none of the characters above and reads back
/// unambiguously (a literal backslash is doubled).
public enum ControlEscaping {
    /// True for a scalar that must not be written as it is.
    @inline(__always)
    public static func mustEscape(_ scalar: Unicode.Scalar) -> Bool {
        let value = scalar.value
        if value < 0x20 || (0x7F...0x9F).contains(value) { return true }
        if value < 0xA0 { return false }  // printable ASCII: the fast path
        if value == 0x2028 || value == 0x2029 { return true }
        switch scalar.properties.generalCategory {
        case .format, .lineSeparator, .paragraphSeparator, .control: return true
        default: return false
        }
    }

    /// True when `text` would change when escaped.
    public static func needsEscaping(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0 == "\\" || mustEscape($0) }
    }

    /// `text` with every control and format character (and the backslash) written as a visible
    /// escape. Operates on Unicode scalars, never on grapheme clusters: "\r\n" or a control
    /// followed by a combining mark are still seen.
    public static func escape(_ text: String) -> String {
        guard needsEscaping(text) else { return text }
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\\": result.append(contentsOf: #"\\"#.unicodeScalars)
            case "\n": result.append(contentsOf: #"\n"#.unicodeScalars)
            case "\r": result.append(contentsOf: #"\r"#.unicodeScalars)
            case "\t": result.append(contentsOf: #"\t"#.unicodeScalars)
            case _ where mustEscape(scalar):
                result.append(contentsOf: "\\u{\(String(scalar.value, radix: 16, uppercase: true))}".unicodeScalars)
            default: result.append(scalar)
            }
        }
        return String(result)
    }

    /// JSON text (as JSONEncoder writes it) with every control and format character inside its
    /// strings written as a JSON `\uXXXX` escape (a surrogate pair beyond U+FFFF): a JSON parser
    /// reads back exactly the original strings, a terminal shows no raw control. JSON's own
    /// structure is ASCII, so every such character is inside a string.
    public static func escapeJSON(_ json: String) -> String {
        guard json.unicodeScalars.contains(where: { $0 != "\n" && mustEscape($0) }) else { return json }
        var result = String.UnicodeScalarView()
        for scalar in json.unicodeScalars {
            // The encoder's own line breaks (pretty printing) are structure, not string content:
            // inside strings it already writes "\n".
            guard scalar != "\n", mustEscape(scalar) else {
                result.append(scalar)
                continue
            }
            for unit in String(scalar).utf16 {
                let hex = String(unit, radix: 16, uppercase: false)
                result.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).unicodeScalars)
            }
        }
        return String(result)
    }
}
