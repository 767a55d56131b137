import Foundation
import GatehouseTestSupport
import TOMLReader
import Testing

/// Byte-wise mutations of valid documents, biased towards the bytes TOML's grammar turns on.
enum Mutator {
    static let interesting =
        Array("[]{}\"'\\=.,#\n\r\t _-+:0123456789eExobTZtrufalsnif".utf8) + [
            0x00, 0x7F, 0xFF, 0xC3, 0xA9, 0xED, 0xF0,
        ]

    static func mutate(_ document: [UInt8], using random: inout SplitMix64) -> [UInt8] {
        var bytes = document
        for _ in 0..<Int.random(in: 1...4, using: &random) {
            let position = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &random)
            let byte =
                Bool.random(using: &random)
                ? interesting[Int.random(in: 0..<interesting.count, using: &random)]
                : UInt8.random(in: 0...255, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0 where !bytes.isEmpty: bytes[position] = byte
            case 1 where !bytes.isEmpty: bytes.remove(at: position)
            case 2: bytes.insert(byte, at: position)
            case 3 where !bytes.isEmpty:
                // Repeat a slice: deeper nesting, repeated keys and headers.
                let end = min(bytes.count, position + Int.random(in: 1...16, using: &random))
                bytes.insert(contentsOf: bytes[position..<end], at: position)
            default:
                bytes.insert(contentsOf: bytes.prefix(8), at: position)
            }
        }
        return bytes
    }
}

@Suite struct RobustnessTests {
    static let seeds: [[UInt8]] = (Corpus.valid + Corpus.validCRLF).map { Array($0.utf8) }

    /// 5000 mutated documents: each is read or rejected with an error, none traps, none takes
    /// long, and what is read renders as valid JSON.
    @Test func mutatedDocumentsNeverTrapOrHang() {
        var random = SplitMix64(seed: 0x746F_6D6C)
        let clock = ContinuousClock()
        var slowest = Duration.zero
        var (accepted, rejected) = (0, 0)
        let total = clock.measure {
            for _ in 0..<5000 {
                let seed = Self.seeds[Int.random(in: 0..<Self.seeds.count, using: &random)]
                let document = Mutator.mutate(seed, using: &random)
                let start = clock.now
                do throws(TOMLError) {
                    let table = try TOMLTable(parsing: document)
                    let json = table.jsonText(sortedKeys: true)
                    if JSON(parsing: json) == nil {
                        Issue.record("invalid JSON \(json) for \(String(decoding: document, as: UTF8.self))")
                    }
                    accepted += 1
                } catch {
                    #expect(error.line >= 1 && error.column >= 1 && !error.message.isEmpty)
                    rejected += 1
                }
                slowest = max(slowest, clock.now - start)
            }
        }
        print("TOMLReader mutations: \(accepted) read, \(rejected) rejected in \(total), slowest \(slowest)")
        #expect(accepted > 100 && rejected > 1000, "the mutations should give both outcomes")
        #expect(slowest < .seconds(1))
    }

    /// Mutated documents against tomllib: the same ones are read (with the same JSON) and
    /// rejected. Integers past 64 bits, which tomllib reads, are the one known difference.
    @Test func mutatedDocumentsAgreeWithTomllib() throws {
        var random = SplitMix64(seed: 0x6469_6666)
        let documents = (0..<1500).map { _ in
            Mutator.mutate(Self.seeds[Int.random(in: 0..<Self.seeds.count, using: &random)], using: &random)
        }
        guard let readings = try DifferentialTests.tomllibReadings(of: documents) else { return }
        var (both, neither, skipped) = (0, 0, 0)
        for (number, (document, python)) in zip(documents, readings).enumerated() {
            if !python.hasPrefix("ERROR"), let error = try? failure(document),
                error.message.contains("does not fit in 64 bits")
            {
                skipped += 1
                continue
            }
            if DifferentialTests.compare(document, python, label: "mutated document \(number)") {
                both += 1
            } else {
                neither += 1
            }
        }
        print("TOMLReader mutations vs tomllib: \(both) read by both, \(neither) rejected, \(skipped) big integers")
        #expect(both > 100 && neither > 500)
    }

    private func failure(_ document: [UInt8]) throws -> TOMLError? {
        do {
            _ = try TOMLTable(parsing: document)
            return nil
        } catch {
            return error
        }
    }

    @Test func nestingIsLimited() throws {
        let limit = TOMLTable.maximumDepth
        // Arrays and inline tables: the value of a top-level key is at depth 1.
        let deepest = "a = " + String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(try parse(deepest)["a"] != nil)
        let tooDeep = "a = " + String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)
        let error = try #require(parseError(tooDeep))
        #expect(error.message.contains("nested more than \(limit) deep"))
        #expect(error.line == 1 && error.column == 5 + limit)
        // Far past the limit: an error, not a stack overflow.
        for opener in ["[", "{a=", "[{b="] {
            #expect(parseError("a = " + String(repeating: opener, count: 100_000)) != nil)
        }
        // Tables: by headers, by dotted keys, and by both with inline tables. `[k.k]` is two
        // tables deep, `k.k = 1` one.
        func keys(_ count: Int) -> String { (0..<count).map { _ in "k" }.joined(separator: ".") }
        #expect(try parse("[\(keys(limit))]").count == 1)
        #expect(parseError("[\(keys(limit + 1))]")?.message.contains("nested more than") == true)
        #expect(try parse("[[\(keys(limit))]]").count == 1)
        #expect(parseError("[[\(keys(limit + 1))]]")?.message.contains("nested more than") == true)
        #expect(try parse("\(keys(limit + 1)) = 1").count == 1)
        #expect(parseError("\(keys(limit + 2)) = 1")?.message.contains("nested more than") == true)
        #expect(parseError(keys(1_000_000) + " = 1") != nil)
        #expect(
            parseError("[\(keys(limit / 2))]\n\(keys(limit / 2)).x = [[[1]]]")?.message.contains("nested more than")
                == true)
        #expect(parseError("x = " + String(repeating: "{\(keys(limit / 2)) = ", count: 3) + "1}}}") != nil)
    }

    /// Sizes that would show quadratic work: many keys, many array-of-tables elements, long
    /// strings and arrays.
    @Test func largeDocumentsAreFast() throws {
        // One long line of keys: positions must not be counted from the start of the line each time.
        var text = "one_line = { " + (0..<50_000).map { "k\($0) = { x.y = 1 }" }.joined(separator: ", ") + " }\n"
        text += "long = \"" + String(repeating: "x", count: 1_000_000) + "\"\n"
        text += "list = [" + String(repeating: "1, ", count: 100_000) + "]\n"
        for number in 0..<20_000 { text += "key\(number) = \(number)\n" }
        for number in 0..<5_000 { text += "[[items]]\nname = \"item \(number)\"\n[items.sub]\nx = 1\n" }
        let clock = ContinuousClock()
        var table = TOMLTable()
        let elapsed = try clock.measure { table = try parse(text) }
        #expect(table.count == 20_004)
        #expect(table["one_line"]?.table?.count == 50_000)
        #expect(table["one_line"]?.table?["k49999"]?.table?.position(of: "x")?.column == 1_088_893)
        #expect(table["items"]?.array?.count == 5_000)
        #expect(table["list"]?.array?.count == 100_000)
        #expect(elapsed < .seconds(10), "took \(elapsed)")
    }
}
