import FoundationEssentials
import GatehouseBasics
import NIOCore
import NIOHTTP1
import NIOPosix
import StrictJSON

/// A minimal blocking HTTP/1.1 client for the control API, used by the CLI subcommands.
public struct ControlClient: Sendable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `http://host:port` (a trailing path is ignored).
    public init?(url: String) {
        var rest = Substring(url)
        if rest.hasPrefix("http://") { rest = rest.dropFirst(7) }
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...])
        else {
            return nil
        }
        host = String(rest[..<colon]).trimming(["[", "]"])
        self.port = port
    }

    public enum Method: String, Sendable {
        case get = "GET"
        case post = "POST"
        case patch = "PATCH"
        case delete = "DELETE"
    }

    public struct Response: Sendable {
        public var status: Int
        public var body: JSONValue
    }

    /// Sends one request and waits for the whole response.
    public func request(
        _ method: Method, _ path: String, body: JSONValue? = nil, timeout: TimeAmount = .seconds(330)
    )
        throws -> Response
    {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let promise = group.next().makePromise(of: Response.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(5))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        let channel = try bootstrap.connect(host: host, port: port).wait()
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Connection", value: "close")
        let bytes = body.map { Array($0.description.utf8) } ?? []
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        headers.add(name: "Content-Length", value: String(bytes.count))
        let head = HTTPRequestHead(
            version: .http1_1, method: HTTPMethod(rawValue: method.rawValue), uri: path, headers: headers)
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !bytes.isEmpty {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: bytes))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(
                DevHubError(
                    .timeout, "no answer from the control API within \(timeout.nanoseconds / 1_000_000_000) s"
                ))
        }
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        return try promise.futureResult.wait()
    }
}

private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<ControlClient.Response>
    private var status = 0
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<ControlClient.Response>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let buffer): body.append(contentsOf: buffer.readableBytesView)
        case .end:
            let json = (try? JSONValue(parsing: body)) ?? .string(String(decoding: body, as: UTF8.self))
            promise.succeed(ControlClient.Response(status: status, body: json))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(DevHubError(.unavailable, "the control API closed the connection"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
