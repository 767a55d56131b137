import FoundationEssentials
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One HTTP/1.1 request over TLS on its own connection (`Connection: close`), with swift-nio:
/// the server verified against `caFile` (or the system's CAs) and its host name or IP address.
/// DPS's HTTPS exchanges are a handful of requests, so no connection is kept.
public struct HTTPSRequest: Sendable {
    public var method: HTTPMethod
    public var host: String
    public var port: Int
    /// Path and query, e.g. `/0ne00000001/registrations/gw-1/register?api-version=2021-06-01`.
    public var target: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: HTTPMethod, host: String, port: Int, target: String, headers: [(String, String)], body: [UInt8])
    {
        self.method = method
        self.host = host
        self.port = port
        self.target = target
        self.headers = headers
        self.body = body
    }
}

public struct HTTPSResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    /// At most `HTTPSResponse.maxBodyBytes`; what came beyond is not kept (`truncated`).
    public var body: [UInt8]
    /// The server sent more than `maxBodyBytes`.
    public var truncated = false

    public static let maxBodyBytes = 1 << 20
}

/// Why a request got no response: the network, TLS or a timeout. The message names the
/// endpoint, never a header (an `Authorization` header holds a SAS token).
public struct HTTPSRequestError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension HTTPSRequest {
    /// Sends the request and collects the whole response.
    public func send(
        caFile: String?, timeout: Duration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws(HTTPSRequestError)
        -> HTTPSResponse
    {
        let endpoint = "https://\(host.contains(":") ? "[\(host)]" : host):\(port)"
        let sslContext: NIOSSLContext
        do {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            if let caFile { tls.trustRoots = .file(caFile) }
            sslContext = try NIOSSLContext(configuration: tls)
        } catch {
            throw HTTPSRequestError(message: "TLS setup for \(endpoint) (CA file \(caFile ?? "system")): \(error)")
        }
        // SNI takes a name, not an address; NIOSSL then checks the certificate against the
        // peer's IP address.
        let isAddress = host.contains(":") || host.split(separator: ".").allSatisfy { UInt8($0) != nil }
        let serverName = isAddress ? nil : host
        let nanoseconds =
            Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        let promise = group.next().makePromise(of: HTTPSResponse.self)
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.nanoseconds(nanoseconds))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: sslContext, serverHostname: serverName))
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                    }
                }
                .connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw HTTPSRequestError(message: "cannot connect to \(endpoint): \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: target)
        let hostName = host.contains(":") ? "[\(host)]" : host
        head.headers.add(name: "Host", value: port == 443 ? hostName : "\(hostName):\(port)")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "Content-Length", value: String(body.count))
        head.headers.add(name: "Connection", value: "close")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if !body.isEmpty {
            channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil)
        }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = channel.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
            promise.fail(HTTPSRequestError(message: "no response from \(endpoint) within \(timeout)"))
        }
        defer {
            timer.cancel()
            channel.close(promise: nil)
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as HTTPSRequestError {
            throw error
        } catch {
            throw HTTPSRequestError(message: "\(method) to \(endpoint) failed: \(error)")
        }
    }
}

/// Collects one response into a promise; a connection that ends first fails it.
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<HTTPSResponse>
    private var head: HTTPResponseHead?
    private var body: [UInt8] = []
    private var truncated = false
    private var done = false

    init(promise: EventLoopPromise<HTTPSResponse>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body(let buffer):
            if body.count + buffer.readableBytes <= HTTPSResponse.maxBodyBytes {
                body.append(contentsOf: buffer.readableBytesView)
            } else {
                truncated = true
            }
        case .end:
            guard !done, let head else { return }
            done = true
            promise.succeed(
                HTTPSResponse(status: Int(head.status.code), headers: head.headers, body: body, truncated: truncated))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done {
            done = true
            promise.fail(error)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(HTTPSRequestError(message: "the server closed the connection before answering"))
        }
        context.fireChannelInactive()
    }
}
