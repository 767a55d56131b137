import Foundation
import GatehouseTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// A site broker, a TLS hub stand-in, an enrollment-group key and a config, all real, in one
/// temporary folder; `startGateway()` runs the real gatehoused binary against them. The site
/// broker runs with the settings the package installs (`MosquittoBroker.packagedSiteSettings`).
final class GatewayRig: @unchecked Sendable {
    // @unchecked: used from one test task at a time.
    private(set) var dir = TempDir("gatehouse-it")
    let site: MosquittoBroker
    let hub: MosquittoBroker
    let configPath: String
    var gateway: Subprocess?
    private var runs = 0

    /// The enrollment-group key gatehoused derives device keys from.
    let groupKey: [UInt8] = (0..<32).map { UInt8($0) }

    /// `hubSection`: the [hub] keys besides `plugin`; by default a TLS mosquitto started here.
    init(
        extraConfig: String = "", hubPlugin: String = "mqtt", hubExtra: String = "", hubSection: String? = nil,
        in directory: TempDir? = nil
    ) throws {
        if let directory { dir = directory }
        site = try MosquittoBroker(name: "site", in: dir, extraConfig: try MosquittoBroker.packagedSiteSettings())
        hub = try MosquittoBroker(name: "hub", in: dir, tls: true)
        try dir.write("group.key", Data(groupKey).base64EncodedString())
        chmod(dir.file("group.key"), 0o600)
        configPath = try dir.write(
            "gatehouse.toml",
            """
            [gateway]
            state_db = "\(dir.file("state.db"))"
            plugin_dir = "\(Paths.binDir.path)"
            log_level = "info"
            drain_timeout = "2s"

            [identity]
            group_key_file = "\(dir.file("group.key"))"

            \(extraConfig)

            [site]
            plugin = "mqtt"
            port = \(site.port)

            [hub]
            plugin = "\(hubPlugin)"
            \(hubSection ?? (hubPlugin == "mqtt" ? "hostname = \"localhost\"\nport = \(hub.port)\nca_file = \"\(hub.tls!.caFile)\"" : ""))
            \(hubExtra)
            """)
    }

    /// Points `[gateway] rules_dir` at `directory`.
    func setRulesDir(_ directory: String) throws {
        var text = try String(contentsOfFile: configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "[gateway]\n", with: "[gateway]\nrules_dir = \"\(directory)\"\n")
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Adds lines to the `[gateway]` section.
    func addGatewayKeys(_ lines: String) throws {
        var text = try String(contentsOfFile: configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "[gateway]\n", with: "[gateway]\n\(lines)\n")
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    @discardableResult
    func startGateway() throws -> Subprocess {
        runs += 1
        let child = try Subprocess(Paths.gatehoused, ["-c", configPath], in: dir, name: "gatehoused-\(runs)")
        gateway = child
        // Up when the site subscription is in place (or it exited).
        _ = waitUntil(timeout: .seconds(10)) { child.stderr.contains("subscribed to") || !child.isRunning }
        return child
    }

    /// Every gatehoused log so far, all runs.
    var gatewayLogs: String {
        (1...max(runs, 1)).map {
            (try? String(contentsOfFile: dir.file("gatehoused-\($0).err"), encoding: .utf8)) ?? ""
        }
        .joined()
    }

    func status() throws -> [String: Any] {
        let (code, output) = try Subprocess.run(Paths.gatehouseCLI, ["status", "--json", "-c", configPath])
        guard code == 0, let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] else {
            throw FixtureError("gatehouse status failed (\(code)): \(output)")
        }
        return json
    }

    func daemonCounter(_ key: String) -> Int {
        ((try? status())?["daemon"] as? [String: Any])?[key] as? Int ?? -1
    }

    deinit {
        gateway?.stop()
    }
}

/// Reads "topic payload" lines from a collector into per-device payload lists, in arrival order.
func payloadsByDevice(_ lines: [String]) -> [String: [String]] {
    var result: [String: [String]] = [:]
    for line in lines {
        guard let space = line.firstIndex(of: " ") else { continue }
        let topic = line[..<space].split(separator: "/")
        guard topic.count >= 2, topic[0] == "devices" else { continue }
        result[String(topic[1]), default: []].append(String(line[line.index(after: space)...]))
    }
    return result
}
