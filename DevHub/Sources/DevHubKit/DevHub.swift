import Dispatch
import FoundationEssentials
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import StrictJSON

#if canImport(Glibc)
    import Glibc
#endif

// DevHub: an offline Azure IoT Hub + DPS emulator that Azure's own device SDKs accept.
//
// How this module is laid out:
// - `DevHub.swift` (this file): configuration and the server (listeners, TLS, lifecycle).
// - `MQTTSession.swift`: one MQTT connection's state machine, on MQTTCodec.
// - `HubEndpoint.swift`: the IoT Hub device endpoint (auth, telemetry, C2D, methods, twins).
// - `DPSEndpoint.swift`: the DPS registration endpoint (enrollments, assignment).
// - `AMQPConnection.swift` (+`Device`): the IoT Hub endpoint over AMQP 1.0 (proton's connection
//   driver; SASL in `AMQPSASL.swift`, messages in `AMQPMessage.swift` and `ProtonCodec.swift`).
// - `SASVerifier.swift`: SAS token parsing and verification.
// - `Registry.swift` + `DevHubStore.swift`: the records and their SQLite store (SQLiteDB).
// - `TelemetryWriter.swift`: batched, durable telemetry writes.
// - `ControlAPI.swift` + `ControlClient.swift`: the local HTTP/JSON control interface.
// - `Certificates.swift`: the CA and server certificate.
// JSON (order-preserving, numbers exact, strict): StrictJSON. Property bags and topics: IoTHubWire.

/// How to run DevHub.
public struct DevHubConfiguration: Sendable {
    /// Where state, certificates and `devhub.json` live.
    public var dataDirectory: String
    /// The MQTT/TLS listener for both the hub and DPS. Port 0 picks a free port.
    public var mqttHost = "127.0.0.1"
    public var mqttPort = 8883
    /// The control API listener (plain HTTP, loopback by default).
    public var httpHost = "127.0.0.1"
    public var httpPort = 8080
    /// DPS over HTTPS (TPM attestation needs it; symmetric keys work too), with the same CA
    /// and server certificate as the MQTT listener. Nil: no HTTPS listener. Port 0 picks one.
    public var dpsHTTPSHost: String?
    public var dpsHTTPSPort = 443
    /// IoT Hub over AMQP 1.0/TLS (`amqps`, docs/protocols.md §3), with the same CA and server
    /// certificate. Nil: no AMQP listener. Port 0 picks one; Azure's SDKs use 5671.
    public var amqpHost: String?
    public var amqpPort = 5671
    /// The hub's host name: what DPS returns as `assignedHub` and devices put in their username
    /// and SAS resource. Defaults to the MQTT listen address, so clients need no DNS.
    public var hubName: String?
    public var idScope = "0ne00DEVHUB"
    /// How many received telemetry messages to keep.
    public var telemetryRetention = 1_000_000
    public var eventLoopThreads = System.coreCount

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    public var effectiveHubName: String { hubName ?? mqttHost }
}

/// A running DevHub: the MQTT/TLS listener (IoT Hub + DPS), the control API, the store.
public final class DevHubServer: Sendable {
    public let configuration: DevHubConfiguration
    /// The bound addresses (the real ports when 0 was asked for).
    public let mqttPort: Int
    public let httpPort: Int
    /// The bound DPS HTTPS port, when that listener is on.
    public let dpsHTTPSPort: Int?
    /// The bound AMQP port, when that listener is on.
    public let amqpPort: Int?
    public let caPath: String

    private let group: MultiThreadedEventLoopGroup
    private let threadPool: NIOThreadPool
    private let telemetry: TelemetryWriter
    private let mqttChannel: any Channel
    private let httpChannel: any Channel
    private let dpsHTTPSChannel: (any Channel)?
    private let amqpChannel: (any Channel)?
    private let logger: Logger

    /// Opens the store, prepares certificates, binds both listeners and writes `devhub.json`.
    public static func start(_ configuration: DevHubConfiguration, logger: Logger) throws
        -> DevHubServer
    {
        try FileManager.default.createDirectory(
            atPath: configuration.dataDirectory, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let store = try DevHubStore(path: configuration.dataDirectory + "/devhub.sqlite")
        let hubName = configuration.effectiveHubName
        let certificates = try DevHubCertificates.prepare(
            in: configuration.dataDirectory,
            names: [hubName, configuration.mqttHost, "localhost", "127.0.0.1", "::1"]
                + (configuration.dpsHTTPSHost.map { [$0] } ?? []) + (configuration.amqpHost.map { [$0] } ?? []))
        return try DevHubServer(
            configuration: configuration, store: store, certificates: certificates, logger: logger)
    }

    private init(
        configuration: DevHubConfiguration, store: DevHubStore, certificates: DevHubCertificates,
        logger: Logger
    ) throws {
        self.configuration = configuration
        self.logger = logger
        self.caPath = certificates.caPath
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.eventLoopThreads))
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        self.group = group
        self.threadPool = threadPool
        let telemetry = TelemetryWriter(
            store: store, retention: configuration.telemetryRetention, logger: logger)
        self.telemetry = telemetry
        let hubName = configuration.effectiveHubName
        let hub = Hub(
            hubName: hubName, store: store, threadPool: threadPool, telemetry: telemetry, logger: logger)
        let dps = DPS(
            idScope: configuration.idScope, assignedHub: hubName, store: store, threadPool: threadPool,
            logger: logger)
        let services = SessionServices(hub: hub, dps: dps, logger: logger)

        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(certificates.serverChainPEM.utf8))
                .map {
                    .certificate($0)
                },
            privateKey: .privateKey(
                try NIOSSLPrivateKey(bytes: Array(certificates.serverKeyPEM.utf8), format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        let sslContext = try NIOSSLContext(configuration: tls)

        do {
            mqttChannel = try ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 4096)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                        try channel.pipeline.syncOperations.addHandler(MQTTSession(services: services))
                    }
                }
                .bind(host: configuration.mqttHost, port: configuration.mqttPort).wait()
        } catch {
            try? group.syncShutdownGracefully()
            try? threadPool.syncShutdownGracefully()
            throw DevHubError(
                .unavailable,
                "cannot listen for MQTT on \(configuration.mqttHost):\(configuration.mqttPort): \(error)")
        }
        mqttPort = mqttChannel.localAddress?.port ?? configuration.mqttPort

        if let host = configuration.dpsHTTPSHost {
            let endpoint = DPSHTTPS(dps: dps)
            do {
                let channel = try ServerBootstrap(group: group)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                            try channel.pipeline.syncOperations.addHandler(DPSHTTPSHandler(endpoint: endpoint))
                        }
                    }
                    .bind(host: host, port: configuration.dpsHTTPSPort).wait()
                dpsHTTPSChannel = channel
                dpsHTTPSPort = channel.localAddress?.port ?? configuration.dpsHTTPSPort
            } catch {
                mqttChannel.close(promise: nil)
                try? group.syncShutdownGracefully()
                try? threadPool.syncShutdownGracefully()
                throw DevHubError(
                    .unavailable, "cannot listen for DPS HTTPS on \(host):\(configuration.dpsHTTPSPort): \(error)")
            }
        } else {
            dpsHTTPSChannel = nil
            dpsHTTPSPort = nil
        }

        if let host = configuration.amqpHost {
            do {
                let channel = try ServerBootstrap(group: group)
                    .serverChannelOption(.backlog, value: 4096)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                            try channel.pipeline.syncOperations.addHandler(
                                AMQPConnection(services: services, id: hub.nextID()))
                        }
                    }
                    .bind(host: host, port: configuration.amqpPort).wait()
                amqpChannel = channel
                amqpPort = channel.localAddress?.port ?? configuration.amqpPort
            } catch {
                mqttChannel.close(promise: nil)
                dpsHTTPSChannel?.close(promise: nil)
                try? group.syncShutdownGracefully()
                try? threadPool.syncShutdownGracefully()
                throw DevHubError(
                    .unavailable, "cannot listen for AMQP on \(host):\(configuration.amqpPort): \(error)")
            }
        } else {
            amqpChannel = nil
            amqpPort = nil
        }

        var info = JSONValue.object([
            "hubName": .string(hubName), "idScope": .string(configuration.idScope),
            "mqtt": .object(["host": .string(configuration.mqttHost), "port": .int(mqttPort)]),
            "caFile": .string(certificates.caPath),
        ])
        if let host = configuration.dpsHTTPSHost, let port = dpsHTTPSPort {
            info.set("dpsHttps", .object(["host": .string(host), "port": .int(port)]))
        }
        if let host = configuration.amqpHost, let port = amqpPort {
            info.set("amqp", .object(["host": .string(host), "port": .int(port)]))
        }
        let api = ControlAPI(hub: hub, dps: dps, info: info)
        do {
            httpChannel = try ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(
                            ControlHTTPHandler(api: api, logger: logger))
                    }
                }
                .bind(host: configuration.httpHost, port: configuration.httpPort).wait()
        } catch {
            mqttChannel.close(promise: nil)
            dpsHTTPSChannel?.close(promise: nil)
            amqpChannel?.close(promise: nil)
            try? group.syncShutdownGracefully()
            try? threadPool.syncShutdownGracefully()
            throw DevHubError(
                .unavailable,
                "cannot listen for the control API on \(configuration.httpHost):\(configuration.httpPort): \(error)"
            )
        }
        httpPort = httpChannel.localAddress?.port ?? configuration.httpPort

        // What clients and the CLI need to find this instance.
        var endpoints = info
        endpoints.set(
            "control", .string("http://\(Self.hostForURL(configuration.httpHost)):\(httpPort)"))
        endpoints.set("pid", .int(Int(getpid())))
        try (endpoints.prettyDescription + "\n").write(
            toFile: configuration.dataDirectory + "/devhub.json", atomically: true, encoding: .utf8)
        let https = dpsHTTPSPort.map { port in
            ", DPS over HTTPS on https://\(Self.hostForURL(configuration.dpsHTTPSHost ?? "")):\(port)"
        }
        let amqps = amqpPort.map { port in
            ", hub over AMQP on amqps://\(Self.hostForURL(configuration.amqpHost ?? "")):\(port)"
        }
        logger.info(
            "DevHub ready: hub \(hubName) and DPS scope \(configuration.idScope) on mqtts://\(Self.hostForURL(configuration.mqttHost)):\(mqttPort)\(https ?? "")\(amqps ?? ""), control API on http://\(Self.hostForURL(configuration.httpHost)):\(httpPort), CA \(certificates.caPath)"
        )
    }

    static func hostForURL(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    /// Serves until SIGINT or SIGTERM, then shuts down.
    public func runUntilSignalled() {
        let stop = DispatchSemaphore(value: 0)
        let queue = DispatchQueue(label: "devhub.signals")
        var sources: [any DispatchSourceSignal] = []
        for signalNumber in [SIGINT, SIGTERM] {
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: queue)
            source.setEventHandler { stop.signal() }
            source.resume()
            sources.append(source)
        }
        stop.wait()
        logger.info("shutting down")
        shutdown()
        sources.forEach { $0.cancel() }
    }

    /// Stops listening, closes every connection, and writes the telemetry still pending.
    public func shutdown() {
        try? mqttChannel.close().wait()
        try? httpChannel.close().wait()
        try? dpsHTTPSChannel?.close().wait()
        try? amqpChannel?.close().wait()
        telemetry.drain()
        try? group.syncShutdownGracefully()
        try? threadPool.syncShutdownGracefully()
    }
}
