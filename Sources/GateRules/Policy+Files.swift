import FoundationEssentials

/// Reading rule sets from disk: the only I/O in the library, kept apart from the pure pipeline.
extension Policy {
    /// The `.rules` files of a directory (not its subdirectories), sorted by name, or the file
    /// itself if `path` is a file. Problems become diagnostics.
    public static func sources(at path: String) -> ([SourceFile], [Diagnostic]) {
        var isDirectory = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            return ([], [Diagnostic(.ioRead, .error, "\(path): no such file or directory", at: nil)])
        }
        var paths = [path]
        if isDirectory {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            let prefix = path.hasSuffix("/") ? path : path + "/"
            paths = names.filter { $0.hasSuffix(".rules") }.sorted().map { prefix + $0 }
            if paths.isEmpty {
                return ([], [Diagnostic(.ioEmpty, .error, "\(path) holds no .rules files", at: nil)])
            }
        }
        var files: [SourceFile] = []
        var diagnostics: [Diagnostic] = []
        for file in paths {
            guard let data = FileManager.default.contents(atPath: file) else {
                diagnostics.append(Diagnostic(.ioRead, .error, "\(file): cannot read the file", at: nil))
                continue
            }
            guard let text = String(data: data, encoding: .utf8) else {
                diagnostics.append(Diagnostic(.ioRead, .error, "\(file): the file is not UTF-8 text", at: nil))
                continue
            }
            files.append(SourceFile(name: file, text: text))
        }
        return (files, diagnostics)
    }

    /// Reads and compiles a directory of rules.
    public static func compile(directory: String, options: CheckOptions = CheckOptions()) -> (
        Policy?, [Diagnostic], [SourceFile]
    ) {
        let (files, readDiagnostics) = sources(at: directory)
        if readDiagnostics.contains(where: \.isError) { return (nil, readDiagnostics, files) }
        let (policy, diagnostics) = compile(files: files, options: options)
        return (policy, readDiagnostics + diagnostics, files)
    }
}

extension PolicyHandle {
    /// Rereads a directory and swaps the result in if it checks.
    @discardableResult
    public func reload(directory: String, options: CheckOptions? = nil) -> ReloadResult {
        let (files, readDiagnostics) = Policy.sources(at: directory)
        if readDiagnostics.contains(where: \.isError) {
            return ReloadResult(accepted: false, diagnostics: readDiagnostics, files: files)
        }
        return reload(files: files, options: options)
    }
}
