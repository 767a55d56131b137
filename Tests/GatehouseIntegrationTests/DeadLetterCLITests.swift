import Foundation
import GatehouseStore
import GatehouseTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `gatehouse dead-letters list|show|export|requeue|purge` and the count in `gatehouse status`,
/// against a state database filled through the store, as gatehoused would have filled it.
@Suite("gatehouse dead-letters", .serialized)
struct DeadLetterCLITests {
    final class Fixture: @unchecked Sendable {
        // @unchecked: used from one test at a time; immutable after init.
        let dir = TempDir("gatehouse-dlq-cli")
        let configPath: String
        let store: StateStore
        let site: DeadLetterRecord
        let hub: DeadLetterRecord
        let head: [UInt8] = [0xFF, 0x00] + Array("\u{1B}[2Jbinary".utf8)

        init() throws {
            configPath = try dir.write(
                "gatehouse.toml",
                """
                [gateway]
                state_db = "\(dir.file("state.db"))"
                [site]
                plugin = "mqtt"
                [hub]
                plugin = "mqtt"
                hostname = "h.example"
                """)
            store = try StateStore(path: dir.file("state.db"))
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            // A device id and topic chosen to rewrite a terminal: they must come out escaped.
            site = try store.addDeadLetters([
                DeadLetterRecord(
                    timeMS: now - 7200_000, deviceID: "evil\u{1B}[31m", source: .site,
                    topic: "devices/evil\u{1B}[31m/messages/events/\u{202E}x=1", size: 2 << 20, reason: "too-large",
                    detail: "2097152 bytes, over [site] max_message_bytes (1048576)", payload: head)
            ])[0]
            let stored = try store.appendToOutbox([
                OutboxRecord(
                    deviceID: "pump-1", properties: [OutboxProperty("$.ct", "text/plain")],
                    payload: Array("line one\nline two".utf8), createdMS: now - 1000, enqueuedMS: now - 1000)
            ])
            hub = try store.moveToDeadLetters(
                seqs: [stored[0].seq], reason: "hub-refused", detail: "the hub dropped the connection 3 times",
                nowMS: now)[0]
        }

        func run(_ arguments: [String]) throws -> (Int32, String) {
            try Subprocess.run(Paths.gatehouseCLI, ["dead-letters"] + arguments + ["-c", configPath])
        }
    }

    @Test("list: newest first, what the devices chose escaped, no payload")
    func list() throws {
        let fixture = try Fixture()
        let (code, output) = try fixture.run(["list"])
        #expect(code == 0, "\(output)")
        let lines = output.split(separator: "\n")
        #expect(lines.count == 3)
        #expect(lines[1].hasPrefix("\(fixture.hub.id) "))
        #expect(lines[1].contains("hub") && lines[1].contains("pump-1") && lines[1].contains("hub-refused"))
        #expect(lines[1].contains("$.ct=text/plain"))
        #expect(lines[2].contains("evil\\u{1B}[31m") && lines[2].contains("\\u{202E}x=1"))
        #expect(!output.contains("\u{1B}") && !output.contains("\u{202E}"))
        #expect(!output.contains("line one"))
    }

    @Test("show: the kept bytes as text or hex, and how much was kept")
    func show() throws {
        let fixture = try Fixture()
        var (code, output) = try fixture.run(["show", "\(fixture.site.id)"])
        #expect(code == 0, "\(output)")
        #expect(output.contains("2097152 bytes, the first \(fixture.head.count) kept"))
        #expect(output.contains("00000000  ff 00 1b 5b 32 4a 62 69 6e 61 72 79"))
        #expect(!output.contains("\u{1B}"))
        (code, output) = try fixture.run(["show", "\(fixture.hub.id)"])
        #expect(code == 0)
        #expect(output.contains("kept whole (requeue puts it back)"))
        #expect(output.contains("line one\\nline two"))
        #expect(output.contains("properties: $.ct=text/plain"))
        (code, output) = try fixture.run(["show", "424242"])
        #expect(code == 66 && output.contains("no dead letter 424242"))
    }

    @Test("export: JSON lines with the payload in base64, to a file only its owner reads")
    func export() throws {
        let fixture = try Fixture()
        let path = fixture.dir.file("dead.jsonl")
        let (code, output) = try fixture.run(["export", "--output", path])
        #expect(code == 0, "\(output)")
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("\u{1B}"))
        let lines = try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        #expect(lines.map { $0["id"] as? Int } == [Int(fixture.site.id), Int(fixture.hub.id)])
        #expect(lines[0]["device"] as? String == "evil\u{1B}[31m")  // the JSON reads back exactly
        #expect(lines[0]["complete"] as? Bool == false)
        #expect(Data(base64Encoded: lines[0]["payloadBase64"] as? String ?? "") == Data(fixture.head))
        #expect(Data(base64Encoded: lines[1]["payloadBase64"] as? String ?? "") == Data("line one\nline two".utf8))
        #expect(lines[1]["properties"] as? [[String]] == [["$.ct", "text/plain"]])
    }

    @Test("requeue: a hub dead letter goes back to the outbox and a running gatehoused is told; a site one cannot")
    func requeue() throws {
        let fixture = try Fixture()
        var (code, output) = try fixture.run(["requeue", "\(fixture.site.id)"])
        #expect(code == 65 && output.contains("kept only the first"), "\(output)")
        (code, output) = try fixture.run(["requeue", "999"])
        #expect(code == 66)

        // A stand-in for a running gatehoused: its pid and a fresh heartbeat in the status row.
        let daemon = try Subprocess(
            "/bin/sh", ["-c", "trap 'echo hangup; exit 0' HUP; while :; do sleep 0.1; done"], in: fixture.dir,
            name: "daemon")
        defer { daemon.stop() }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try fixture.store.writeStatus(DaemonStatus(pid: daemon.pid, version: "t", startedMS: now, heartbeatMS: now))
        (code, output) = try fixture.run(["requeue", "\(fixture.hub.id)"])
        #expect(code == 0, "\(output)")
        #expect(output.contains("back in the outbox") && output.contains("asked gatehoused (pid \(daemon.pid))"))
        #expect(daemon.wait(timeout: .seconds(5)) == 0)
        #expect(daemon.stdout.contains("hangup"))
        let requeued = try fixture.store.takeRequeuedOutbox()
        #expect(requeued.map(\.payload) == [Array("line one\nline two".utf8)])
        #expect(requeued.first?.properties == [OutboxProperty("$.ct", "text/plain")])
        #expect(try fixture.store.deadLetter(id: fixture.hub.id) == nil)
    }

    @Test("purge: by id, by age, all; nothing without a choice")
    func purge() throws {
        let fixture = try Fixture()
        var (code, output) = try fixture.run(["purge"])
        #expect(code == 64, "\(output)")
        (code, output) = try fixture.run(["purge", "--older-than", "1h"])
        #expect(code == 0 && output.contains("deleted 1 dead letter(s)"), "\(output)")  // the site one, 2 h old
        (code, output) = try fixture.run(["purge", "\(fixture.hub.id)", "777"])
        #expect(code == 66 && output.contains("deleted 1 dead letter(s)"))
        (code, output) = try fixture.run(["purge", "--all"])
        #expect(code == 0 && output.contains("deleted 0 dead letter(s)"))
        #expect(try fixture.store.deadLetters().isEmpty)
    }

    @Test("status counts them, by reason")
    func status() throws {
        let fixture = try Fixture()
        let (code, output) = try Subprocess.run(Paths.gatehouseCLI, ["status", "--json", "-c", fixture.configPath])
        #expect(code == 0, "\(output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let counted = try #require(json["deadLetters"] as? [String: Any])
        #expect(counted["count"] as? Int == 2)
        #expect(counted["byReason"] as? [String: Int] == ["too-large": 1, "hub-refused": 1])
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        try fixture.store.writeStatus(DaemonStatus(pid: 1, version: "t", startedMS: now - 60_000, heartbeatMS: now))
        let (_, table) = try Subprocess.run(Paths.gatehouseCLI, ["status", "-c", fixture.configPath])
        #expect(table.contains("1 dead-lettered"))
        #expect(table.contains("dead letters: 2 kept (hub-refused 1, too-large 1;"))
    }
}
