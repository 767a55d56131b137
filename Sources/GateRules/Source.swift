/// A rule file's text, with the line table that turns byte offsets into `line:column`.
///
/// The lexer works on UTF-8 bytes, so every position in the pipeline is a byte offset into
/// `bytes`. Columns shown to people count characters, not bytes, so a caret lands under the
/// right glyph even after `é` or a tab.
public struct SourceFile: Sendable {
    /// The name shown in diagnostics (usually the path the file was read from).
    public let name: String
    public let text: String
    let bytes: [UInt8]
    /// Byte offset at which each line starts; `lineStarts[0] == 0`.
    let lineStarts: [Int]

    public init(name: String, text: String) {
        self.name = name
        self.text = text
        self.bytes = Array(text.utf8)
        var starts = [0]
        for (offset, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") {
            starts.append(offset + 1)
        }
        self.lineStarts = starts
    }

    /// The 1-based line and column (in characters) of a byte offset.
    func location(of offset: Int) -> (line: Int, column: Int) {
        let offset = min(max(offset, 0), bytes.count)
        let line = lineIndex(of: offset)
        let column = characterCount(from: lineStarts[line], to: offset) + 1
        return (line + 1, column)
    }

    /// The 0-based index of the line holding `offset` (binary search over `lineStarts`).
    func lineIndex(of offset: Int) -> Int {
        var low = 0
        var high = lineStarts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if lineStarts[mid] <= offset { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// The text of a 1-based line, without its line break.
    func lineText(_ line: Int) -> String {
        guard line >= 1, line <= lineStarts.count else { return "" }
        let start = lineStarts[line - 1]
        var end = line < lineStarts.count ? lineStarts[line] - 1 : bytes.count
        if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        return String(decoding: bytes[start..<max(start, end)], as: UTF8.self)
    }

    /// The source text a span covers.
    func text(of span: Span) -> String {
        let start = min(max(span.start, 0), bytes.count)
        let end = min(max(span.end, start), bytes.count)
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    func characterCount(from start: Int, to end: Int) -> Int {
        guard end > start else { return 0 }
        return String(decoding: bytes[start..<end], as: UTF8.self).count
    }
}

/// A range of bytes in one file of a policy: `file` indexes the policy's file list.
public struct Span: Sendable, Hashable {
    public var file: Int
    public var start: Int
    public var end: Int

    public init(file: Int, start: Int, end: Int) {
        self.file = file
        self.start = start
        self.end = end
    }

    /// The smallest span covering both.
    func to(_ other: Span) -> Span {
        Span(file: file, start: min(start, other.start), end: max(end, other.end))
    }
}
