import Crypto
import FoundationEssentials
import GateRules
import GatehouseBasics

/// Which rule set is live, for the metrics and the gateway's twin (docs/operations.md): its
/// generation (how many times a new rule set went live since the start: the rule-set version)
/// and a SHA-256 of its files, so that an operator can tell whether two gateways run the same
/// rules. The hash covers each file's name (without its folder) and text, in name order.
struct RuleSetIdentity {
    let handle: PolicyHandle

    init(_ handle: PolicyHandle) { self.handle = handle }

    var summary: GatewayMetrics.RulesSummary {
        let policy = handle.current
        return GatewayMetrics.RulesSummary(
            generation: handle.generation, sha256: Self.sha256(policy.files), commandRules: policy.commandRuleCount,
            telemetryRules: policy.telemetryRuleCount)
    }

    static func sha256(_ files: [SourceFile]) -> String {
        var hash = SHA256()
        for file in files.sorted(by: { $0.name < $1.name }) {
            hash.update(data: Data(PathText.lastComponent(of: file.name).utf8))
            hash.update(data: Data([0]))
            hash.update(data: Data(file.text.utf8))
            hash.update(data: Data([0]))
        }
        return Hex.string(hash.finalize())
    }
}
