import FoundationEssentials
import GatehouseBasics
import TOMLReader

/// Where a setting came from: a file and, when it can be found, the line (docs/configuration.md,
/// "Files").
public struct ConfigPlace: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?

    public init(file: String, line: Int? = nil) {
        self.file = file
        self.line = line
    }

    public var description: String { line.map { "\(file):\($0)" } ?? file }
}

/// For every section and key of the merged configuration, the file (and line) that set it last.
public struct ConfigOrigins: Sendable {
    /// The files read, in the order they apply.
    public var files: [String] = []
    /// Where each `[section]` was last declared.
    public var sections: [String: ConfigPlace] = [:]
    /// Where each `[section] key` was last set (top-level keys under the section "").
    public var keys: [String: [String: ConfigPlace]] = [:]

    public init() {}

    /// The place of `[section] key`, else of `[section]`, else nil.
    public func place(_ section: String?, _ key: String?) -> ConfigPlace? {
        if let key, let place = keys[section ?? ""]?[key] { return place }
        if let section, let place = sections[section] { return place }
        if section == nil, let key, let place = sections[key] { return place }
        return nil
    }
}

extension GatewayConfig {
    /// The configuration file the daemon and the CLI read when `-c` is not given.
    public static let defaultPath = "/etc/gatehouse/gatehouse.toml"
    /// The package's defaults: every key with its default value and what it does. Package-owned
    /// (replaced on every upgrade, never edited on site); read when `defaultPath` does not exist.
    public static let packagedDefaultsPath = "/usr/share/gatehouse/gatehouse.toml"

    /// The files a configuration is made of, in the order they apply (docs/configuration.md,
    /// "Files"):
    ///
    /// 1. `path` itself; when that is `defaultPath` and it does not exist, `packagedDefaults`
    ///    instead (a site that keeps everything in drop-ins has no `gatehouse.toml` of its own).
    /// 2. Every `*.toml` file in the directory `gatehouse.d` beside `path`, in the byte order of
    ///    their names. Names starting with `.` are skipped, as are dpkg's leftovers
    ///    (`*.dpkg-old` and the like do not end in `.toml`).
    public static func sources(
        path: String, packagedDefaults: String = packagedDefaultsPath
    ) throws(ConfigError) -> [String] {
        let manager = FileManager.default
        var files: [String] = []
        if manager.fileExists(atPath: path) {
            files.append(path)
        } else if path == defaultPath, manager.fileExists(atPath: packagedDefaults) {
            files.append(packagedDefaults)
        } else {
            throw ConfigError(file: path, message: "cannot read the configuration file: it does not exist")
        }
        let directory = PathText.directory(of: path)
        let dropIns = PathText.join(directory.isEmpty ? "." : directory, "gatehouse.d")
        var isDirectory = false
        guard manager.fileExists(atPath: dropIns, isDirectory: &isDirectory) else { return files }
        guard isDirectory else {
            throw ConfigError(file: dropIns, message: "must be a directory of *.toml drop-in files")
        }
        let names: [String]
        do {
            names = try manager.contentsOfDirectory(atPath: dropIns)
        } catch {
            throw ConfigError(
                file: dropIns, message: "cannot list the drop-in directory: \(error)")
        }
        for name in names.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        where name.hasSuffix(".toml") && !name.hasPrefix(".") {
            files.append(PathText.join(dropIns, name))
        }
        return files
    }

    /// Reads `files` in order and merges them: a later file's key replaces an earlier file's value
    /// of the same `[section] key` whole (a list or an inline table too); sections and keys it does
    /// not name stay. Returns the merged table and where each setting came from.
    static func merge(files: [(path: String, text: String)]) throws(ConfigError) -> (TOMLTable, ConfigOrigins) {
        var root = TOMLTable()
        var origins = ConfigOrigins()
        for (path, text) in files {
            let table: TOMLTable
            do {
                table = try TOMLTable(parsing: text)
            } catch {
                throw ConfigError(
                    file: path, line: error.line, message: "TOML syntax: \(error.message) (column \(error.column))")
            }
            origins.files.append(path)
            func place(_ position: TOMLPosition?) -> ConfigPlace { ConfigPlace(file: path, line: position?.line) }
            for name in table.keys {
                guard let value = table[name] else { continue }
                if let section = value.table, !section.isInline {
                    origins.sections[name] = place(table.position(of: name))
                    var merged = root[name]?.table ?? TOMLTable()
                    for key in section.keys {
                        merged.setValue(section[key], forKey: key, position: section.position(of: key))
                        origins.keys[name, default: [:]][key] = place(section.position(of: key))
                    }
                    root.setValue(.table(merged), forKey: name, position: table.position(of: name))
                } else {
                    // A top-level key (an error for the reader to report, placed here).
                    origins.sections[name] = place(table.position(of: name))
                    root.setValue(value, forKey: name, position: table.position(of: name))
                }
            }
        }
        return (root, origins)
    }
}
