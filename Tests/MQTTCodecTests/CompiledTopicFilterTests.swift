import MQTTCodec
import Testing

@Suite("Compiled topic filters")
struct CompiledTopicFilterTests {
    /// Every topic of one to four levels over a small alphabet: empty levels, leading and
    /// trailing slashes and `$` topics all occur.
    static let topics: [String] = {
        let words = ["", "a", "x", "$SYS", "devices", "messages", "events", "k=v&f", "ü", "\u{05A4}d"]
        var topics = words
        var frontier = words
        for _ in 1..<4 {
            frontier = frontier.flatMap { prefix in words.map { "\(prefix)/\($0)" } }
            topics += frontier
        }
        return topics
    }()

    static func match(_ filter: CompiledTopicFilter, _ topic: String) -> CompiledTopicFilter.Match? {
        var topic = topic
        return topic.withUTF8 { filter.match($0) }
    }

    /// The plain reading: split both, the first `+` level, and a trailing `#`'s levels joined.
    static func expected(_ filter: String, _ topic: String) -> (plus: Substring?, rest: String?) {
        let filterLevels = CompiledTopicFilter.levels(of: filter)
        let levels = CompiledTopicFilter.levels(of: topic)
        let plus = filterLevels.firstIndex(of: "+").map { levels[$0] }
        var rest: String? = nil
        if filterLevels.last == "#", levels.count >= filterLevels.count {
            rest = levels[(filterLevels.count - 1)...].joined(separator: "/")
        }
        return (plus, rest)
    }

    @Test(
        "decides as TopicFilter.matches does, and finds the same `+` level and `#` rest, for every topic",
        arguments: [
            "devices/+/messages/events/#", "+/events", "a/+/+/x", "+/#", "#", "+", "$SYS/+/#", "a/#", "/+", "+/",
            "a/x", "ü/+",
        ])
    func sameAsMatches(filter: String) throws {
        let compiled = try #require(CompiledTopicFilter(filter))
        var matched = 0
        for topic in Self.topics {
            let match = Self.match(compiled, topic)
            #expect((match != nil) == TopicFilter.matches(filter: filter, topic: topic), "`\(filter)` on `\(topic)`")
            guard let match else { continue }
            matched += 1
            let utf8 = Array(topic.utf8)
            let expected = Self.expected(filter, topic)
            #expect(match.firstPlus.map { String(decoding: utf8[$0], as: UTF8.self) } == expected.plus.map(String.init))
            #expect(match.rest.map { String(decoding: utf8[$0], as: UTF8.self) } == expected.rest)
        }
        #expect(Self.topics.count > 7_000)
        #expect(matched > 0, "the filter `\(filter)` matched none of the topics: the test would prove nothing")
    }

    @Test("levels are split on the byte `/`, even where a combining mark follows it (one Swift Character)")
    func combiningMark() throws {
        // Found by the site fuzzer: U+05A4 after "/" made Character-based splitting see
        // `devices/\u{05A4}ev-1` as one level, and route the message to device `messages`.
        let topic = "devices/\u{05A4}ev-1/messages/events/a=1"
        #expect(topic.split(separator: "/").count == 4)  // the trap: Characters
        #expect(CompiledTopicFilter.levels(of: topic) == ["devices", "\u{05A4}ev-1", "messages", "events", "a=1"])
        let filter = try #require(CompiledTopicFilter("devices/+/messages/events/#"))
        let match = try #require(Self.match(filter, topic))
        let utf8 = Array(topic.utf8)
        #expect(match.firstPlus.map { String(decoding: utf8[$0], as: UTF8.self) } == "\u{05A4}ev-1")
        #expect(CompiledTopicFilter("x/\u{05A4}+") == nil)
    }

    @Test("refuses what TopicFilter refuses")
    func invalid() {
        #expect(CompiledTopicFilter("a/#/b") == nil)
        #expect(CompiledTopicFilter("a+") == nil)
        #expect(CompiledTopicFilter("") == nil)
        let filter = CompiledTopicFilter("+/x")!
        for topic in ["", "+/x", "#", "a\u{0}/x"] { #expect(Self.match(filter, topic) == nil, "`\(topic)`") }
    }
}
