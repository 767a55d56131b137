/// A JSON object: members in their order, each name at most once.
///
/// The order is the order of appearance (parsed) or of insertion (built), and it is the order
/// the object is written in, so a document read and written again keeps its layout. Equality
/// ignores the order, as RFC 8259 does (`{"a":1,"b":2} == {"b":2,"a":1}`).
///
/// Names compare as Swift strings do, by canonical equivalence: `"é"` precomposed (U+00E9) and
/// decomposed (`e` U+0301) are one name, though each is written back with its own scalars.
/// Setting a name that is already there replaces its value in place; the parser refuses a
/// document that repeats a name instead (``JSONParseError/Reason/duplicateMemberName``).
public struct JSONObject: Sendable, Hashable, RandomAccessCollection, CustomStringConvertible {
    public typealias Element = (key: String, value: JSONValue)

    private var members: [Element] = []
    /// Where each name is in `members`.
    private var positions: [String: Int] = [:]

    /// An empty object.
    public init() {}

    /// An object of `pairs` in their order; every name must be distinct (as for `Dictionary`).
    public init(uniqueKeysWithValues pairs: some Sequence<(String, JSONValue)>) {
        for (key, value) in pairs {
            precondition(insertNew(key, value), "JSONObject: duplicate member name")
        }
    }

    public var startIndex: Int { members.startIndex }
    public var endIndex: Int { members.endIndex }
    public subscript(position: Int) -> Element { members[position] }

    /// The names, in order.
    public var keys: [String] { members.map(\.key) }

    /// The value of member `key`, or nil. Setting nil removes the member; setting a new name
    /// appends it; setting an existing one replaces its value where it stands.
    public subscript(key: String) -> JSONValue? {
        get { positions[key].map { members[$0].value } }
        set {
            guard let newValue else {
                removeValue(forKey: key)
                return
            }
            if let position = positions[key] {
                members[position].value = newValue
            } else {
                insertNew(key, newValue)
            }
        }
    }

    /// Appends a member when `key` is not there yet; false (and no change) when it is.
    @discardableResult
    mutating func insertNew(_ key: String, _ value: JSONValue) -> Bool {
        guard positions[key] == nil else { return false }
        positions[key] = members.count
        members.append((key, value))
        return true
    }

    /// Removes member `key`, keeping the others in order.
    @discardableResult
    public mutating func removeValue(forKey key: String) -> JSONValue? {
        guard let position = positions.removeValue(forKey: key) else { return nil }
        let removed = members.remove(at: position).value
        for index in position..<members.count { positions[members[index].key] = index }
        return removed
    }

    /// The members for which `isIncluded` holds, in order.
    public func filter(_ isIncluded: (Element) throws -> Bool) rethrows -> JSONObject {
        var result = JSONObject()
        for member in members where try isIncluded(member) { result.insertNew(member.key, member.value) }
        return result
    }

    /// The members with their names sorted by their UTF-8 bytes.
    public func sortedByKey() -> JSONObject {
        var result = JSONObject()
        for member in members.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            result.insertNew(member.key, member.value)
        }
        return result
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.count == rhs.count else { return false }
        return lhs.members.allSatisfy { rhs[$0.key] == $0.value }
    }

    public func hash(into hasher: inout Hasher) {
        // Order-independent, as == is: a sum of the members' own hashes.
        var sum = 0
        for member in members {
            var memberHasher = Hasher()
            memberHasher.combine(member.key)
            memberHasher.combine(member.value)
            sum &+= memberHasher.finalize()
        }
        hasher.combine(count)
        hasher.combine(sum)
    }

    /// Compact JSON text, members in order.
    public var description: String { JSONValue.object(self).description }
}

extension JSONObject: ExpressibleByDictionaryLiteral {
    /// An object of the literal's members in their order; a repeated name is a programming error.
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(uniqueKeysWithValues: elements)
    }
}
