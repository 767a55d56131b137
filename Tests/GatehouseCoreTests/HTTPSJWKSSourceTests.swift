import Foundation
import GatehouseAuth
import GatehouseCore
import GatehouseTestSupport
import Logging
import Testing

/// The JWKS over HTTPS, on the swift-nio client (no FoundationNetworking): against a local HTTPS
/// server (Python's http.server with a throwaway CA) and against nothing.
@Suite("JWKS over HTTPS")
struct HTTPSJWKSSourceTests {
    static let jwks =
        #"{"keys":[{"kty":"EC","crv":"P-256","kid":"ec-1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#

    /// A Python HTTPS file server on 127.0.0.1 serving `dir/www` (python3 is required: it fails, saying so).
    func server(_ dir: TempDir, tls: MosquittoBroker.TLSFiles) throws -> (Subprocess, Int) {
        let port = freePort()
        let script = try dir.write(
            "serve.py",
            """
            import http.server, os, ssl, sys
            os.chdir(sys.argv[1])
            server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), http.server.SimpleHTTPRequestHandler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(sys.argv[3], sys.argv[4])
            server.socket = context.wrap_socket(server.socket, server_side=True)
            print("ready", flush=True)
            server.serve_forever()
            """)
        let python = try #require(which("python3"), "python3 is needed for the local HTTPS server")
        let child = try Subprocess(
            python, [script, dir.file("www"), String(port), tls.certFile, tls.keyFile], in: dir, name: "https")
        for _ in 0..<100 where !child.stdout.contains("ready") { usleep(50_000) }
        #expect(child.stdout.contains("ready"), "the HTTPS server did not start: \(child.stderr)")
        return (child, port)
    }

    @Test("fetches the document, verified against the CA; refuses a 404, an oversized body and an unknown CA")
    func fetches() async throws {
        let dir = TempDir("gatehouse-jwks-https")
        let tls = try Certificates.make(in: dir)
        try FileManager.default.createDirectory(atPath: dir.file("www"), withIntermediateDirectories: false)
        try dir.write("www/keys.json", Self.jwks)
        try dir.write("www/big.json", String(repeating: "x", count: 40_000))
        let (child, port) = try server(dir, tls: tls)
        defer { child.stop() }

        let source = try HTTPSJWKSSource(
            url: URL(string: "https://localhost:\(port)/keys.json?api-version=1")!, caFile: tls.caFile)
        let data = try await source.fetch()
        #expect(String(decoding: data, as: UTF8.self) == Self.jwks)
        let keys = try await JWKSCache(sources: [source], logger: Logger(label: "test"))
        await keys.refresh()
        #expect(await keys.keyIDs == ["ec-1"])

        let missing = try HTTPSJWKSSource(url: URL(string: "https://localhost:\(port)/none.json")!, caFile: tls.caFile)
        let notFound = await #expect(throws: AuthError.self) { _ = try await missing.fetch() }
        #expect(notFound?.code == .keySetUnavailable)
        #expect(notFound?.message.contains("answered HTTP 404") == true, "\(String(describing: notFound))")

        var big = try HTTPSJWKSSource(url: URL(string: "https://localhost:\(port)/big.json")!, caFile: tls.caFile)
        big.maxBytes = 10_000
        let oversized = await #expect(throws: AuthError.self) { _ = try await big.fetch() }
        #expect(oversized?.message.contains("over 10000 bytes") == true, "\(String(describing: oversized))")

        // The system's CAs do not know the throwaway CA.
        let untrusted = try HTTPSJWKSSource(url: URL(string: "https://localhost:\(port)/keys.json")!)
        let refused = await #expect(throws: AuthError.self) { _ = try await untrusted.fetch() }
        #expect(refused?.code == .keySetUnavailable)
    }

    @Test("an unreachable server is keyset-unavailable; the cache keeps the keys it has")
    func unreachable() async throws {
        var source = try HTTPSJWKSSource(url: URL(string: "https://127.0.0.1:\(freePort())/keys")!)
        source.timeout = .seconds(5)
        let error = await #expect(throws: AuthError.self) { _ = try await source.fetch() }
        #expect(error?.code == .keySetUnavailable)
        let dir = TempDir("gatehouse-jwks")
        let path = try dir.write("jwks.json", Self.jwks)
        let keys = try await JWKSCache(sources: [FileJWKSSource(path: path), source], logger: Logger(label: "test"))
        await keys.refresh()
        #expect(await keys.keyIDs == ["ec-1"])
    }

    @Test("only https URLs with a host")
    func configuration() throws {
        #expect(throws: AuthError.self) { try HTTPSJWKSSource(url: URL(string: "http://login.example/keys")!) }
        #expect(throws: AuthError.self) { try HTTPSJWKSSource(url: URL(string: "https:///keys")!) }
        _ = try HTTPSJWKSSource(url: URL(string: "https://login.microsoftonline.com/common/discovery/v2.0/keys")!)
    }
}
