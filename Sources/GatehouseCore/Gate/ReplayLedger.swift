import Crypto
import FoundationEssentials
import GatehouseAuth
import GatehouseBasics
import GatehouseStore
import Synchronization

/// The command ids the gate has accepted, per caller and per device, each until the token that
/// carried it expires: what refuses a replayed command.
///
/// - The database is the truth: every id accepted goes into the `command_id` table in the same
///   transaction as its decision's audit row (`AuditWriter`), before the command is delivered;
///   this index is loaded from it when the gate is made (and again at the next command if that
///   read failed: the gate refuses until it succeeds), so a restart forgets nothing.
///   Expired ids leave the table with the hourly audit pruning.
/// - Keyed by caller: an id is a replay only for the same caller and device. The caller is
///   `CallerKey`: a hash of the token's `iss` and `oid` (else `sub`).
/// - Bounded per caller (`[auth] replay_max_per_caller`): a caller whose live ids fill its own
///   share is refused (`replay.caller-quota`) until some expire; other callers are not affected.
///   Nothing is shared by all callers, so no caller can fill it for the others.
final class ReplayLedger: Sendable {
    enum Result: Equatable { case fresh, replayed, callerFull }

    private struct Caller {
        /// "device \0 id" → expiry (ms since 1970).
        var ids: [String: Int64] = [:]
        var earliest: Int64 = .max
        var latest: Int64 = .min

        mutating func forgetExpired(nowMS: Int64) {
            guard earliest <= nowMS else { return }
            ids = ids.filter { $0.value > nowMS }
            earliest = ids.values.min() ?? .max
            latest = ids.values.max() ?? .min
        }
    }

    private struct State {
        var callers: [String: Caller] = [:]
        var loaded = false
        var nextSweepMS: Int64 = 0
    }

    private let state = Mutex(State())
    let maxPerCaller: Int

    init(maxPerCaller: Int) { self.maxPerCaller = max(1, maxPerCaller) }

    /// Loads the live ids once (when the gate is made). False if the database could not be
    /// read: the gate then refuses (fail closed) and tries again with the next command.
    func loadIfNeeded(_ load: () throws -> [CommandIDRecord]) -> Bool {
        state.withLock { state in
            if state.loaded { return true }
            guard let records = try? load() else { return false }
            for record in records {
                Self.insert(
                    &state.callers[record.caller, default: Caller()], record.deviceID, record.commandID,
                    record.expiresMS)
            }
            state.loaded = true
            return true
        }
    }

    /// Records `id` for `caller` and `device` until `untilMS`, unless it is a replay or the
    /// caller's share is full.
    func record(caller: String, device: String, id: String, untilMS: Int64, nowMS: Int64) -> Result {
        let key = device + "\u{0}" + id
        return state.withLock { state in
            if nowMS >= state.nextSweepMS {
                // Callers all of whose ids have expired go; each at most once a minute, O(callers).
                state.callers = state.callers.filter { $0.value.latest > nowMS }
                state.nextSweepMS = nowMS + 60_000
            }
            var entry = state.callers.removeValue(forKey: caller) ?? Caller()
            defer { state.callers[caller] = entry }
            if let expiry = entry.ids[key], expiry > nowMS { return .replayed }
            if entry.ids.count >= maxPerCaller {
                // Only when full, and only if something of this caller's has expired.
                entry.forgetExpired(nowMS: nowMS)
                if entry.ids.count >= maxPerCaller { return .callerFull }
            }
            Self.insert(&entry, device, id, untilMS)
            return .fresh
        }
    }

    /// Live ids of one caller (tests).
    func count(caller: String, nowMS: Int64) -> Int {
        state.withLock { $0.callers[caller]?.ids.values.filter { $0 > nowMS }.count ?? 0 }
    }

    private static func insert(_ entry: inout Caller, _ device: String, _ id: String, _ untilMS: Int64) {
        let key = device + "\u{0}" + id
        entry.ids[key] = max(entry.ids[key] ?? .min, untilMS)
        entry.earliest = min(entry.earliest, untilMS)
        entry.latest = max(entry.latest, untilMS)
    }
}

/// Who a caller is, for replay protection: SHA-256 of the token's issuer and its `oid` (the
/// immutable object id Entra ID gives a user or service principal), or `sub` when it has no
/// `oid`, in hex. The issuer is part of it so that one identity provider cannot mint tokens that
/// share another's callers; the raw values stay out of the database.
enum CallerKey {
    static func of(_ token: VerifiedToken) -> String {
        let principal = token.objectID.map { "oid\u{0}" + $0 } ?? "sub\u{0}" + token.subject
        let digest = SHA256.hash(data: Array(("iss\u{0}" + token.issuer + "\u{0}" + principal).utf8))
        return Hex.string(digest)
    }
}
