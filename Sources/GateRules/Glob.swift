/// Glob patterns for command names and topics: `*` matches any run of characters (dots and
/// slashes included), `?` one character, `\*` and `\?` themselves. Globs instead of regular
/// expressions because a glob always matches in time bounded by pattern × input, and
/// integrators already know them from shells.
///
/// Patterns are compiled once; the common shapes (`reboot`, `config.*`, `*.alarm`, `*x*`) skip
/// the general matcher.
struct Glob: Sendable, Hashable, CustomStringConvertible {
    enum Shape: Sendable, Hashable {
        case exact(String)
        case prefix(String)
        case suffix(String)
        case infix(String)
        case general([Piece])
    }

    enum Piece: Sendable, Hashable {
        case byte(UInt8)
        case one
        case star
    }

    let pattern: String
    let shape: Shape

    /// nil if the pattern ends in a lone `\`.
    init?(_ pattern: String) {
        self.pattern = pattern
        var pieces: [Piece] = []
        var bytes = Array(pattern.utf8)[...]
        while let byte = bytes.popFirst() {
            switch byte {
            case UInt8(ascii: "\\"):
                guard let next = bytes.popFirst() else { return nil }
                pieces.append(.byte(next))
            case UInt8(ascii: "*"):
                if pieces.last != .star { pieces.append(.star) }
            case UInt8(ascii: "?"):
                pieces.append(.one)
            default:
                pieces.append(.byte(byte))
            }
        }
        func literal(_ slice: ArraySlice<Piece>) -> String? {
            var out: [UInt8] = []
            for piece in slice {
                guard case .byte(let b) = piece else { return nil }
                out.append(b)
            }
            return String(decoding: out, as: UTF8.self)
        }
        let stars = pieces.filter { $0 == .star }.count
        if let text = literal(pieces[...]) {
            shape = .exact(text)
        } else if stars == 1, pieces.last == .star, let text = literal(pieces.dropLast()) {
            shape = .prefix(text)
        } else if stars == 1, pieces.first == .star, let text = literal(pieces.dropFirst()) {
            shape = .suffix(text)
        } else if stars == 2, pieces.count >= 2, pieces.first == .star, pieces.last == .star,
            let text = literal(pieces.dropFirst().dropLast())
        {
            shape = .infix(text)
        } else {
            shape = .general(pieces)
        }
    }

    var isLiteral: Bool {
        if case .exact = shape { return true }
        return false
    }

    var description: String { pattern }

    func matches(_ text: String) -> Bool {
        switch shape {
        case .exact(let s): return text == s
        case .prefix(let s): return text.utf8.starts(with: s.utf8)
        case .suffix(let s): return text.utf8.reversed().starts(with: s.utf8.reversed())
        case .infix(let s): return s.isEmpty || containsBytes(text, s)
        case .general(let pieces): return matchGeneral(Array(text.utf8), pieces)
        }
    }

    /// Star-backtracking match over UTF-8: at most one saved star, so time is O(text × pattern).
    private func matchGeneral(_ text: [UInt8], _ pieces: [Piece]) -> Bool {
        var t = 0
        var p = 0
        var starPiece = -1
        var starText = 0
        func scalarLength(at index: Int) -> Int {
            var end = index + 1
            while end < text.count, text[end] & 0xC0 == 0x80 { end += 1 }
            return end - index
        }
        while t < text.count {
            if p < pieces.count {
                switch pieces[p] {
                case .byte(let b) where b == text[t]:
                    p += 1
                    t += 1
                    continue
                case .one:
                    t += scalarLength(at: t)
                    p += 1
                    continue
                case .star:
                    starPiece = p
                    starText = t
                    p += 1
                    continue
                default:
                    break
                }
            }
            guard starPiece >= 0 else { return false }
            starText += scalarLength(at: starText)
            t = starText
            p = starPiece + 1
        }
        while p < pieces.count, pieces[p] == .star { p += 1 }
        return p == pieces.count
    }
}

/// Substring test on UTF-8 bytes (no Unicode normalisation: claims are compared as sent).
func containsBytes(_ haystack: String, _ needle: String) -> Bool {
    if needle.isEmpty { return true }
    let h = Array(haystack.utf8)
    let n = Array(needle.utf8)
    guard n.count <= h.count else { return false }
    var i = 0
    while i + n.count <= h.count {
        if h[i] == n[0], h[i..<(i + n.count)].elementsEqual(n) { return true }
        i += 1
    }
    return false
}

// MARK: Regular expressions written as globs

/// Integrators often know regular expressions better than globs, and a regular expression read
/// as a glob silently matches something else (`"^reboot$"` matches no command). The checker
/// refuses one and offers the glob it meant (docs/rules.md#diagnostics).
extension Glob {
    /// Characters after `\` that only a regular expression gives a meaning (`\.`, `\d`, `\(`).
    static let regexEscapes: Set<UInt8> = Set(".dDwWsSbB()[]{}^$|+-/".utf8)

    /// The regular-expression syntax a pattern uses, each form once, in order: empty if none.
    ///
    /// In a command pattern every one of `^ $ ( ) | + [ ]` counts, and `\` before anything but
    /// `*` or `?`: command names hold none of them. A `matches` pattern may test a topic or a
    /// claim, where `$` or `(` can be plain text, so there only forms no one writes by accident
    /// count: `^` first, `$` last, `(a|b)`, `[…]`, `\` before anything but `*`, `?` or `\`.
    /// In both, `.*` and `.+` meaning "anything" count: at the start, after `^ ( |` or an
    /// escape, or before `$ ) |` (`"config.*"` is a glob: `config.` and then anything).
    static func regexSyntax(in pattern: String, command: Bool) -> [String] {
        let c = Array(pattern)
        var found: [String] = []
        func note(_ form: String) { if !found.contains(form) { found.append(form) } }
        var escaped = Set<Int>()
        var i = 0
        while i < c.count {
            let ch = c[i]
            if ch == "\\" {
                guard i + 1 < c.count else { break }
                let next = c[i + 1]
                if next == "*" || next == "?" || (!command && next == "\\") {
                    i += 2
                    continue
                }
                note("`\\\(next)`")
                escaped.insert(i + 1)
                i += 2
                continue
            }
            if ch == ".", i + 1 < c.count, c[i + 1] == "*" || c[i + 1] == "+" {
                let before: Character? = i > 0 ? c[i - 1] : nil
                let after: Character? = i + 2 < c.count ? c[i + 2] : nil
                let anything =
                    before == nil || "^(|".contains(before!) || escaped.contains(i - 1) || "$)|".contains(after ?? " ")
                    || c[i + 1] == "+"
                if anything { note("`.\(c[i + 1])`") }
            }
            if command {
                if "^$()|+[]".contains(ch) { note("`\(ch)`") }
            } else {
                if ch == "^", i == 0 { note("`^`") }
                if ch == "$", i == c.count - 1, i > 0 { note("`$`") }
                if ch == "(", let close = c[(i + 1)...].firstIndex(of: ")"), c[(i + 1)..<close].contains("|") {
                    note("`(…|…)`")
                }
                if ch == "[", let close = c[(i + 1)...].firstIndex(of: "]"), close > i + 1 { note("`[…]`") }
            }
            i += 1
        }
        return found
    }

    /// The globs a regular expression means, when a few globs can say it: `^reboot$` →
    /// `reboot`; `config\..*` → `config.*`; `(reboot|restart)` → `reboot`, `restart`. nil when
    /// no short list of globs says the same (`a+`, `x{2}`).
    static func rewrite(regex pattern: String) -> [String]? {
        let c = Array(pattern)
        var i = 0
        let limit = 8

        func product(_ a: [String], _ b: [String]) -> [String]? {
            guard a.count * b.count <= limit else { return nil }
            return a.flatMap { x in b.map { x + $0 } }
        }
        /// Alternatives separated by `|`, up to `)` or the end.
        func alternatives() -> [String]? {
            var result: [String] = []
            while true {
                guard let sequence = sequence() else { return nil }
                result += sequence
                guard result.count <= limit else { return nil }
                if i < c.count, c[i] == "|" {
                    i += 1
                    continue
                }
                return result
            }
        }
        func sequence() -> [String]? {
            var result = [""]
            while i < c.count, c[i] != "|", c[i] != ")" {
                // One atom: its globs, and whether it stands for any one character.
                var atom: [String]
                var anyCharacter = false
                let ch = c[i]
                i += 1
                switch ch {
                case "^", "$":
                    continue
                case "(":
                    if i + 1 < c.count, c[i] == "?", c[i + 1] == ":" { i += 2 }
                    guard let inner = alternatives(), i < c.count, c[i] == ")" else { return nil }
                    i += 1
                    atom = inner
                case "[":
                    guard let close = c[i...].firstIndex(of: "]") else { return nil }
                    i = close + 1
                    atom = ["?"]
                    anyCharacter = true
                case "\\":
                    guard i < c.count else { return nil }
                    let next = c[i]
                    i += 1
                    if "dDwWsS".contains(next) {
                        atom = ["?"]
                        anyCharacter = true
                    } else if next == "*" || next == "?" {
                        atom = ["\\\(next)"]
                    } else if next.isLetter || next.isNumber {
                        return nil
                    } else {
                        atom = [String(next)]
                    }
                case ".":
                    // A lone `.` is kept as a dot: integrators mean the separator in `config.set`.
                    atom = ["."]
                    anyCharacter = true
                case "*", "+", "?", "{", "]":
                    return nil
                default:
                    atom = [String(ch)]
                }
                if i < c.count, "*+?{".contains(c[i]) {
                    let quantifier = c[i]
                    i += 1
                    if i < c.count, c[i] == "?" { i += 1 }  // lazy: the same set of matches
                    switch quantifier {
                    case "*" where anyCharacter: atom = ["*"]
                    case "+" where anyCharacter: atom = ["?*"]
                    case "?": atom = [""] + (anyCharacter ? ["?"] : atom)
                    default: return nil
                    }
                }
                guard let next = product(result, atom) else { return nil }
                result = next
            }
            return result
        }

        guard let all = alternatives(), i == c.count else { return nil }
        var globs: [String] = []
        for var glob in all {
            while glob.contains("**") { glob = glob.replacing("**", with: "*") }
            while glob.contains("*?*") { glob = glob.replacing("*?*", with: "?*") }
            if !glob.isEmpty, !globs.contains(glob) { globs.append(glob) }
        }
        return globs.isEmpty ? nil : globs
    }

    /// Why a command pattern can match no command, and what was probably meant; nil if it can.
    /// Command names are written by device makers as plain identifiers (`reboot`,
    /// `firmware.update`): none holds whitespace, a comma, a control or invisible character, or
    /// a non-ASCII look-alike of an ASCII character.
    static func neverMatches(command pattern: String) -> (reason: String, fix: [String]?)? {
        if pattern.contains(",") {
            let parts = pattern.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingWhitespace()
            }
            let fix = parts.allSatisfy { !$0.isEmpty && neverMatches(command: $0) == nil } ? parts : nil
            return ("a comma", fix)
        }
        var fixed = ""
        var reason: String?
        for scalar in pattern.unicodeScalars {
            let kind = scalar.isASCII ? nil : LookAlike.kind(of: scalar)
            switch kind {
            case .letter(let ascii)?: fixed.unicodeScalars.append(UnicodeScalar(ascii))
            case .punctuation(let ascii)?: fixed += ascii
            case .blank?: fixed += " "
            case .invisible?: break
            case .doubleQuote?, .singleQuote?: fixed += scalar.isASCII ? String(scalar) : ""
            case nil: fixed.unicodeScalars.append(scalar)
            }
            guard reason == nil else { continue }
            if scalar == " " {
                reason = "a space"
            } else if scalar == "\t" {
                reason = "a tab"
            } else if scalar.properties.generalCategory == .control {
                reason = LookAlike.name(scalar) + " (a control character)"
            } else if kind == .invisible {
                reason = LookAlike.name(scalar) + " (invisible)"
            } else if let kind {
                reason = LookAlike.name(scalar) + (kind == .blank ? " (not a plain space)" : " (not `\(kind.ascii)`)")
            } else if scalar.properties.isWhitespace {
                reason = LookAlike.name(scalar)
            }
        }
        guard let reason else { return nil }
        let trimmed = fixed.trimmingWhitespace()
        let clean =
            !trimmed.isEmpty && trimmed.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 0x20 && $0 != "\u{7F}" }
        return (reason, clean ? [trimmed] : nil)
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(drop { $0.isWhitespace }.reversed().drop { $0.isWhitespace }.reversed())
    }
}

/// A string as it is written in a rule file: `"config.*"`, with `\` and `"` escaped.
func ruleLiteral(_ text: String) -> String {
    "\"" + text.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
}
