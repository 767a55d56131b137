import Dispatch
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// `GET /metrics` over HTTP/1.1 on `[metrics] listen` (docs/operations.md): the Prometheus text
/// exposition of `GatewayMetrics`. Anything else is 404 (405 for another method on /metrics).
///
/// A scrape reads SQLite (the outbox's lanes), so it runs on a queue of its own, never on the
/// event loop; scrapes are serialised there, so a slow scraper cannot pile up work.
///
/// If the address cannot be bound the error is logged and the gateway runs on without metrics:
/// relaying telemetry matters more than reporting on it, and the scraper sees the target down
/// (`up == 0`). Restarting would not free the port.
public final class MetricsEndpoint: Service, Sendable {
    let metrics: GatewayMetrics
    let settings: GatewayConfig.Metrics
    let logger: Logger
    private let queue = DispatchQueue(label: "gatehouse.metrics")

    public init(metrics: GatewayMetrics, settings: GatewayConfig.Metrics, logger: Logger) {
        self.metrics = metrics
        self.settings = settings
        self.logger = logger
    }

    /// Binds, serves until graceful shutdown, then closes the listening socket.
    public func run() async throws {
        let channel: any Channel
        do {
            channel = try await bind()
        } catch {
            logger.error(
                "cannot serve metrics; running without them",
                metadata: ["listen": "\(settings.host):\(settings.port)", "error": "\(error)"])
            try? await gracefulShutdown()
            return
        }
        logger.info(
            "serving metrics",
            metadata: ["url": "http://\(Self.hostForURL(settings.host)):\(channel.localAddress?.port ?? 0)/metrics"])
        try? await gracefulShutdown()
        try? await channel.close()
    }

    /// The bound channel (tests bind port 0 and read the port back).
    func bind() async throws -> any Channel {
        let metrics = metrics
        let queue = queue
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 16)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(Handler(metrics: metrics, queue: queue))
                }
            }
            .bind(host: settings.host, port: settings.port).get()
    }

    static func hostForURL(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let metrics: GatewayMetrics
        let queue: DispatchQueue
        private var head: HTTPRequestHead?

        init(metrics: GatewayMetrics, queue: DispatchQueue) {
            self.metrics = metrics
            self.queue = queue
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body: break
            case .end:
                guard let head else { return }
                self.head = nil
                respond(to: head, context: context)
            }
        }

        private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            guard path == "/metrics" else {
                write(status: .notFound, body: Array("not found: metrics are at /metrics\n".utf8), head, context)
                return
            }
            guard head.method == .GET || head.method == .HEAD else {
                write(status: .methodNotAllowed, body: Array("GET /metrics\n".utf8), head, context)
                return
            }
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            let metrics = metrics
            queue.async {
                let body = metrics.scrape()
                loop.execute {
                    let (handler, context) = bound.value
                    handler.write(
                        status: .ok, body: head.method == .HEAD ? [] : body, head, context,
                        contentType: "text/plain; version=0.0.4; charset=utf-8")
                }
            }
        }

        private func write(
            status: HTTPResponseStatus, body: [UInt8], _ request: HTTPRequestHead, _ context: ChannelHandlerContext,
            contentType: String = "text/plain; charset=utf-8"
        ) {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: contentType)
            headers.add(name: "Content-Length", value: "\(body.count)")
            let keepAlive = request.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
                promise: nil)
            if !body.isEmpty {
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let channel = context.channel
                done.whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
