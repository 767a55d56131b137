/// Topic names, topic filters and wildcard matching, MQTT 3.1.1 §4.7.
///
/// A topic is split into levels by `/` (§4.7.1.1); levels may be empty (`a//b`, `/a`).
/// A topic *name* (in PUBLISH) has no wildcards. A topic *filter* (in SUBSCRIBE) may use:
/// - `+` (§4.7.1.3): exactly one level, and it must be the whole level (`a/+/c`, not `a+`);
/// - `#` (§4.7.1.2): any number of levels, including none, so `sport/#` matches `sport`; it
///   must be the whole last level (`#`, `a/#`, not `a#` or `a/#/b`).
///
/// Both must be 1 to 65,535 bytes of UTF-8 without U+0000 (§4.7.3). Swift `String`s are always
/// well-formed Unicode, so only length and U+0000 are checked here.
public enum TopicFilter {
    /// The longest topic a two-byte length prefix can carry (§1.5.3).
    public static let maximumLength = 65_535

    private static let slash = UInt8(ascii: "/")
    private static let plus = UInt8(ascii: "+")
    private static let hash = UInt8(ascii: "#")
    private static let dollar = UInt8(ascii: "$")

    /// Whether `topic` is a valid topic name: 1...65,535 bytes, no U+0000, no `+` or `#`
    /// (§4.7.1, §4.7.3, §3.3.2.1).
    public static func validateTopicName(_ topic: String) -> Bool {
        // Over the contiguous bytes, not the UTF-8 view: it runs for every PUBLISH the site
        // subscriber reads, and the view's per-byte iteration was its costliest Swift symbol.
        var topic = topic
        return topic.withUTF8 { CompiledTopicFilter.isTopicName($0) }
    }

    /// Whether `filter` is a valid topic filter: 1...65,535 bytes, no U+0000, and wildcards
    /// used as §4.7.1.2 and §4.7.1.3 allow.
    public static func validateFilter(_ filter: String) -> Bool {
        let bytes = filter.utf8
        guard !bytes.isEmpty, bytes.count <= maximumLength else { return false }
        // The start of the filter counts as a level boundary, like a preceding '/'.
        var previous = slash
        var index = bytes.startIndex
        while index != bytes.endIndex {
            let byte = bytes[index]
            let nextIndex = bytes.index(after: index)
            let next: UInt8? = nextIndex == bytes.endIndex ? nil : bytes[nextIndex]
            switch byte {
            case 0:
                return false
            case plus:
                // '+' must fill its level: preceded by a boundary and followed by '/' or the end.
                guard previous == slash, next == nil || next == slash else { return false }
            case hash:
                // '#' must fill the last level: preceded by a boundary and followed by the end.
                guard previous == slash, next == nil else { return false }
            default:
                break
            }
            previous = byte
            index = nextIndex
        }
        return true
    }

    /// Whether a message published to `topic` is delivered to a subscription with `filter`
    /// (§4.7). Returns false if either is invalid.
    ///
    /// Topics starting with `$` (such as `$SYS/…`) are not matched by a filter starting with a
    /// wildcard (§4.7.2): `#` and `+/…` do not see them, `$SYS/#` does.
    public static func matches(filter: String, topic: String) -> Bool {
        guard validateFilter(filter), validateTopicName(topic) else { return false }
        if topic.utf8.first == dollar, let first = filter.utf8.first, first == plus || first == hash {
            return false
        }
        var filterLevels = Levels(filter)
        var topicLevels = Levels(topic)
        while let filterLevel = filterLevels.next() {
            if filterLevel.elementsEqual(CollectionOfOne(hash)) {
                // '#' is always last (validated above) and matches the parent level too.
                return true
            }
            guard let topicLevel = topicLevels.next() else { return false }
            if !filterLevel.elementsEqual(CollectionOfOne(plus)), !filterLevel.elementsEqual(topicLevel) {
                return false
            }
        }
        return topicLevels.next() == nil
    }

    /// The `/`-separated levels of a topic, as views into it (no allocation).
    private struct Levels: IteratorProtocol {
        private var rest: Substring.UTF8View?

        init(_ topic: String) { rest = topic.utf8[...] }

        mutating func next() -> Substring.UTF8View? {
            guard let current = rest else { return nil }
            if let separator = current.firstIndex(of: TopicFilter.slash) {
                rest = current[current.index(after: separator)...]
                return current[..<separator]
            }
            rest = nil
            return current
        }
    }
}
