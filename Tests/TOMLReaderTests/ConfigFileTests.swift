import Foundation
import TOMLReader
import Testing

/// gatehouse's own configuration files, as shipped: they must read, with the keys the loader
/// looks for, as tomllib reads them.
@Suite struct ConfigFileTests {
    /// The repository: the first directory above this file with `packaging/gatehouse.toml`.
    static let repository: URL? = {
        // Symlinks resolved: a package elsewhere may link to these test files.
        var folder = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent()
        while folder.path != "/" {
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("packaging/gatehouse.toml").path) {
                return folder
            }
            folder.deleteLastPathComponent()
        }
        return nil
    }()

    static func read(_ path: String) throws -> (text: String, table: TOMLTable)? {
        guard let repository else {
            Issue.record("packaging/gatehouse.toml not found above \(#filePath)")
            return nil
        }
        let text = try String(contentsOf: repository.appendingPathComponent(path), encoding: .utf8)
        return (text, try TOMLTable(parsing: text))
    }

    /// The 1-based line of the first line of `text` that is exactly `line`.
    static func line(of line: String, in text: String) -> Int? {
        text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0 == line }.map { $0 + 1 }
    }

    @Test func packagedDefaults() throws {
        guard let (text, table) = try Self.read("packaging/gatehouse.toml") else { return }
        #expect(
            table.keys == [
                "gateway", "outbox", "archive", "dead_letters", "identity", "site", "hub", "metrics", "twin",
            ])
        let gateway = try #require(table["gateway"]?.table)
        #expect(gateway["state_db"]?.string == "/var/lib/gatehouse/state.db")
        #expect(gateway["audit_max_rows"]?.int == 1_000_000)
        #expect(gateway["id"] == nil)  // commented out
        #expect(table["outbox"]?.table?["inflight_per_device"]?.int == 64)
        #expect(table["outbox"]?.table?["max_bytes"]?.string == "256 MiB")
        let site = try #require(table["site"]?.table)
        #expect(site["plugin"]?.string == "mqtt" && site["port"]?.int == 1883 && site["commands"]?.bool == true)
        #expect(site["topics"]?.array == ["devices/+/messages/events/#"])
        #expect(site["max_message_bytes"]?.string == "256 KiB")
        #expect(table["hub"]?.table?["hostname"]?.string == "myhub.azure-devices.net")
        #expect(table["hub"]?.table?["port"]?.int == 8883)
        #expect(table["metrics"]?.table?["listen"]?.string == "127.0.0.1:9600")
        #expect(table["twin"]?.table?["report"]?.bool == true)
        for section in table.keys {
            #expect(table["\(section)"]?.table?.isInline == false)
            #expect(table.position(of: section)?.line == Self.line(of: "[\(section)]", in: text), "[\(section)]")
        }
        #expect(site.position(of: "port")?.line == Self.line(of: "port = 1883", in: text))
    }

    @Test func siteDropInExample() throws {
        guard let (_, table) = try Self.read("packaging/examples/50-site.toml") else { return }
        #expect(
            table == [
                "gateway": ["id": "gw-0001", "site": "plant-3"], "hub": ["hostname": "myhub.azure-devices.net"],
                "site": ["port": 1883],
            ])
    }

    /// Every .toml file in the repository (outside build directories) reads, and as tomllib reads it.
    @Test func everyTOMLFileInTheRepositoryReadsAsTomllibReadsIt() throws {
        guard let repository = Self.repository else {
            Issue.record("packaging/gatehouse.toml not found above \(#filePath)")
            return
        }
        var files: [URL] = []
        let walker = FileManager.default.enumerator(at: repository, includingPropertiesForKeys: nil)
        while let url = walker?.nextObject() as? URL {
            if url.lastPathComponent.hasPrefix(".build") || url.lastPathComponent == ".git" {
                walker?.skipDescendants()
            } else if url.pathExtension == "toml" {
                files.append(url)
            }
        }
        #expect(files.count >= 2)
        let documents = try files.map { try Array(Data(contentsOf: $0)) }
        guard let readings = try DifferentialTests.tomllibReadings(of: documents) else { return }
        for (file, (document, python)) in zip(files, zip(documents, readings)) {
            #expect(DifferentialTests.compare(document, python, label: file.path))
        }
    }

    /// Performance sanity: the defaults, read 200 times, in well under a second a read.
    @Test func packagedDefaultsReadQuickly() throws {
        guard let (text, _) = try Self.read("packaging/gatehouse.toml") else { return }
        let bytes = Array(text.utf8)
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            for _ in 0..<200 { _ = try TOMLTable(parsing: bytes) }
        }
        print("TOMLReader: packaging/gatehouse.toml (\(bytes.count) bytes) read 200 times in \(elapsed)")
        #expect(elapsed < .seconds(5))
    }
}
