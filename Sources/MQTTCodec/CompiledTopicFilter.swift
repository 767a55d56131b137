/// A topic filter compiled for matching many topics: its levels split once, and a topic matched
/// in one pass over its bytes with no allocation. It decides exactly as `TopicFilter.matches`
/// (§4.7) does, and also says where in the topic the filter's first `+` level and its trailing
/// `#` matched: a relay reads a device id and a property bag from those.
public struct CompiledTopicFilter: Sendable {
    enum Level: Sendable, Equatable {
        case literal([UInt8])
        case plus
        case hash
    }

    /// Where a topic matched: byte ranges into the topic's UTF-8.
    public struct Match: Sendable, Equatable {
        /// The level the filter's first `+` matched (possibly empty); nil without a `+`.
        public var firstPlus: Range<Int>?
        /// The levels a trailing `#` matched, joined by their `/`s; nil without a `#`, or when
        /// it matched only the parent level (`a/#` matching `a`).
        public var rest: Range<Int>?
    }

    public let filter: String
    let levels: [Level]

    /// nil when `filter` is not a valid topic filter (`TopicFilter.validateFilter`).
    public init?(_ filter: String) {
        guard TopicFilter.validateFilter(filter) else { return nil }
        self.filter = filter
        // Split on the byte `/`, not on Characters: "/" followed by a combining mark is one
        // Character in Swift, but two levels to MQTT.
        levels = filter.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { level in
            switch Array(level) {
            case [UInt8(ascii: "+")]: .plus
            case [UInt8(ascii: "#")]: .hash
            case let bytes: .literal(bytes)
            }
        }
    }

    /// Whether the filter has a `+` level.
    public var hasPlus: Bool { levels.contains(.plus) }

    /// The `/`-separated levels of a topic, split on the byte `/` as MQTT does (§4.7.1.1) — not
    /// on Characters: in Swift "/" followed by a combining mark is one Character, so
    /// `String.split(separator: "/")` would see one level where MQTT sees two.
    public static func levels(of topic: String) -> [Substring] {
        topic.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { Substring($0) }
    }

    /// Matches the topic name whose UTF-8 is `topic`; nil when the filter does not match it or
    /// it is not a valid topic name.
    public func match(_ topic: UnsafeBufferPointer<UInt8>) -> Match? {
        guard Self.isTopicName(topic) else { return nil }
        // `+…` and `#` do not match topics starting with `$` (§4.7.2).
        if topic[0] == UInt8(ascii: "$"), let first = levels.first, first == .plus || first == .hash { return nil }
        let count = topic.count
        // The current topic level starts at `start`; `count + 1` means the topic has no more.
        var start = 0
        var match = Match()
        for level in levels {
            if level == .hash {
                // Always last (validated): the parent level and any number below it.
                match.rest = start <= count ? start..<count : nil
                return match
            }
            guard start <= count else { return nil }  // the topic has fewer levels
            var end = start
            while end < count, topic[end] != UInt8(ascii: "/") { end += 1 }
            switch level {
            case .literal(let text):
                guard text.elementsEqual(topic[start..<end]) else { return nil }
            case .plus:
                if match.firstPlus == nil { match.firstPlus = start..<end }
            case .hash:
                break
            }
            start = end + 1
        }
        return start == count + 1 ? match : nil  // nil: the topic has more levels
    }

    /// Whether `topic` is a valid topic name's UTF-8 (`TopicFilter.validateTopicName`).
    static func isTopicName(_ topic: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !topic.isEmpty, topic.count <= TopicFilter.maximumLength else { return false }
        return !topic.contains { $0 == 0 || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "#") }
    }
}
