import MQTTCodec
import Testing

@Suite("Topic filters (MQTT 3.1.1 §4.7)")
struct TopicFilterTests {
    static let matchTable: [(filter: String, topic: String, matches: Bool)] = [
        // §4.7.1.2 multi-level wildcard.
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
        ("sport/#", "sport", true),
        ("sport/#", "sports", false),
        ("sport/#", "sport/", true),
        ("#", "sport/tennis", true),
        ("#", "/", true),
        ("#", "a", true),
        // §4.7.1.3 single-level wildcard.
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("sport/+/player1", "sport/tennis/player1", true),
        ("sport/+/player1", "sport/tennis/player2", false),
        ("sport/+/player1", "sport/player1", false),
        ("sport/+/player1", "sport//player1", true),
        ("+", "sport", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+/tennis/#", "sport/tennis/player1/ranking", true),
        ("+/tennis/#", "sport/tennis", true),
        ("+/tennis/#", "sport/golf", false),
        // §4.7.2 topics beginning with $.
        ("#", "$SYS/broker/clients", false),
        ("#", "$SYS", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("+/#", "$SYS", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS", "$SYS", true),
        ("a/$SYS", "a/$SYS", true),
        ("a/+", "a/$SYS", true),
        // Plain filters: exact, case-sensitive, empty levels significant.
        ("sport/tennis", "sport/tennis", true),
        ("sport/tennis", "Sport/tennis", false),
        ("sport/tennis", "sport/tennis/", false),
        ("sport/tennis/", "sport/tennis", false),
        ("a//b", "a//b", true),
        ("a//b", "a/b", false),
        ("ü/€", "ü/€", true),
        // Invalid filters or topic names never match.
        ("sport/tennis#", "sport/tennis#", false),
        ("sport/tennis#", "sport/tennis", false),
        ("sport/+", "sport/+", false),
        ("#", "a/#", false),
        ("", "", false),
        ("a", "", false),
    ]

    @Test("matches(filter:topic:)", arguments: matchTable)
    func matching(filter: String, topic: String, matches: Bool) {
        #expect(TopicFilter.matches(filter: filter, topic: topic) == matches)
    }

    static let validFilters = [
        "#", "+", "sport/#", "sport/+/player1", "+/+", "/", "//", "a//b", "+/tennis/#", "$SYS/#",
        "/+", "+/", "ü/€", " ", String(repeating: "a", count: 65_535),
    ]
    static let invalidFilters = [
        "", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/b+", "++", "##", "#/", "#+",
        "+#", "a/+b/c", "a\u{0}b", String(repeating: "a", count: 65_536),
    ]

    @Test("valid filters", arguments: validFilters)
    func validFilter(filter: String) {
        #expect(TopicFilter.validateFilter(filter))
    }

    @Test("invalid filters", arguments: invalidFilters)
    func invalidFilter(filter: String) {
        #expect(!TopicFilter.validateFilter(filter))
    }

    @Test("topic names")
    func topicNames() {
        for valid in [
            "a", "/", "a/b", "$SYS/x", " ", "é", "a//b", String(repeating: "x", count: 65_535),
        ] {
            #expect(TopicFilter.validateTopicName(valid), "\(valid.prefix(20))")
        }
        for invalid in ["", "a/+", "#", "a#", "a\u{0}", "+", String(repeating: "x", count: 65_536)] {
            #expect(!TopicFilter.validateTopicName(invalid), "\(invalid.prefix(20))")
        }
    }
}
