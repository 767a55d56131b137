// swift-tools-version: 6.0
// gatehouse — an edge gateway for Debian site gateways.
// The targets follow docs/architecture.md; C libraries sit behind thin C<Lib> targets.
import PackageDescription

let package = Package(
    name: "gatehouse",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "gatehoused", targets: ["gatehoused"]),
        .executable(name: "gatehouse", targets: ["gatehouse"]),
        // The offline IoT Hub + DPS emulator for tests, demos and integrators.
        .executable(name: "gatehouse-devhub", targets: ["DevHub"]),
        // Plugins are shared objects loaded with dlopen; SwiftPM names the file lib<name>.so.
        .library(name: "gatehouse-mqtt", type: .dynamic, targets: ["MQTTTransport"]),
        .library(name: "gatehouse-amqp", type: .dynamic, targets: ["AMQPTransport"]),
        .library(name: "gatehouse-nftables", type: .dynamic, targets: ["NftablesFirewall"]),
        // For the benchmark and fuzzing packages under Benchmarks/ and Fuzz/.
        .library(name: "GateRules", targets: ["GateRules"]),
        .library(name: "MQTTCodec", targets: ["MQTTCodec"]),
        .library(name: "DevHubKit", targets: ["DevHubKit"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        // Operations (docs/operations.md): the metrics API and its Prometheus exposition.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // The versioned C ABI between the host and its plugins: one header, nothing else.
        .target(name: "GatehousePluginABI", path: "Sources/GatehousePluginABI"),
        // What full Foundation gave and FoundationEssentials does not (trimming, paths, stderr,
        // named threads, hex): nothing shipped imports Foundation, whose ICU is most of the
        // package (packaging/README.md, "Size").
        .target(name: "GatehouseBasics", dependencies: ["CThreadName"]),
        .systemLibrary(name: "CThreadName", path: "Sources/CThreadName"),
        // The plugin author's kit: conform to `TransportPlugin` or `FirewallPlugin`, export one
        // entry point. Plugins link this and nothing of the host.
        .target(
            name: "GatehousePluginKit",
            dependencies: ["GatehousePluginABI", "IoTHubWire", "StrictJSON", "GatehouseBasics"]
        ),
        // The host's loader: dlopen, the ABI handshake, plugin instances and their callbacks.
        .target(
            name: "GatehousePluginHost",
            dependencies: ["GatehousePluginABI", "GatehousePluginKit"]
        ),
        // IoT Hub's MQTT wire format: property bags, topics, limits. Both the device side (the
        // `mqtt` transport, the relay) and the hub side (DevHub) use it; no dependencies.
        .target(name: "IoTHubWire"),
        // The one JSON module: a strict parser (ordered members, exact numbers, no duplicate
        // names, a depth limit) and a deterministic writer. No dependencies.
        .target(name: "StrictJSON"),
        // The configuration's TOML 1.0 reader, with the line of every key; no dependencies
        // (TOMLKit, which it replaces, imports Foundation).
        .target(name: "TOMLReader", dependencies: ["StrictJSON"]),
        .systemLibrary(
            name: "CMosquitto",
            path: "Sources/CMosquitto",
            pkgConfig: "libmosquitto",
            providers: [.apt(["libmosquitto-dev"])]
        ),
        // One libmosquitto client, driven by poll(2) (any descriptor number), for the DPS client,
        // the dynamic-security admin and the `mqtt` transport's hub side (OpenSSL: its batched
        // TLS writes).
        .target(name: "MosquittoClient", dependencies: ["CMosquitto"]),
        // The rule language: lexer, parser, checker, compiler, evaluator, diagnostics, test runner.
        // No dependencies: integrators' tooling and the daemon both link it.
        .target(name: "GateRules"),
        .systemLibrary(
            name: "COpenSSL",
            path: "Sources/COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // capset(2): gatehoused gives up CAP_NET_ADMIN when it runs no firewall plugin.
        .systemLibrary(name: "CProcess", path: "Sources/CProcess"),
        // AMQP 1.0 through qpid-proton's C library: the `amqp` transport and DevHub's AMQP endpoint.
        // No pkgConfig: Debian's libqpid-proton.pc opens with a C comment SwiftPM warns about, and
        // it only names the default paths (the modulemap links qpid-proton).
        .systemLibrary(
            name: "CQpidProton",
            path: "Sources/CQpidProton",
            providers: [.apt(["libqpid-proton11-dev"])]
        ),
        // TPM 2.0 through tss2-esys: EK/SRK, ActivateCredential, import, HMAC inside the TPM.
        .systemLibrary(
            name: "CTSS2",
            path: "Sources/CTSS2",
            pkgConfig: "tss2-esys tss2-tctildr tss2-mu tss2-rc",
            providers: [.apt(["libtss2-dev"])]
        ),
        // The DPS client: registers leaf devices on their behalf (keys from the caller's signer).
        // The gateway's own identity: DPS TPM attestation over HTTPS (swift-nio + NIOSSL + NIOHTTP1).
        .target(
            name: "GatehouseProvisioning",
            dependencies: [
                "StrictJSON",
                "IoTHubWire",
                "MosquittoClient",
                "GatehouseTPM",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
        // Site-broker credentials: mosquitto's dynamic security plugin over MQTT, the ACL plan.
        .target(name: "GatehouseSiteBroker", dependencies: ["MosquittoClient", "StrictJSON"]),
        // JWT verification for the command gate: jwt-kit, a JWKS cache, Entra ID's rules.
        .target(
            name: "GatehouseAuth",
            dependencies: [
                "StrictJSON",
                "GatehouseBasics",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "GatehouseTPM",
            dependencies: ["CTSS2", "IoTHubWire", "GatehouseBasics", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // MQTT 3.1.1 packets: a strict decoder and an encoder, no I/O. Shared by the site-side
        // client (which must control its own PUBACKs) and the hub emulator.
        .target(name: "MQTTCodec"),
        .target(
            name: "GatehouseCore",
            dependencies: [
                "GatehousePluginKit",
                "GatehousePluginHost",
                "IoTHubWire",
                "GatehouseStore",
                "GatehouseTPM",
                "GatehouseProvisioning",
                "GatehouseAuth",
                "GatehouseSiteBroker",
                "GateRules",
                "StrictJSON",
                "GatehouseBasics",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                "TOMLReader",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // SQLite's C API (libsqlite3-dev): its header and `link "sqlite3"`.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // The state store's database layer over SQLite's C API, hand-written because GRDB imports
        // Foundation (and through it ICU: packaging/README.md, "Size"). Standard library only.
        .target(name: "SQLiteDB", dependencies: ["CSQLite"]),
        .target(
            name: "GatehouseStore",
            // IoTHubWire: the v8 migration reads the property bags older versions stored.
            dependencies: [
                "IoTHubWire", "SQLiteDB", "GatehouseBasics",
                // SQLite's C API, for the outbox's hot insert (StateStore+Outbox.swift).
                "CSQLite",
            ]
        ),
        // The daemon's and the CLI's commands, as libraries: the executables below are one line each,
        // and `gatehouse` is both when the package installs it as gatehoused too.
        .target(
            name: "GatehousedCommand",
            dependencies: [
                "GatehouseCore",
                "GatehouseStore",
                "GatehouseBasics",
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                "CMalloc",
                "CProcess",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "GatehouseCLICommands",
            dependencies: [
                "GatehouseCore",
                "GatehousePluginHost",
                "GatehouseTPM",
                "GatehouseStore",
                "GatehouseSiteBroker",
                "GatehouseBasics",
                "GateRules",
                "StrictJSON",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "gatehoused", dependencies: ["GatehousedCommand"]),
        .executableTarget(
            name: "gatehouse",
            dependencies: [
                "GatehouseCLICommands", "GatehousedCommand",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // The upstream transports' TLS client socket (OpenSSL, non-blocking, for a poll(2) loop).
        .target(name: "HubTLS", dependencies: ["COpenSSL"]),
        // The `mqtt` transport's MQTT client for IoT Hub, on MQTTCodec and HubTLS.
        .target(name: "MQTTHubClient", dependencies: ["HubTLS", "MQTTCodec"]),
        .target(
            name: "MQTTTransport",
            dependencies: [
                "GatehousePluginKit", "GatehouseBasics", "IoTHubWire", "HubTLS", "MQTTHubClient", "COpenSSL",
                "MQTTCodec",
            ],
            path: "Plugins/MQTTTransport"
        ),
        // The `amqp` upstream transport: many device identities on each AMQP connection to IoT
        // Hub, authorised by CBS put-tokens (docs/protocols.md §3), on qpid-proton's engine and
        // OpenSSL, driven by the plugin's own poll(2) thread.
        .target(
            name: "AMQPTransport",
            dependencies: [
                "GatehousePluginKit", "GatehouseBasics", "IoTHubWire", "StrictJSON", "CQpidProton", "COpenSSL",
                "HubTLS",
            ],
            path: "Plugins/AMQPTransport"
        ),
        // libnftables, the C API of nft, for the firewall plugin.
        .systemLibrary(
            name: "CNftables",
            path: "Sources/CNftables",
            pkgConfig: "libnftables",
            providers: [.apt(["libnftables-dev"])]
        ),
        .target(
            name: "NftablesFirewall",
            dependencies: ["GatehousePluginKit", "GatehouseBasics", "StrictJSON", "CNftables"],
            path: "Plugins/NftablesFirewall"
        ),
        .executableTarget(
            name: "tpm-bench",
            dependencies: ["GatehouseTPM"],
            path: "Benchmarks/tpm-bench",
            exclude: ["run.sh"]
        ),
        .executableTarget(
            name: "gate-bench",
            dependencies: [
                "GatehouseCore", "GatehouseAuth", "GateRules", "GatehouseStore", "GatehousePluginKit",
                "GatehousePluginHost",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/gate-bench",
            exclude: ["run.sh"]
        ),
        .executableTarget(
            name: "relay-bench",
            dependencies: ["CMosquitto"],
            path: "Benchmarks/relay-bench"
        ),
        // Helpers the test targets share: temp dirs, subprocesses, brokers, C fixture plugins.
        .target(name: "GatehouseTestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "MQTTCodecTests", dependencies: ["MQTTCodec", "GatehouseTestSupport"]),
        .testTarget(name: "IoTHubWireTests", dependencies: ["IoTHubWire"]),
        .testTarget(name: "StrictJSONTests", dependencies: ["StrictJSON"]),
        .testTarget(name: "TOMLReaderTests", dependencies: ["TOMLReader", "GatehouseTestSupport"]),
        .testTarget(name: "GatehouseBasicsTests", dependencies: ["GatehouseBasics"]),
        // Real mosquitto brokers: the poll(2) driver, descriptors past 1024, deadlines.
        .testTarget(name: "MosquittoClientTests", dependencies: ["MosquittoClient", "GatehouseTestSupport"]),
        .testTarget(name: "GatehouseAuthTests", dependencies: ["GatehouseAuth", "GatehouseTestSupport"]),
        // SQLiteDB: the migration tests write databases as other versions left them. Fixtures/:
        // dumps of databases the GRDB-based store wrote, read from disk (#filePath), not bundled.
        .testTarget(
            name: "GatehouseStoreTests",
            dependencies: ["GatehouseStore", "GatehouseTestSupport", "SQLiteDB", "CSQLite", "GatehouseBasics"],
            exclude: ["Fixtures"]),
        .testTarget(name: "SQLiteDBTests", dependencies: ["SQLiteDB", "CSQLite", "GatehouseTestSupport"]),
        .testTarget(name: "GatehousePluginKitTests", dependencies: ["GatehousePluginKit"]),
        // The `amqp` transport's pure parts: addresses, CBS requests, SASL frames, the pool.
        .testTarget(name: "AMQPTransportTests", dependencies: ["AMQPTransport", "CQpidProton"]),
        // The `mqtt` transport's hub client against a real mosquitto over TLS.
        .testTarget(
            name: "MQTTHubClientTests",
            dependencies: ["MQTTHubClient", "MQTTCodec", "COpenSSL", "GatehouseTestSupport"]),
        // Compiles the C fixture plugins and loads them.
        .testTarget(
            name: "GatehousePluginHostTests",
            dependencies: ["GatehousePluginHost", "GatehousePluginKit", "GatehousePluginABI", "GatehouseTestSupport"]),
        .testTarget(name: "GatehouseSiteBrokerTests", dependencies: ["GatehouseSiteBroker"]),
        .testTarget(name: "GatehouseTPMTests", dependencies: ["GatehouseTPM", "GatehouseTestSupport"]),
        // The golden corpus is read from disk by the tests (#filePath), not bundled.
        .testTarget(name: "GateRulesTests", dependencies: ["GateRules", "GatehouseTestSupport"], exclude: ["corpus"]),
        .testTarget(
            name: "GatehouseCoreTests",
            dependencies: [
                "GatehouseCore", "GatehouseStore", "GatehousePluginKit", "GatehousePluginHost", "GatehouseSiteBroker",
                "GatehouseTestSupport",
                "GatehouseAuth", "GateRules", "GatehouseProvisioning", .product(name: "Logging", package: "swift-log"),
                // RelayTests holds the database's write lock from a second connection.
                "SQLiteDB",
                // ServicesTests runs services in a ServiceGroup.
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "GatehouseIntegrationTests",
            dependencies: [
                "GatehouseCore", "GatehousePluginHost", "GatehouseStore", "GatehouseSiteBroker", "GatehouseTestSupport",
                "GatehouseProvisioning",
                "GatehouseTPM",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            exclude: []
        ),

        // ── DevHub, apart from the product ──────────────────────────────────────────────────
        // The offline IoT Hub + DPS emulator for tests, demos and integrators (docs/devhub.md).
        // It lives under DevHub/ and shares only the wire modules (MQTTCodec, IoTHubWire,
        // StrictJSON) with the gateway; nothing of the product depends on it, and it ships in its
        // own .deb, gatehouse-devhub. A SwiftPM package of its own would build swift-nio and the
        // rest a second time.
        // DevHub: IoT Hub's device endpoint and DPS over MQTT/TLS, a control API, SQLite state.
        .target(
            name: "DevHubKit",
            dependencies: [
                "StrictJSON",
                "MQTTCodec",
                "IoTHubWire",
                // RSA-OAEP with a label and AES-CFB for DPS TPM attestation (swift-crypto has neither).
                "COpenSSL",
                // The AMQP endpoint: proton's connection driver and codec.
                "CQpidProton",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                "SQLiteDB",
                "GatehouseBasics",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "DevHub/Sources/DevHubKit"
        ),
        .executableTarget(
            name: "DevHub",
            dependencies: [
                "DevHubKit",
                "StrictJSON",
                "IoTHubWire",
                "GatehouseBasics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "DevHub/Sources/DevHub"
        ),
        .testTarget(
            name: "DevHubTests",
            dependencies: ["DevHubKit", "StrictJSON", "IoTHubWire", "MQTTCodec", "GatehouseTestSupport"],
            path: "DevHub/Tests/DevHubTests"),
    ],
    swiftLanguageModes: [.v6]
)

// What gatehoused, gatehouse and the plugins are built from import only the standard library and
// FoundationEssentials, never Foundation (packaging/README.md, "Size"). With member import
// visibility a module sees only the APIs of what it imports itself, so an API of Foundation
// reached through a dependency's import is a compile error here, not a surprise at packaging.
let shippedModules: Set<String> = [
    "GatehouseBasics", "TOMLReader", "SQLiteDB", "GatehousePluginKit", "GatehousePluginHost", "IoTHubWire",
    "StrictJSON", "MosquittoClient",
    "GateRules", "GatehouseProvisioning", "GatehouseSiteBroker", "GatehouseAuth", "GatehouseTPM", "MQTTCodec",
    "GatehouseCore", "GatehouseStore", "GatehousedCommand", "GatehouseCLICommands", "gatehoused", "gatehouse",
    "MQTTTransport", "AMQPTransport", "NftablesFirewall", "HubTLS", "MQTTHubClient",
]
for target in package.targets where shippedModules.contains(target.name) {
    target.swiftSettings = (target.swiftSettings ?? []) + [.enableUpcomingFeature("MemberImportVisibility")]
}
