/// One entry of a SUBSCRIBE payload, MQTT 3.1.1 §3.8.3: a topic filter and the maximum QoS
/// the Client wants for it.
public struct TopicSubscription: Equatable, Hashable, Sendable {
    /// A topic filter (§4.7), which may contain the `+` and `#` wildcards.
    public var filter: String
    /// §3.8.3 Requested QoS.
    public var qos: QoS

    public init(filter: String, qos: QoS) {
        self.filter = filter
        self.qos = qos
    }
}

/// A SUBSCRIBE packet, MQTT 3.1.1 §3.8. Holds at least one subscription (§3.8.3).
public struct Subscribe: Equatable, Sendable {
    /// §2.3.1 Packet Identifier, non-zero.
    public var packetID: UInt16
    /// §3.8.3 the (topic filter, requested QoS) pairs, in order.
    public var topics: [TopicSubscription]

    public init(packetID: UInt16, topics: [TopicSubscription]) {
        self.packetID = packetID
        self.topics = topics
    }
}

/// A SUBACK packet, MQTT 3.1.1 §3.9: one return code per topic filter of the SUBSCRIBE.
public struct SubAck: Equatable, Sendable {
    /// §2.3.1 Packet Identifier of the SUBSCRIBE being acknowledged.
    public var packetID: UInt16
    /// §3.9.3 return codes: 0x00, 0x01 or 0x02 (the granted QoS) or 0x80 (``failure``).
    public var returnCodes: [UInt8]

    /// §3.9.3 the return code for a subscription the Server refused.
    public static let failure: UInt8 = 0x80

    public init(packetID: UInt16, returnCodes: [UInt8]) {
        self.packetID = packetID
        self.returnCodes = returnCodes
    }

    /// Whether `code` is one §3.9.3 allows (0x00, 0x01, 0x02, 0x80).
    public static func isValidReturnCode(_ code: UInt8) -> Bool {
        code <= QoS.exactlyOnce.rawValue || code == failure
    }
}

/// An UNSUBSCRIBE packet, MQTT 3.1.1 §3.10. Holds at least one topic filter (§3.10.3).
public struct Unsubscribe: Equatable, Sendable {
    /// §2.3.1 Packet Identifier, non-zero.
    public var packetID: UInt16
    /// §3.10.3 the topic filters to remove, in order.
    public var filters: [String]

    public init(packetID: UInt16, filters: [String]) {
        self.packetID = packetID
        self.filters = filters
    }
}
