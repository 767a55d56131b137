import GatehouseBasics
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct TrimmingTests {
    @Test func blanksAreSpacesAndTabsOnly() {
        #expect(" \t a b \t ".trimmingBlanks == "a b")
        #expect("\n a \n".trimmingBlanks == "\n a \n")
        #expect("   ".trimmingBlanks == "")
        #expect("".trimmingBlanks == "")
    }

    @Test func whitespaceIncludesLineEnds() {
        #expect("\r\n\t secret \n".trimmingWhitespace == "secret")
        #expect("a\nb".trimmingWhitespace == "a\nb")
        #expect("\n\n".trimmingWhitespace == "")
    }

    @Test func aSetOfCharacters() {
        #expect("[::1]".trimming(["[", "]"]) == "::1")
        #expect("host".trimming(["[", "]"]) == "host")
    }

    @Test func paddingCountsCharacters() {
        #expect("ab".padded(to: 4) == "ab  ")
        #expect("abcdef".padded(to: 3) == "abc")
        #expect("é".padded(to: 2) == "é ")
    }
}

@Suite struct PathTextTests {
    @Test(arguments: [
        ("/var/lib/gatehouse/state.db", "/var/lib/gatehouse", "state.db"),
        ("state.db", "", "state.db"),
        ("/state.db", "/", "state.db"),
        ("/var/lib/", "/var", "lib"),
        ("/", "/", "/"),
        ("a/b", "a", "b"),
        ("a//b", "a", "b"),
        ("//c", "/", "c"),
    ])
    func components(path: String, directory: String, last: String) {
        #expect(PathText.directory(of: path) == directory)
        #expect(PathText.lastComponent(of: path) == last)
    }

    @Test func join() {
        #expect(PathText.join("/etc/gatehouse", "gatehouse.toml") == "/etc/gatehouse/gatehouse.toml")
        #expect(PathText.join("/etc/", "x") == "/etc/x")
        #expect(PathText.join("", "x") == "x")
    }
}

@Suite struct DigitsTests {
    @Test func hex() {
        #expect(Hex.string([0x00, 0xab, 0x10, 0xff]) == "00ab10ff")
        #expect(Hex.string(0x1f, width: 8) == "0000001f")
        #expect(Hex.string(0x1_0000_0000, width: 8) == "100000000")
    }

    @Test func decimal() {
        #expect(Digits.padded(7, width: 3) == "007")
        #expect(Digits.padded(2026, width: 2) == "2026")
        #expect(Digits.padded(-5, width: 3) == "-005")
    }
}

@Suite struct ThreadAndFileTests {
    @Test func aNamedThreadRunsItsBodyUnderItsName() async {
        let seen = Mutex<String?>(nil)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            NamedThread.start(name: "gatehouse.test.thread-name-is-long") {
                // What the kernel holds for this thread (what `ps -L` shows).
                let fd = open("/proc/thread-self/comm", O_RDONLY)
                var bytes = [UInt8](repeating: 0, count: 64)
                let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                close(fd)
                let name = String(decoding: bytes.prefix(max(0, count)), as: UTF8.self).trimmingWhitespace
                seen.withLock { $0 = name }
                done.resume()
            }
        }
        // Linux keeps 15 bytes of a thread's name.
        #expect(seen.withLock { $0 } == "gatehouse.test.")
    }

    @Test func sleepWaitsAtLeastItsDuration() {
        let start = ContinuousClock.now
        NamedThread.sleep(.milliseconds(30))
        #expect(ContinuousClock.now - start >= .milliseconds(30))
    }

    @Test func outputFileCreatesWithTheModeAndWritesEverything() throws {
        let path = "/tmp/gatehouse-basics-\(getpid()).txt"
        defer { unlink(path) }
        let text = String(repeating: "0123456789", count: 20_000)
        do {
            let file = try OutputFile(creating: path, mode: 0o600)
            #expect(file.write(text))
        }
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(Int(info.st_size) == text.utf8.count)
    }

    @Test func outputFileNamesThePathItCannotCreate() {
        #expect {
            _ = try OutputFile(creating: "/nonexistent-dir/x.txt")
        } throws: { error in
            "\(error)".contains("/nonexistent-dir/x.txt") && "\(error)".contains("No such file")
        }
    }
}
