/// A read-only map from command names to values, built once per policy. It hashes with
/// FNV-1a over the UTF-8 bytes, several times cheaper than `Hasher` for short names. Hash
/// flooding does not apply: the table only holds the policy's own names, so a caller can make
/// a lookup miss but never lengthen a probe chain.
struct NameIndex<Element: Sendable>: Sendable {
    private let names: [String]
    private let elements: [Element]
    /// Open addressing: each slot holds an index into `names`, or -1.
    private let slots: [Int32]
    private let mask: Int

    init(_ entries: [(String, Element)]) {
        names = entries.map(\.0)
        elements = entries.map(\.1)
        var size = 8
        while size < entries.count * 2 { size *= 2 }
        var table = [Int32](repeating: -1, count: size)
        for (index, name) in names.enumerated() {
            var slot = Self.hash(name) & (size - 1)
            while table[slot] >= 0 { slot = (slot + 1) & (size - 1) }
            table[slot] = Int32(index)
        }
        slots = table
        mask = size - 1
    }

    @inline(__always)
    static func hash(_ name: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return Int(truncatingIfNeeded: hash ^ (hash >> 29))
    }

    subscript(name: String) -> Element? {
        var slot = Self.hash(name) & mask
        while true {
            let index = slots[slot]
            if index < 0 { return nil }
            if names[Int(index)] == name { return elements[Int(index)] }
            slot = (slot + 1) & mask
        }
    }
}
