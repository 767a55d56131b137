import ArgumentParser
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehouseStore

#if canImport(Glibc)
    import Glibc
#endif

/// `gatehouse dead-letters …`: the messages that can never be delivered, kept instead of wedging
/// their device (docs/architecture.md, "Failure model"). `list`, `show` and `export` only read
/// the state database; `requeue` and `purge` write it, safely while gatehoused runs (SQLite
/// serialises the writers), and `requeue` tells a running gatehoused (SIGHUP) to take the
/// message back into its queues. Everything a device or the hub chose (device ids, topics,
/// properties, payload text) is printed with control and format characters escaped
/// (`ControlEscaping`), as `gatehouse audit` does.
struct DeadLetters: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "Messages that can never be delivered: list, show, export, requeue, purge.",
        discussion: """
            A site message over [site] max_message_bytes (only its first 4 KiB are kept), one IoT Hub can \
            never take (over its size limit with its properties, or a topic too long), and one the hub \
            keeps refusing are consumed, acknowledged and kept here instead of blocking their device. \
            [dead_letters] max_bytes and max_age bound what is kept. Exit status: 0 ok, 65 the dead letter \
            cannot be requeued, 66 no such dead letter, 74 the state database cannot be read or written.
            """,
        subcommands: [List.self, Show.self, Export.self, Requeue.self, Purge.self], defaultSubcommand: List.self)

    /// Exit statuses (sysexits.h).
    enum Exit {
        static let dataError: Int32 = 65  // EX_DATAERR: cannot be requeued
        static let noInput: Int32 = 66  // EX_NOINPUT: no such dead letter
        static let ioError: Int32 = 74  // EX_IOERR: state database
    }

    /// The state database, read-only; exit 74 if it cannot be opened.
    static func reader(_ options: ConfigOption) throws -> StateStore {
        let config = try options.loadConfig()
        do {
            return try StateStore(readingFrom: config.gateway.stateDB)
        } catch {
            throw fail("dead-letters", "\(error)", Exit.ioError)
        }
    }

    /// Text a device or the hub chose, safe for a terminal.
    static func shown(_ text: String, empty: String = "-") -> String {
        text.isEmpty ? empty : ControlEscaping.escape(text)
    }

    /// The properties as `key=value` pairs, escaped.
    static func properties(_ letter: DeadLetterRecord) -> String {
        letter.properties.map { "\(shown($0.key, empty: ""))=\(shown($0.value, empty: ""))" }.joined(separator: " ")
    }

    /// Where it came from: the site topic, or the hub side's properties.
    static func origin(_ letter: DeadLetterRecord) -> String {
        switch letter.source {
        case .site: shown(letter.topic)
        case .hub: letter.properties.isEmpty ? "(no properties)" : properties(letter)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The dead letters, newest first (no payload bytes).")

        @OptionGroup var options: ConfigOption
        @Option(help: "Only this device's.") var device: String?
        @Option(help: "At most this many.") var limit = 50
        @Flag(help: "Print JSON lines (as export, without payloads).") var json = false

        func run() throws {
            let store = try DeadLetters.reader(options)
            let letters = try store.deadLetters(deviceID: device, limit: limit)
            if json {
                for letter in letters { print(try Export.line(letter, payload: false)) }
                return
            }
            guard !letters.isEmpty else {
                print("(no dead letters)")
                return
            }
            let header = ["ID", "TIME", "SOURCE", "DEVICE", "SIZE", "REASON", "TOPIC / PROPERTIES"]
            var rows = [header]
            for letter in letters {
                rows.append([
                    "\(letter.id)", Status.format(letter.timeMS), letter.source.rawValue, shown(letter.deviceID),
                    "\(letter.size)", shown(letter.reason), origin(letter),
                ])
            }
            let widths = (0..<header.count - 1).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = zip(row, widths).map { $0.padded(to: $1) }
                print((padded + [row[header.count - 1]]).joined(separator: "  "))
            }
        }

        func shown(_ text: String) -> String { DeadLetters.shown(text) }
        func origin(_ letter: DeadLetterRecord) -> String { DeadLetters.origin(letter) }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "One dead letter: where it came from, why, and the payload bytes kept (text or hex).")

        @OptionGroup var options: ConfigOption
        @Argument(help: "The dead letter's id (see list).") var id: Int64
        @Flag(help: "Print it as one JSON line, payload in base64.") var json = false

        func run() throws {
            let store = try DeadLetters.reader(options)
            guard let letter = try store.deadLetter(id: id) else {
                throw fail("dead-letters show", "no dead letter \(id)", Exit.noInput)
            }
            if json {
                print(try Export.line(letter, payload: true))
                return
            }
            print(Self.render(letter))
        }

        static func render(_ letter: DeadLetterRecord) -> String {
            var lines = [
                "dead letter \(letter.id)",
                "  time:       \(Status.format(letter.timeMS))",
                "  source:     \(letter.source.rawValue)",
                "  device:     \(DeadLetters.shown(letter.deviceID))",
                "  reason:     \(DeadLetters.shown(letter.reason))",
            ]
            if !letter.detail.isEmpty { lines.append("  detail:     \(DeadLetters.shown(letter.detail))") }
            if !letter.topic.isEmpty { lines.append("  topic:      \(DeadLetters.shown(letter.topic))") }
            if !letter.properties.isEmpty { lines.append("  properties: \(DeadLetters.properties(letter))") }
            lines.append("  first seen: \(Status.format(letter.createdMS))")
            if let seq = letter.outboxSeq { lines.append("  outbox seq: \(seq)") }
            let kept =
                letter.isComplete
                ? "\(letter.size) bytes, kept whole\(letter.isRequeueable ? " (requeue puts it back)" : "")"
                : "\(letter.size) bytes, the first \(letter.payload.count) kept"
            lines.append("  payload:    \(kept)")
            lines.append(contentsOf: preview(letter.payload).map { "    " + $0 })
            return lines.joined(separator: "\n")
        }

        /// The kept payload: as text (escaped) when it is UTF-8, else as a hex dump; at most
        /// 1 KiB either way (`export` has all of it).
        static func preview(_ payload: [UInt8]) -> [String] {
            let shownBytes = payload.prefix(1024)
            guard !shownBytes.isEmpty else { return [] }
            let more = payload.count > shownBytes.count ? ["… \(payload.count - shownBytes.count) more byte(s)"] : []
            if let text = String(validating: shownBytes, as: UTF8.self) {
                return [ControlEscaping.escape(text)] + more
            }
            var lines: [String] = []
            for offset in stride(from: 0, to: shownBytes.count, by: 16) {
                let row = shownBytes.dropFirst(offset).prefix(16)
                let hex = row.map { Hex.string(Int($0), width: 2) }.joined(separator: " ")
                let ascii = String(row.map { (0x20..<0x7F).contains($0) ? Character(UnicodeScalar($0)) : "." })
                lines.append(
                    Hex.string(offset, width: 8) + "  " + hex.padded(to: 47) + "  "
                        + ascii)
            }
            return lines + more
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every dead letter, oldest first, as JSON lines (payload in base64).",
            discussion: """
                One object a line: id, time and timeMS, source, device, topic, properties (a list of \
                [key, value]), size, reason, detail, complete (whether payloadBase64 is the whole payload), \
                createdMS, outboxSeq, payloadBase64. --output writes a new file readable by its owner only.
                """)

        @OptionGroup var options: ConfigOption
        @Option(name: .shortAndLong, help: "Write to this file (mode 0600) instead of standard output.")
        var output: String?
        @Option(help: "Only this device's.") var device: String?

        func run() throws {
            let store = try DeadLetters.reader(options)
            var sink: OutputFile = .standardOutput
            if let output {
                do {
                    sink = try OutputFile(creating: output, mode: 0o600)
                } catch {
                    throw fail("dead-letters export", error.description, Exit.ioError)
                }
            }
            var after: Int64 = 0
            var count = 0
            while true {
                let page = try store.deadLetters(afterID: after, limit: 200)
                guard let last = page.last else { break }
                after = last.id
                for letter in page where device == nil || letter.deviceID == device {
                    sink.write(try Self.line(letter, payload: true) + "\n")
                    count += 1
                }
            }
            if output != nil {
                StandardStreams.writeError("exported \(count) dead letter(s) to \(output!)\n")
            }
        }

        struct Line: Encodable {
            var id: Int64
            var time: String
            var timeMS: Int64
            var source: String
            var device: String
            var topic: String
            var properties: [[String]]
            var size: Int
            var reason: String
            var detail: String
            var complete: Bool
            var createdMS: Int64
            var outboxSeq: Int64?
            var payloadBase64: String?
        }

        /// One dead letter as one line of JSON, control characters escaped.
        static func line(_ letter: DeadLetterRecord, payload: Bool) throws -> String {
            let line = Line(
                id: letter.id, time: Status.format(letter.timeMS), timeMS: letter.timeMS,
                source: letter.source.rawValue, device: letter.deviceID, topic: letter.topic,
                properties: letter.properties.map { [$0.key, $0.value] }, size: letter.size, reason: letter.reason,
                detail: letter.detail, complete: letter.isComplete, createdMS: letter.createdMS,
                outboxSeq: letter.outboxSeq, payloadBase64: payload ? Data(letter.payload).base64EncodedString() : nil)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return ControlEscaping.escapeJSON(String(decoding: try encoder.encode(line), as: UTF8.self))
        }
    }

    struct Requeue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a hub-side dead letter back into the outbox, after what waits there.",
            discussion: """
                Only a dead letter kept whole (source hub) can go back; a site-side one kept only its first \
                4 KiB. The message gets a new place at the end of the outbox (its device's order among new \
                messages follows), in one transaction with the dead letter's removal. A running gatehoused is \
                told with SIGHUP and takes it into its queues; one that is stopped sends it when it starts. \
                A message over IoT Hub's limits becomes a dead letter again.
                """)

        @OptionGroup var options: ConfigOption
        @Argument(help: "The dead letter's id (see list).") var id: Int64

        func run() throws {
            let config = try options.loadConfig()
            let store = try ConfigOption.openStateForWriting(config, command: "dead-letters requeue")
            let record: OutboxRecord
            do {
                record = try store.requeueDeadLetter(id: id, nowMS: Int64(Date().timeIntervalSince1970 * 1000))
            } catch let error where error.code == .notFound {
                throw fail("dead-letters requeue", "no dead letter \(id)", Exit.noInput)
            } catch let error where error.code == .notRequeueable {
                throw fail("dead-letters requeue", error.message, Exit.dataError)
            } catch {
                throw fail("dead-letters requeue", "\(error)", Exit.ioError)
            }
            print(
                "dead letter \(id) of \(DeadLetters.shown(record.deviceID)) is back in the outbox (seq \(record.seq)); "
                    + Self.notify(config))
        }

        /// Tells a running gatehoused to take the requeued rows (SIGHUP); what to tell the user.
        static func notify(_ config: GatewayConfig) -> String {
            guard let status = try? StateStore(readingFrom: config.gateway.stateDB).readStatus(),
                Status.isRunning(status)
            else {
                return "gatehoused is not running; it sends it when it starts"
            }
            guard kill(status.pid, SIGHUP) == 0 else {
                return "could not signal gatehoused (pid \(status.pid)): \(String(cString: strerror(errno))); "
                    + "send it SIGHUP or restart it to send the message"
            }
            return "asked gatehoused (pid \(status.pid)) to send it (SIGHUP)"
        }
    }

    struct Purge: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete dead letters: the ones named, those older than a duration, or all.")

        @OptionGroup var options: ConfigOption
        @Argument(help: "Ids of the dead letters to delete.") var ids: [Int64] = []
        @Flag(help: "Delete every dead letter.") var all = false
        @Option(help: "Delete those older than DURATION (e.g. 12h, 7d).") var olderThan: String?

        func validate() throws {
            let chosen = [all, olderThan != nil, !ids.isEmpty].filter { $0 }.count
            guard chosen == 1 else {
                throw ValidationError("name the dead letters to delete: IDs, --older-than DURATION or --all (one)")
            }
            if let olderThan, Units.duration(olderThan) == nil {
                throw ValidationError("--older-than \(olderThan): expected a duration such as 30m, 12h or 7d")
            }
        }

        func run() throws {
            let config = try options.loadConfig()
            let store = try ConfigOption.openStateForWriting(config, command: "dead-letters purge")
            let selection: DeadLetterSelection
            if all {
                selection = .all
            } else if let olderThan, let window = Units.duration(olderThan) {
                selection = .olderThan(Int64(Date().timeIntervalSince1970 * 1000) - window.components.seconds * 1000)
            } else {
                selection = .ids(ids)
            }
            let removed: Int
            do {
                removed = try store.purgeDeadLetters(selection)
            } catch {
                throw fail("dead-letters purge", "\(error)", Exit.ioError)
            }
            print("deleted \(removed) dead letter(s)")
            if case .ids(let wanted) = selection, removed < Set(wanted).count {
                throw fail(
                    "dead-letters purge", "\(Set(wanted).count - removed) of the ids named were not there", Exit.noInput
                )
            }
        }
    }
}
