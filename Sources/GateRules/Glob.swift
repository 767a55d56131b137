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
