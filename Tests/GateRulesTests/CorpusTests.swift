import Foundation
import Testing

@testable import GateRules

/// One parameterised test over the whole golden corpus (see `Corpus.swift` for the format).
@Suite struct CorpusTests {
    @Test("corpus case", arguments: CorpusCase.all())
    func corpusCase(_ corpusCase: CorpusCase) throws {
        let files = try corpusCase.files()
        let expectations = Expectations(files.map(\.text).joined(separator: "\n"))
        let actual = Corpus.run(files, expectations)

        if ProcessInfo.processInfo.environment["GATERULES_BLESS"] == "1" {
            // Diagnostics are written into the first file; decisions after their inputs.
            var decisions = actual.decisions[...]
            for (index, file) in files.enumerated() {
                let count = Expectations(file.text).inputs.count
                try Corpus.bless(
                    file, decisions: Array(decisions.prefix(count)), diagnostics: index == 0 ? actual.diagnostics : [],
                    cost: actual.cost)
                decisions = decisions.dropFirst(count)
            }
            return
        }

        #expect(
            actual.diagnostics.joined(separator: "\n\n") == expectations.diagnostics.joined(separator: "\n\n"),
            "diagnostics differ")
        for (index, input) in expectations.inputs.enumerated() {
            #expect(input.expect != nil, "input \(index + 1) has no `# expect:`")
            #expect(actual.decisions[index] == input.expect, "input \(index + 1): \(input.json)")
        }
        if let cost = expectations.cost { #expect(actual.cost == cost, "cost bound") }
    }

    @Test func corpusIsLargeAndCoversEveryDiagnostic() throws {
        let cases = CorpusCase.all()
        #expect(cases.count >= 150)
        let text = try cases.flatMap { try $0.files() }.map(\.text).joined()
        let ids = [
            Diagnostic.ID.unexpectedCharacter, .unterminatedString, .invalidEscape, .invalidNumber, .expectedToken,
            .expectedExpression, .expectedStatement, .unknownUnit, .chainedComparison, .tooDeep, .reservedWord,
            .unknownRoot, .unknownField, .unknownClaim, .unavailableRoot, .unknownFunction, .wrongArity, .typeMismatch,
            .notBoolean, .hasNeedsPath, .invalidGlob, .duplicateRule, .duplicateLet, .duplicateTest, .letCycle,
            .letTooDeep, .unusedLet, .shadowing, .quantifierDepth, .unknownPriority, .emptyPattern, .testNotConstant,
            .testUnknownRule, .testSection, .lookAlikeCharacter, .nonASCIICharacter, .unclosedDelimiter,
            .numberOutOfRange, .numberInexact, .regexPattern, .patternNeverMatches,
        ]
        for id in ids { #expect(text.contains("[\(id)]"), "no corpus case shows \(id)") }
    }
}
