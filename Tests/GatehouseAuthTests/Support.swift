import Foundation
import GatehouseAuth
import GatehouseTestSupport
import Logging
import Synchronization
import Testing

/// A wall clock the test moves by hand.
final class ManualClock: Sendable {
    private let current: Mutex<Date>
    init(_ seconds: Double) { current = Mutex(Date(timeIntervalSince1970: seconds)) }
    var clock: AuthClock { AuthClock { [self] in current.withLock { $0 } } }
    func advance(_ duration: Duration) {
        current.withLock { $0 += Double(duration.components.seconds) }
    }
}

/// A JWKS source whose document the test sets, or makes fail, and whose fetches it counts.
final class StubSource: JWKSSource {
    private struct State {
        var document: Result<Data, AuthError>
        var fetches = 0
    }
    let identifier: String
    private let state: Mutex<State>

    init(_ identifier: String = "stub:jwks", document: Data?) {
        self.identifier = identifier
        state = Mutex(State(document: document.map { .success($0) } ?? .failure(AuthError(.keySetUnavailable, "down"))))
    }

    func set(_ document: Data) { state.withLock { $0.document = .success(document) } }
    func fail() { state.withLock { $0.document = .failure(AuthError(.keySetUnavailable, "unreachable")) } }
    var fetches: Int { state.withLock { $0.fetches } }

    func fetch() async throws -> Data {
        try state.withLock {
            $0.fetches += 1
            return try $0.document.get()
        }
    }
}

/// Keys and tokens minted by PyJWT (Tests/python/jwt_fixtures.py), fresh for each test run.
struct JWTFixtures: Sendable {
    struct Case: Decodable, Sendable {
        var name: String
        var token: String
        var expect: String
    }

    struct Cases: Decodable, Sendable {
        var now: Double
        var tenant: String
        var otherTenant: String
        var audiences: [String]
        var rotatedToken: String
        var oldKeyToken: String
        var hs256: String
        var hs256RSAConfusion: String
        var cases: [Case]
    }

    let directory: String
    let jwks: Data
    let rotatedJWKS: Data
    let sharedKey: [UInt8]
    let cases: Cases

    subscript(name: String) -> String {
        guard let found = cases.cases.first(where: { $0.name == name }) else {
            Issue.record("no fixture case \(name)")
            return ""
        }
        return found.token
    }

    /// The default configuration of the suite: both audience forms, the one tenant, and the v1
    /// issuer accepted too (it is not by default), so that v1 and v2 tokens both pass.
    var configuration: TokenVerifier.Configuration {
        var configuration = TokenVerifier.Configuration(audiences: Set(cases.audiences), tenants: [cases.tenant])
        configuration.acceptV1Issuer = true
        return configuration
    }

    /// Minted once per test process (three RSA keys take a moment).
    static func load() throws -> JWTFixtures { try shared.get() }

    private static let outputDir = TempDir("gatehouse-jwt")

    private static let shared: Result<JWTFixtures, FixtureError> = {
        let script = Paths.packageRoot.appendingPathComponent("Tests/python/jwt_fixtures.py").path
        guard let python = which("python3") else {
            return .failure(FixtureError("python3 is not on PATH: run scripts/setup"))
        }
        do {
            let (status, output) = try Subprocess.run(python, [script, outputDir.path], timeout: .seconds(120))
            guard status == 0 else {
                let hint = output.contains("MISSING-PACKAGES") ? " — run scripts/setup (it installs pyjwt[crypto])" : ""
                return .failure(FixtureError("jwt_fixtures.py failed (\(status))\(hint): \(output)"))
            }
            func read(_ name: String) throws -> Data {
                guard let data = FileManager.default.contents(atPath: outputDir.file(name)) else {
                    throw FixtureError("jwt_fixtures.py wrote no \(name)")
                }
                return data
            }
            let hex = String(decoding: try read("shared.key"), as: UTF8.self)
            var key: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex, let next = hex.index(index, offsetBy: 2, limitedBy: hex.endIndex) {
                key.append(UInt8(hex[index..<next], radix: 16)!)
                index = next
            }
            return .success(
                JWTFixtures(
                    directory: outputDir.path, jwks: try read("jwks.json"), rotatedJWKS: try read("jwks-rotated.json"),
                    sharedKey: key, cases: try JSONDecoder().decode(Cases.self, from: try read("cases.json"))))
        } catch let error as FixtureError {
            return .failure(error)
        } catch {
            return .failure(FixtureError("jwt fixtures: \(error)"))
        }
    }()

    /// A verifier over a stub source serving `jwks.json`, at the fixtures' `now`. `tokenClock`:
    /// the verifier's own clock for the tokens' lifetimes, when it must not move with the key
    /// cache's (the fixtures' tokens live an hour; key policies span days).
    func verifier(
        configuration: TokenVerifier.Configuration? = nil, source: StubSource? = nil, clock: ManualClock? = nil,
        tokenClock: ManualClock? = nil, policy: JWKSCache.Policy = JWKSCache.Policy(), cacheFile: String? = nil,
        logs: CapturedLogs = CapturedLogs()
    ) async throws -> (TokenVerifier, JWKSCache, StubSource, ManualClock) {
        let source = source ?? StubSource(document: jwks)
        let clock = clock ?? ManualClock(cases.now)
        let keys = try await JWKSCache(
            sources: [source], cacheFile: cacheFile, policy: policy, clock: clock.clock, logger: logs.logger)
        let verifier = try await TokenVerifier(
            configuration: configuration ?? self.configuration, keys: keys, clock: (tokenClock ?? clock).clock,
            logger: logs.logger)
        return (verifier, keys, source, clock)
    }
}

extension Result {
    var failureCode: AuthError.Code? {
        if case .failure(let error as AuthError) = self { return error.code }
        return nil
    }
}

/// Log lines kept in memory, so tests can assert on what was (not) logged.
final class CapturedLogs: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }

    var logger: Logger { Logger(label: "test") { _ in CapturingLogHandler(logs: self) } }

    private struct CapturingLogHandler: LogHandler {
        let logs: CapturedLogs
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            logs.append("\(event.level) \(event.message) \(event.metadata ?? [:])")
        }
    }
}

let quietLogger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
