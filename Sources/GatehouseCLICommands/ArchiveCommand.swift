import ArgumentParser
import FoundationEssentials
import GatehouseBasics
import GatehouseCore
import GatehouseStore
import StrictJSON

#if canImport(Glibc)
    import Glibc
#endif

/// `gatehouse archive …`: what the telemetry rules keep on the gateway (`route telemetry … to
/// archive`, within `[archive] max_bytes` and `max_age`). Wiring only.
struct Archive: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Export the telemetry the rules keep on the gateway (route … to archive).",
        subcommands: [Export.self])
}

extension Archive {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write archived messages as JSON lines, oldest first.",
            discussion: """
                One object a line: id, time (ISO 8601, UTC) and time_ms (when archived), created_ms, device, \
                topic, properties (an object; a key that repeats keeps its first value), rule (the route that \
                archived it), size, and the payload: `body` holds it as JSON when it is a JSON text (UTF-8, \
                strict RFC 8259, no name twice in an object), written compactly; otherwise `payload_base64` \
                holds its bytes.
                """)

        @OptionGroup var options: ConfigOption
        @Option(help: "Only messages archived in the last DURATION (e.g. 30m, 1h, 7d).") var since: String?
        @Option(help: "Only this device's messages.") var device: String?
        @Option(name: .shortAndLong, help: "Write to this file instead of standard output.") var output: String?

        func run() throws {
            let config = try options.loadConfig()
            let store = try ConfigOption.openState(config)
            var sinceMS: Int64 = 0
            if let since {
                guard let window = Units.duration(since) else {
                    throw ValidationError("--since \(since): expected a duration such as 30m, 1h or 7d")
                }
                sinceMS = Int64(Date().timeIntervalSince1970 * 1000) - window.components.seconds * 1000
            }
            let out: OutputFile
            if let output {
                do {
                    out = try OutputFile(creating: output)
                } catch {
                    throw ValidationError("\(output): cannot create the file (\(error.reason))")
                }
            } else {
                out = .standardOutput
            }
            var afterID: Int64 = 0
            var written = 0
            while true {
                let page = try store.archiveRecords(sinceMS: sinceMS, afterID: afterID, device: device, limit: 1000)
                guard let last = page.last else { break }
                var chunk = ""
                for record in page { chunk += Self.line(record) + "\n" }
                out.write(chunk)
                written += page.count
                afterID = last.id
            }
            if let output { StandardStreams.writeError("\(written) message(s) written to \(output)\n") }
        }

        /// One JSON line for an archived message.
        static func line(_ record: ArchiveRecord) -> String {
            var properties = JSONObject()
            for property in record.properties where properties[property.key] == nil {
                properties[property.key] = .string(property.value)
            }
            var object: JSONObject = [
                "id": .int(record.id), "time": .string(Self.iso8601(record.timeMS)), "time_ms": .int(record.timeMS),
                "created_ms": .int(record.createdMS), "device": .string(record.deviceID),
                "topic": .string(record.topic), "properties": .object(properties), "rule": .string(record.rule),
                "size": .int(record.payload.count),
            ]
            if let body = try? JSONValue(parsing: record.payload) {
                object["body"] = body
            } else {
                object["payload_base64"] = .string(Data(record.payload).base64EncodedString())
            }
            return JSONValue.object(object).description
        }

        static func iso8601(_ ms: Int64) -> String {
            Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(
                Date(timeIntervalSince1970: Double(ms) / 1000))
        }
    }
}
