import CFuzzerDriver
import MQTTCodec

/// The executable's entry (SwiftPM links `main` to it): hand control to libFuzzer's driver.
@_cdecl("SiteMQTTFuzzer_main")
public func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzz(data, Int(size)) }
}

/// Decoder limits the input may pick: small ones so that the skip path (an oversized PUBLISH
/// consumed unbuffered) is reached by inputs of a few KiB; the site subscriber itself uses
/// `maxMessageBytes + 65,544` (Plugins/MQTTTransport/SiteSubscriber.swift).
let packetLimits = [2, 64, 512, 4096]
/// Payload heads kept of a skipped PUBLISH; 4096 is `PluginDeadLetter.headLimit`.
let headLimits = [0, 16, 4096]
/// An oversized PUBLISH is skipped once its variable header has arrived: fixed header (≤ 5),
/// topic (2 + ≤ 65,535) and packet id (2). Until then the decoder holds it, so that (or
/// `maxPacketSize`, whichever is larger) is what it may buffer between reads.
let skipHeaderBound = 5 + 2 + 65_535 + 2

/// Reads per input, the last one taking whatever is left.
let maxReads = 64

/// `[site] topics` by default, and the method responses the subscriber also takes.
let deviceFilters = ["devices/+/messages/events/#", "site/+/up"]
let compiledFilters = deviceFilters.map { CompiledTopicFilter($0)! }
let methodResponseFilter = "devices/+/methods/res/#"

/// One fuzz input, read as what the broker sends the site subscriber. Header (5 bytes):
/// byte 0 picks `maxPacketSize` (bits 0–1) and the kept head (bits 2–3); bytes 1–4 are read
/// sizes, used in turn (0: everything left in one read, n: max(1, n² / 8) bytes; the 64th read
/// takes the rest). The rest is the stream.
///
/// It is fed read by read to a decoder configured like the subscriber's
/// (`.skip(keepingHead:)`), draining `nextEvent()` after every read, as the receive loop does;
/// a throw ends the connection, and the following reads go to a fresh decoder (the reconnect).
/// Nothing may crash or hang, and per connection:
/// - bytes consumed never exceed bytes appended, and they are exactly the sizes of the events
///   reported so far (every byte is accounted to a packet or a skipped PUBLISH);
/// - between reads the decoder holds less than one packet (`maxPacketSize`, or a skipped
///   PUBLISH's variable header), and nothing while skipping: no unbounded buffering;
/// - a decoded PUBLISH's payload is the last bytes of its packet, its topic a valid topic name
///   (§4.7: non-empty, no U+0000, no wildcard), a packet id exactly at QoS > 0 and non-zero;
/// - a skipped PUBLISH is over the limit, its sizes add up, and its head is the first bytes of
///   its payload, `min(payloadSize, keepingHead)` of them;
/// - every decoded packet re-encodes to the bytes received (bar a non-minimal Remaining
///   Length), so it survives encode → decode;
/// - decoding the connection's bytes in one read gives the same events and the same error;
/// - after a throw, the decoder keeps throwing the same error and ignores further input;
/// - the subscriber's topic routing (copied below: it is internal to the plugin) finds a
///   non-empty device id in the right level of every topic a filter matches.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 5 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let maxPacketSize = packetLimits[Int(bytes[0] & 0b11)]
    let headLimit = headLimits[Int((bytes[0] >> 2) & 0b11) % headLimits.count]
    let reads = Array(bytes[1..<5])
    let stream = bytes[5...]

    var connection = Connection(maxPacketSize: maxPacketSize, headLimit: headLimit)
    var position = stream.startIndex
    var readNumber = 0
    while position < stream.endIndex {
        let code = Int(reads[readNumber % reads.count])
        readNumber += 1
        // 1 byte up to 8 KiB: 1–8 → 1 byte, 9 → 10, 32 → 128, 255 → 8,128.
        let wanted = max(1, code * code / 8)
        // After `maxReads` reads the rest comes in one: read boundaries matter near packet
        // boundaries, and thousands of 1-byte reads over a large payload only slow the search.
        let end = code == 0 || readNumber >= maxReads ? stream.endIndex : min(position + wanted, stream.endIndex)
        let chunk = stream[position..<end]
        position = end
        if !connection.receive(chunk) {
            connection.finish()
            connection = Connection(maxPacketSize: maxPacketSize, headLimit: headLimit)
        }
    }
    connection.finish()
    return 0
}

/// What the decoder reported.
enum Reported: Equatable {
    case packet(MQTTPacket, size: Int)
    case skipped(SkippedPublish)
}

/// One connection of the subscriber: its decoder, and everything appended to it.
struct Connection {
    let maxPacketSize: Int
    let headLimit: Int
    var decoder: MQTTDecoder
    var appended: [UInt8] = []
    /// Bytes accounted for by the events reported so far.
    var reportedBytes = 0
    var events: [Reported] = []
    var error: MQTTProtocolError?

    init(maxPacketSize: Int, headLimit: Int) {
        self.maxPacketSize = maxPacketSize
        self.headLimit = headLimit
        decoder = MQTTDecoder(maxPacketSize: maxPacketSize, oversizedPublishes: .skip(keepingHead: headLimit))
    }

    var consumed: Int { appended.count - decoder.bufferedByteCount }

    /// One read: append it, decode every complete event. False once the decoder threw.
    mutating func receive(_ chunk: ArraySlice<UInt8>) -> Bool {
        appended.append(contentsOf: chunk)
        chunk.withUnsafeBytes { decoder.append($0) }
        do {
            while true {
                let before = consumed
                guard let event = try decoder.nextEvent() else { break }
                let after = consumed
                guard after <= appended.count, after > before else {
                    fatalError("an event consumed no bytes (\(before) → \(after) of \(appended.count))")
                }
                switch event {
                case .packet(let packet):
                    let size = after - reportedBytes
                    check(packet, at: reportedBytes, size: size)
                    events.append(.packet(packet, size: size))
                    reportedBytes += size
                case .skippedPublish(let skipped):
                    check(skipped, at: reportedBytes)
                    events.append(.skipped(skipped))
                    reportedBytes += skipped.packetSize
                }
                guard reportedBytes == after else {
                    fatalError("events account for \(reportedBytes) bytes, the decoder consumed \(after)")
                }
            }
        } catch {
            self.error = error
            guard decoder.bufferedByteCount == 0 else { fatalError("a failed decoder keeps its buffer") }
            decoder.append([0x30, 0x00])
            guard decoder.bufferedByteCount == 0 else { fatalError("a failed decoder took more input") }
            do {
                _ = try decoder.nextEvent()
                fatalError("a failed decoder decoded again")
            } catch let again {
                guard again == error else { fatalError("a failed decoder changed its error: \(error) → \(again)") }
            }
            return false
        }
        // Between reads: at most one incomplete packet, and nothing while skipping.
        let buffered = decoder.bufferedByteCount
        guard consumed >= reportedBytes, consumed <= appended.count else {
            fatalError("consumed \(consumed) of \(appended.count) bytes, events account for \(reportedBytes)")
        }
        if decoder.isSkipping {
            guard buffered == 0 else { fatalError("skipping, yet \(buffered) bytes are buffered") }
        } else {
            guard consumed == reportedBytes else {
                fatalError("not skipping, yet \(consumed - reportedBytes) consumed bytes are unreported")
            }
            guard buffered < max(maxPacketSize, skipHeaderBound) else {
                fatalError("\(buffered) bytes buffered with a \(maxPacketSize)-byte packet limit")
            }
        }
        return true
    }

    /// The connection ended (a throw, or the input): the same bytes in one read must decode
    /// to the same events and the same error.
    func finish() {
        var whole = Connection(maxPacketSize: maxPacketSize, headLimit: headLimit)
        guard !appended.isEmpty else { return }
        whole.appendOnly(appended)
        guard whole.events == events, whole.error == error else {
            fatalError(
                "the events depend on how the reads split the stream: \(events.count) vs \(whole.events.count), \(String(describing: error)) vs \(String(describing: whole.error))"
            )
        }
    }

    private mutating func appendOnly(_ bytes: [UInt8]) {
        appended = bytes
        decoder.append(bytes)
        do {
            while let event = try decoder.nextEvent() {
                switch event {
                case .packet(let packet):
                    let size = consumed - reportedBytes
                    events.append(.packet(packet, size: size))
                    reportedBytes += size
                case .skippedPublish(let skipped):
                    events.append(.skipped(skipped))
                    reportedBytes += skipped.packetSize
                }
            }
        } catch {
            self.error = error
        }
    }

    func check(_ packet: MQTTPacket, at start: Int, size: Int) {
        guard size >= 2, size <= maxPacketSize, start + size <= appended.count else {
            fatalError(
                "a \(packet.name) of \(size) bytes at \(start) (limit \(maxPacketSize), \(appended.count) appended)")
        }
        let encoded = packet.encoded
        // The Remaining Length may be non-minimal in the input (§2.2.3 allows it): up to 3 bytes.
        guard encoded.count <= size, size - encoded.count <= 3, encoded.count == packet.encodedSize else {
            fatalError("\(packet.name): \(size) bytes in, \(encoded.count) re-encoded")
        }
        // Encoded and received packets differ at most in the Remaining Length's bytes (so the
        // packet survives encode → decode, the decoder being deterministic).
        let body = encoded.count - 1 - lengthBytes(encoded)
        guard encoded[0] == appended[start],
            encoded.suffix(body).elementsEqual(appended[(start + size - body)..<(start + size)])
        else { fatalError("\(packet.name) re-encoded is not the bytes received") }
        guard case .publish(let publish) = packet else { return }
        checkTopic(publish.topic, qos: publish.qos, packetID: publish.packetID)
        guard publish.payload.count <= size,
            appended[(start + size - publish.payload.count)..<(start + size)].elementsEqual(publish.payload)
        else { fatalError("a PUBLISH payload is not the end of its packet") }
        route(publish.topic)
    }

    func check(_ skipped: SkippedPublish, at start: Int) {
        guard skipped.packetSize > maxPacketSize, start + skipped.packetSize <= appended.count else {
            fatalError(
                "skipped a PUBLISH of \(skipped.packetSize) bytes at \(start) (limit \(maxPacketSize), \(appended.count) appended)"
            )
        }
        checkTopic(skipped.topic, qos: skipped.qos, packetID: skipped.packetID)
        let headerBytes = skipped.packetSize - skipped.payloadSize
        let variableHeader = 2 + skipped.topic.utf8.count + (skipped.packetID == nil ? 0 : 2)
        // Fixed header: 1 byte, and 1 to 4 of Remaining Length.
        guard skipped.payloadSize >= 0, (2...5).contains(headerBytes - variableHeader) else {
            fatalError("a skipped PUBLISH's sizes do not add up: \(skipped)")
        }
        let payloadStart = start + headerBytes
        guard skipped.head.count == min(skipped.payloadSize, headLimit),
            appended[payloadStart..<payloadStart + skipped.head.count].elementsEqual(skipped.head)
        else { fatalError("a skipped PUBLISH's head is not its payload's first bytes") }
        guard appended[start] >> 4 == 3, skipped.retain == (appended[start] & 1 != 0),
            skipped.dup == (appended[start] & 0b1000 != 0)
        else { fatalError("a skipped PUBLISH's flags are not its fixed header's") }
        route(skipped.topic)
    }
}

/// The number of Remaining Length bytes of an encoded packet.
func lengthBytes(_ encoded: [UInt8]) -> Int {
    var count = 1
    while encoded[count] & 0x80 != 0 { count += 1 }
    return count
}

/// What the decoder promises of a PUBLISH topic and packet id (§3.3.2, §4.7.3, §2.3.1).
func checkTopic(_ topic: String, qos: QoS, packetID: UInt16?) {
    guard TopicFilter.validateTopicName(topic), !topic.utf8.contains(0), !topic.contains("+"), !topic.contains("#"),
        !topic.isEmpty, topic.utf8.count <= TopicFilter.maximumLength
    else { fatalError("the decoder accepted the topic \(Array(topic.utf8))") }
    guard (qos == .atMostOnce) == (packetID == nil), packetID != 0 else {
        fatalError("QoS \(qos) with packet id \(String(describing: packetID))")
    }
}

/// The site subscriber's routing: `CompiledTopicFilter` (what `DeviceTopicFilter.route` in
/// Plugins/MQTTTransport uses) must agree with `TopicFilter.matches`, and a matching topic must
/// yield the filter's `+` level and the property bag the rest; then the method-response parse
/// (SiteSubscriber.swift, internal to the plugin, so restated here). Levels are split on the
/// byte `/` (`CompiledTopicFilter.levels`): this fuzzer found that splitting a String on the
/// Character "/" merges "/" with a following combining mark (run 5 in Fuzz/README.md).
func route(_ topic: String) {
    let levels = CompiledTopicFilter.levels(of: topic)
    var bytes = topic
    for (filter, compiled) in zip(deviceFilters, compiledFilters) {
        let match = bytes.withUTF8 { compiled.match($0) }
        guard (match != nil) == TopicFilter.matches(filter: filter, topic: topic) else {
            fatalError("CompiledTopicFilter and TopicFilter disagree on \(filter) and \(topic)")
        }
        guard let match else { continue }
        let utf8 = Array(topic.utf8)
        let filterLevels = CompiledTopicFilter.levels(of: filter)
        guard let plus = match.firstPlus else { fatalError("\(filter) matched \(topic) without its + level") }
        guard let deviceLevel = filterLevels.firstIndex(of: "+") else { fatalError("bad filter") }
        guard deviceLevel < levels.count else { fatalError("\(filter) matched \(topic) without its + level") }
        for (index, level) in filterLevels.enumerated() where level != "+" && level != "#" {
            guard levels[index] == level else { fatalError("\(filter) matched \(topic) at a different level") }
        }
        let device = levels[deviceLevel]
        guard !device.utf8.contains(UInt8(ascii: "/")) else { fatalError("a device id with a /") }
        guard String(decoding: utf8[plus], as: UTF8.self) == device else {
            fatalError("CompiledTopicFilter found the device \(utf8[plus]) in \(topic), not \(device)")
        }
        if filterLevels.last == "#", levels.count >= filterLevels.count {
            let rest = levels[(filterLevels.count - 1)...].joined(separator: "/")
            guard match.rest.map({ String(decoding: utf8[$0], as: UTF8.self) }) == rest else {
                fatalError("CompiledTopicFilter found another property bag in \(topic)")
            }
        } else if filterLevels.last != "#", levels.count != filterLevels.count {
            fatalError("\(filter) matched \(topic) with another number of levels")
        }
    }
    if TopicFilter.matches(filter: methodResponseFilter, topic: topic) {
        guard levels.count >= 4, levels[0] == "devices", levels[2] == "methods", levels[3] == "res" else {
            fatalError("\(methodResponseFilter) matched \(topic)")
        }
        if levels.count == 6, let status = Int32(levels[4]), (100...599).contains(status), levels[5].hasPrefix("?") {
            _ = levels[5].dropFirst().split(separator: "&")
        }
    }
}
