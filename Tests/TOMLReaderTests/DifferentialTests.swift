import Foundation
import GatehouseTestSupport
import TOMLReader
import Testing

/// The reader against Python's `tomllib` (the standard library's TOML 1.0 parser since 3.11):
/// the same documents, the same JSON; the same invalid documents, both reject them.
@Suite struct DifferentialTests {
    /// Reads documents with tomllib: each line of `argv[1]` is one document's bytes in hex;
    /// each line written to `argv[2]` is the document as JSON with sorted keys, dates and times
    /// as `isoformat()` and NaN and the infinities as the strings jsonText writes, or `ERROR …`
    /// when tomllib rejects it (invalid UTF-8 included, as `tomllib.load` does).
    static let script = """
        import datetime, json, math, sys, tomllib
        def conv(v):
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            if isinstance(v, list):
                return [conv(x) for x in v]
            if isinstance(v, float) and math.isnan(v):
                return "nan"
            if isinstance(v, float) and math.isinf(v):
                return "inf" if v > 0 else "-inf"
            if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
                return v.isoformat()
            return v
        with open(sys.argv[1]) as source, open(sys.argv[2], "w", encoding="utf-8") as out:
            for line in source:
                try:
                    text = bytes.fromhex(line.strip()).decode()
                    result = json.dumps(conv(tomllib.loads(text)), sort_keys=True, ensure_ascii=False)
                except Exception as e:
                    result = "ERROR " + type(e).__name__ + ": " + str(e).replace("\\n", " ")
                out.write(result + "\\n")
        """

    /// tomllib's reading of each document (JSON text, or `ERROR …`), or nil, with an issue
    /// recorded, when python3 cannot run.
    static func tomllibReadings(of documents: [[UInt8]]) throws -> [String]? {
        guard pythonTOMLLib.available else {
            print("TOMLReader differential test: \(pythonTOMLLib.reason)")
            Issue.record("python3 not found or without tomllib: \(pythonTOMLLib.reason)")
            return nil
        }
        let folder = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(at: folder) }
        let input = folder.appendingPathComponent("documents.hex")
        let output = folder.appendingPathComponent("readings.jsonl")
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        for document in documents {
            for byte in document { hex += [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]] }
            hex.append(UInt8(ascii: "\n"))
        }
        try Data(hex).write(to: input)
        let result = try #require(runPython(["-c", script, input.path, output.path]))
        try #require(result.status == 0, "tomllib script failed: \(result.output)")
        let lines = try String(contentsOf: output, encoding: .utf8).split(separator: "\n").map(String.init)
        try #require(lines.count == documents.count, "tomllib wrote \(lines.count) of \(documents.count) readings")
        return lines
    }

    /// What a TOML date-time means in Python's `isoformat()`: `T` between date and time,
    /// `+00:00` for `Z` and `-00:00`, the fraction as microseconds (cut, not rounded; none if 0).
    static func isoformat(_ text: String) -> String {
        var characters = Array(text)
        if characters.count > 10, characters[4] == "-", characters[10] == " " || characters[10] == "t" {
            characters[10] = "T"
        }
        var result = String(characters)
        if result.hasSuffix("Z") || result.hasSuffix("z") { result = result.dropLast() + "+00:00" }
        if result.hasSuffix("-00:00") { result = result.dropLast(6) + "+00:00" }
        if let dot = result.firstIndex(of: ".") {
            let digits = result[result.index(after: dot)...].prefix { $0.isASCII && $0.isNumber }
            let micro = digits.prefix(6).padding(toLength: 6, withPad: "0", startingAt: 0)
            result.replaceSubrange(dot..<digits.endIndex, with: micro == "000000" ? "" : "." + micro)
        }
        return result
    }

    /// Equal as JSON, a date-time string of ours read as Python writes it.
    static func same(_ mine: JSON, _ python: JSON) -> Bool {
        switch (mine, python) {
        case (.string(let ours), .string(let theirs)):
            ours == theirs || isoformat(ours) == theirs
        case (.array(let ours), .array(let theirs)):
            ours.count == theirs.count && zip(ours, theirs).allSatisfy { same($0, $1) }
        case (.object(let ours), .object(let theirs)):
            ours.map(\.0) == theirs.map(\.0) && zip(ours, theirs).allSatisfy { same($0.1, $1.1) }
        default:
            mine == python
        }
    }

    /// Compares our reading of `document` with tomllib's; returns whether both accepted it.
    @discardableResult
    static func compare(_ document: [UInt8], _ python: String, label: String) -> Bool {
        let text = String(decoding: document, as: UTF8.self)
        let mine: TOMLTable
        do {
            mine = try TOMLTable(parsing: document)
        } catch {
            if !python.hasPrefix("ERROR") {
                Issue.record("\(label): we reject what tomllib reads\n\(text)\nours: \(error)\ntomllib: \(python)")
            }
            return false
        }
        guard !python.hasPrefix("ERROR") else {
            Issue.record("\(label): we read what tomllib rejects\n\(text)\ntomllib: \(python)")
            return false
        }
        let ours = mine.jsonText(sortedKeys: true)
        guard let oursJSON = JSON(parsing: ours) else {
            Issue.record("\(label): jsonText is not JSON: \(ours)")
            return false
        }
        guard let theirsJSON = JSON(parsing: python) else {
            Issue.record("\(label): tomllib's output is not JSON: \(python)")
            return false
        }
        if !same(oursJSON, theirsJSON) {
            Issue.record("\(label): different readings of\n\(text)\nours:    \(ours)\ntomllib: \(python)")
        }
        return true
    }

    @Test func validDocumentsReadAsTomllibReadsThem() throws {
        let documents = (Corpus.valid + Corpus.validCRLF).map { Array($0.utf8) }
        guard let readings = try Self.tomllibReadings(of: documents) else { return }
        var agreed = 0
        for (number, (document, python)) in zip(documents, readings).enumerated() {
            if Self.compare(document, python, label: "valid document \(number)") { agreed += 1 }
        }
        print("TOMLReader differential: \(agreed) of \(documents.count) valid documents read as tomllib reads them")
        #expect(agreed == documents.count)
        #expect(documents.count >= 80)
    }

    @Test func invalidDocumentsAreRejectedByBoth() throws {
        let documents = Corpus.invalid.map { Array($0.utf8) } + Corpus.invalidBytes
        guard let readings = try Self.tomllibReadings(of: documents) else { return }
        var rejected = 0
        for (number, (document, python)) in zip(documents, readings).enumerated() {
            let text = String(decoding: document, as: UTF8.self)
            #expect(python.hasPrefix("ERROR"), "tomllib reads invalid document \(number): \(text)")
            do {
                let table = try TOMLTable(parsing: document)
                Issue.record("invalid document \(number) parsed: \(text)\nas \(table.jsonText())")
            } catch {
                if python.hasPrefix("ERROR") { rejected += 1 }
            }
        }
        print("TOMLReader differential: \(rejected) of \(documents.count) invalid documents rejected by both")
        #expect(rejected == documents.count)
        #expect(documents.count >= 40)
    }

    /// Random short documents of headers, dotted keys, inline tables and arrays over the same
    /// few keys: the rules on defining and extending tables, where readers differ most.
    @Test func tableDefinitionRulesAgreeWithTomllib() throws {
        var random = SplitMix64(seed: 0x7461_626C)
        let names = ["a", "b", "\"a\""]
        func key(_ segments: ClosedRange<Int>) -> String {
            (0..<Int.random(in: segments, using: &random)).map { _ in
                names[Int.random(in: 0..<names.count, using: &random)]
            }.joined(separator: ".")
        }
        let documents = (0..<3000).map { _ in
            (0..<Int.random(in: 1...6, using: &random)).map { _ in
                switch Int.random(in: 0..<7, using: &random) {
                case 0: "[\(key(1...3))]"
                case 1: "[[\(key(1...3))]]"
                case 2: "\(key(1...3)) = 1"
                case 3: "\(key(1...2)) = { \(key(1...2)) = 1 }"
                case 4: "\(key(1...2)) = []"
                case 5: "\(key(1...2)) = [{}]"
                default: "\(key(1...3)).c = 2"
                }
            }.joined(separator: "\n")
        }.map { Array($0.utf8) }
        guard let readings = try Self.tomllibReadings(of: documents) else { return }
        var both = 0
        for (number, (document, python)) in zip(documents, readings).enumerated()
        where Self.compare(document, python, label: "generated document \(number)") {
            both += 1
        }
        print(
            "TOMLReader table rules vs tomllib: \(both) of \(documents.count) read by both, the rest rejected by both")
        #expect(both > 500 && both < 2500, "the documents should give both outcomes")
    }

    /// The date-time normalisation itself, so a wrong one cannot hide differences.
    @Test(arguments: [
        ("1979-05-27T07:32:00Z", "1979-05-27T07:32:00+00:00"),
        ("1979-05-27 07:32:00", "1979-05-27T07:32:00"),
        ("1979-05-27t07:32:00z", "1979-05-27T07:32:00+00:00"),
        ("1979-05-27T07:32:00.5-07:00", "1979-05-27T07:32:00.500000-07:00"),
        ("07:32:00.1234567", "07:32:00.123456"),
        ("07:32:00.000", "07:32:00"),
        ("1979-05-27T07:32:00-00:00", "1979-05-27T07:32:00+00:00"),
        ("1979-05-27", "1979-05-27"),
    ])
    func isoformatNormalisation(toml: String, python: String) {
        #expect(Self.isoformat(toml) == python)
    }
}
