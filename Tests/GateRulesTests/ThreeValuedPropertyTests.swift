import Foundation
import GatehouseTestSupport
import Testing

@testable import GateRules

/// The evaluator against an independent model of the language's three-valued semantics
/// (docs/rules.md, "Missing claims and undetermined conditions"): random rule sets over claims
/// that are present, missing or of the wrong type, decided by the policy and by the model.
/// The properties: no allow ever rests on an undetermined condition, and a deny (or a drop)
/// whose condition is undetermined always applies.
@Suite struct ThreeValuedPropertyTests {
    /// Kleene's logic, written out again here so the model shares no code with the evaluator.
    enum K: Equatable, CustomStringConvertible {
        case t, f, u
        static func and(_ a: K, _ b: K) -> K { a == .f || b == .f ? .f : (a == .t && b == .t ? .t : .u) }
        static func or(_ a: K, _ b: K) -> K { a == .t || b == .t ? .t : (a == .f && b == .f ? .f : .u) }
        var not: K { self == .t ? .f : self == .f ? .t : .u }
        var description: String { self == .t ? "true" : self == .f ? "false" : "undetermined" }
    }

    /// One atom: its source text and what the model says of it for a token.
    struct Atom {
        let text: String
        let model: @Sendable ([String: Value]) -> K
    }

    static func isString(_ v: Value?, _ s: String) -> Bool { if case .string(let x)? = v { x == s } else { false } }

    static let atoms: [Atom] = [
        Atom(text: "token.level > 3") { claims in
            if case .number(let n)? = claims["level"] { return n > 3 ? .t : .f }
            return .u
        },
        Atom(text: "token.level <= 5") { claims in
            if case .number(let n)? = claims["level"] { return n <= 5 ? .t : .f }
            return .u
        },
        Atom(text: "\"Gateway.Operator\" in token.roles") { claims in
            guard case .list(let items)? = claims["roles"] else { return .u }  // a string is never searched
            return items.contains(.string("Gateway.Operator")) ? .t : .f
        },
        Atom(text: "token.tid == \"t1\"") { claims in
            guard let tid = claims["tid"] else { return .u }
            return isString(tid, "t1") ? .t : .f
        },
        Atom(text: "token.tid != \"t1\"") { claims in
            guard let tid = claims["tid"] else { return .u }
            return isString(tid, "t1") ? .f : .t
        },
        Atom(text: "has(token.site)") { claims in claims["site"] == nil ? .f : .t },
        Atom(text: "token.site == \"A\"") { claims in
            guard let site = claims["site"] else { return .u }
            return isString(site, "A") ? .t : .f
        },
        Atom(text: "token.mfa") { claims in
            if case .bool(let b)? = claims["mfa"] { return b ? .t : .f }
            return .u
        },
        Atom(text: "token.site startswith \"A\"") { claims in
            guard case .string(let s)? = claims["site"] else { return .u }
            return s.hasPrefix("A") ? .t : .f
        },
        Atom(text: "any(r in token.roles: r startswith \"Gateway.\")") { claims in
            guard case .list(let items)? = claims["roles"] else { return .u }
            var result = K.f
            for item in items {
                let one: K
                if case .string(let s) = item { one = s.hasPrefix("Gateway.") ? .t : .f } else { one = .u }
                result = K.or(result, one)
            }
            return result
        },
        Atom(text: "all(r in token.roles: r != \"Banned\")") { claims in
            guard case .list(let items)? = claims["roles"] else { return .u }
            var result = K.t
            for item in items { result = K.and(result, isString(item, "Banned") ? .f : .t) }
            return result
        },
    ]

    /// The values each claim takes: present and well-typed, missing (nil), or of a wrong type.
    static let claimVariants: [String: [Value?]] = [
        "level": [nil, 1, 4, 9, "high", .null, true],
        "roles": [
            nil, ["Gateway.Operator"], ["Viewer"], ["Gateway.Viewer", 7], "Gateway.OperatorReadOnly", [], ["Banned"],
        ],
        "tid": [nil, "t1", "t2", 5],
        "site": [nil, "A", "B", ["A"], "AB"],
        "mfa": [nil, true, false, "yes"],
    ]

    struct Condition {
        var text: String
        var model: ([String: Value]) -> K
    }

    static func condition(_ random: inout SplitMix64, depth: Int) -> Condition {
        func pick(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
        if depth > 0, pick(100) < 55 {
            let a = condition(&random, depth: depth - 1)
            switch pick(3) {
            case 0:
                let b = condition(&random, depth: depth - 1)
                return Condition(text: "(\(a.text) and \(b.text))") { K.and(a.model($0), b.model($0)) }
            case 1:
                let b = condition(&random, depth: depth - 1)
                return Condition(text: "(\(a.text) or \(b.text))") { K.or(a.model($0), b.model($0)) }
            default:
                return Condition(text: "not (\(a.text))") { a.model($0).not }
            }
        }
        let atom = atoms[pick(atoms.count)]
        return Condition(text: atom.text, model: atom.model)
    }

    static func claims(_ random: inout SplitMix64) -> [String: Value] {
        var out: [String: Value] = [:]
        for (name, variants) in claimVariants.sorted(by: { $0.key < $1.key }) {
            if let value = variants[Int(random.next() % UInt64(variants.count))] { out[name] = value }
        }
        return out
    }

    @Test(arguments: 0..<8)
    func commandDecisionsFollowTheModel(batch: Int) throws {
        var random = SplitMix64(seed: UInt64(0xC0FFEE + batch))
        var undeterminedDenies = 0
        var undeterminedAllows = 0
        for round in 0..<150 {
            var rules: [(name: String, deny: Bool, condition: Condition)] = []
            for index in 0..<(1 + Int(random.next() % 4)) {
                rules.append(
                    (
                        "r\(index)", random.next() % 3 == 0, Self.condition(&random, depth: 3)
                    ))
            }
            let text = rules.map { rule in
                "\(rule.deny ? "deny" : "allow") command \"x\" as \"\(rule.name)\" when \(rule.condition.text)"
            }.joined(separator: "\n")
            let (compiled, diagnostics) = Policy.compile(files: [SourceFile(name: "p.rules", text: text)])
            let policy = try #require(compiled, "seed batch \(batch) round \(round): \(diagnostics)\n\(text)")
            for _ in 0..<10 {
                let claims = Self.claims(&random)
                let decision = policy.decide(CommandInput(command: ["name": "x"], token: .map(claims)))
                let truths = rules.map { $0.condition.model(claims) }
                // A deny applies when its condition is true or undetermined; an allow only when true.
                let denying = rules.indices.filter { rules[$0].deny && truths[$0] != .f }.map { rules[$0].name }
                let allowing = rules.indices.filter { !rules[$0].deny && truths[$0] == .t }.map { rules[$0].name }
                undeterminedDenies += rules.indices.filter { rules[$0].deny && truths[$0] == .u }.count
                undeterminedAllows += rules.indices.filter { !rules[$0].deny && truths[$0] == .u }.count
                let context = "\(text)\ntoken \(claims)\nmodel \(truths)\ndecision \(decision.summary)"
                if !denying.isEmpty {
                    #expect(decision.effect == .deny, "\(context)")
                    #expect(decision.rules.map(\.name) == denying, "\(context)")
                } else if !allowing.isEmpty {
                    #expect(decision.effect == .allow, "\(context)")
                    #expect(decision.rules.map(\.name) == allowing, "\(context)")
                } else {
                    #expect(decision.effect == .deny && decision.isDefault, "\(context)")
                }
                // The decision names the undetermined rules, and no allow among its deciders is one.
                // Denies are evaluated first, in policy order; allows only when no deny applied.
                let undetermined = rules.indices.filter { truths[$0] == .u }
                let undeterminedDeny = undetermined.filter { rules[$0].deny }.map { rules[$0].name }
                let undeterminedAllow = undetermined.filter { !rules[$0].deny }.map { rules[$0].name }
                #expect(
                    decision.undetermined.map(\.name) == undeterminedDeny + (denying.isEmpty ? undeterminedAllow : []),
                    "\(context)")
                if decision.effect == .allow {
                    #expect(!decision.rules.contains { undeterminedAllow.contains($0.name) }, "\(context)")
                }
            }
        }
        // The generator must reach the cases the properties are about.
        #expect(undeterminedDenies > 50)
        #expect(undeterminedAllows > 50)
    }

    @Test(arguments: 0..<4)
    func dropsApplyWhenUndeterminedAndRoutesDoNot(batch: Int) throws {
        var random = SplitMix64(seed: UInt64(0xD0D0 + batch))
        for _ in 0..<100 {
            let route = Self.condition(&random, depth: 2)
            let drop = Self.condition(&random, depth: 2)
            // The same atoms over the message body (open JSON) instead of the token.
            func onBody(_ text: String) -> String { text.replacingOccurrences(of: "token.", with: "message.body.") }
            let text = """
                route telemetry as "r" when \(onBody(route.text)) to upstream
                drop telemetry as "d" when \(onBody(drop.text))
                """
            let (compiled, diagnostics) = Policy.compile(files: [SourceFile(name: "t.rules", text: text)])
            let policy = try #require(compiled, "\(diagnostics)\n\(text)")
            for _ in 0..<10 {
                let body = Self.claims(&random)
                let decision = policy.route(TelemetryInput(message: ["topic": "t", "body": .map(body)]))
                let dropped = drop.model(body) != .f || route.model(body) != .t
                #expect(
                    decision.dropped == dropped,
                    "\(text)\nbody \(body)\nroute \(route.model(body)) drop \(drop.model(body))\n\(decision.summary)")
            }
        }
    }
}
