// NBDServer: the listening socket and its connections — swift-nio's ServerBootstrap, each
// connection's bytes framed by NBDMessageDecoder and served by an NBDConnection.
//
// TLS (--tls-creds): each connection gets its own decoder and upgrade state, and NBD_OPT_STARTTLS
// puts swift-nio-ssl's handler in front of the decoder (NBDConnectionTLS).
//
// Connection limit (--shared N): at N connections the server takes no more from the listening
// socket until one ends, so a client beyond N waits for its greeting (as with qemu-nbd, which
// stops accepting); swift-nio accepts a few ahead into its buffer, the rest wait in the
// kernel's backlog.
//
// Lifetime: `run` returns once the server has stopped and every connection has ended; it stops
// on `shutdown()` (SIGTERM, SIGINT), and, unless persistent, when the last client leaves (as
// qemu-nbd without --persistent). Stopping closes the listening socket and the input of every
// connection: requests under way complete and are answered, then the connections close. The
// caller then flushes and closes the images.
import BlockLayer
import Glibc
import Logging
import NBD
import NIOCore
import NIOPosix
import Synchronization

/// An NBD server over open images.
public final class NBDServer: Sendable {
    /// The exports, each name once.
    public let exports: [NBDExport]
    /// Where to listen.
    public let address: NBDListenAddress
    /// The most connections at once.
    public let connectionLimit: Int
    /// Keep serving after the last client leaves.
    public let persistent: Bool
    /// The most requests under way on one connection.
    public let maximumInFlight: Int
    /// The requests and bytes of every connection.
    public let statistics = NBDServerStatistics()
    /// The credentials every client must use TLS with; nil: plain text only.
    public let tls: (any NBDTLSHandlerFactory)?
    private let logger: Logger

    private struct State {
        var listener: Channel?
        var connections: [ObjectIdentifier: Channel] = [:]
        var stopping = false
        /// The accepting loop, waiting for a connection to end.
        var waitingForRoom: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    /// A server of `exports` (their names distinct) at `address`.
    public init(exports: [NBDExport], address: NBDListenAddress, connectionLimit: Int = 1, persistent: Bool = false,
                maximumInFlight: Int = 16, tls: (any NBDTLSHandlerFactory)? = nil, logger: Logger) throws(BlockError) {
        guard Set(exports.map(\.name)).count == exports.count else {
            throw BlockError(.invalidRequest, "two exports have the same name")
        }
        guard connectionLimit >= 1, maximumInFlight >= 1 else {
            throw BlockError(.invalidRequest, "the connection limit and the requests in flight must be at least 1")
        }
        self.exports = exports
        self.address = address
        self.connectionLimit = connectionLimit
        self.persistent = persistent
        self.maximumInFlight = maximumInFlight
        self.tls = tls
        self.logger = logger
    }

    /// Binds, calls `listening` with where (the real port when 0 was asked), serves until
    /// stopped, and returns when every connection has ended. A Unix socket path that exists is
    /// refused (`conflict`) and never replaced; the socket made is removed on return.
    public func run(listening: @Sendable (String) -> Void) async throws(BlockError) {
        let credentials = tls
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
        let initializer: @Sendable (Channel) -> EventLoopFuture<AcceptedConnection> = { channel in
            channel.eventLoop.makeCompletedFuture {
                let connectionTLS = credentials.map { NBDConnectionTLS(credentials: $0, upgrade: NBDTLSUpgrade()) }
                let decoder = NBDMessageDecoder(maximumOptionLength: 64 << 10, maximumPayload: Int(NBDExport.payloadLimit),
                                                tlsUpgrade: connectionTLS?.upgrade)
                let transmission = NBDTransmission(maximumInFlight: self.maximumInFlight, statistics: self.statistics,
                                                   logger: self.logger, eventLoop: channel.eventLoop)
                try channel.pipeline.syncOperations.addHandlers(ByteToMessageHandler(decoder, maximumBufferSize: decoder.maximumFrameSize),
                                                                transmission)
                return AcceptedConnection(channel: try NIOAsyncChannel(wrappingChannelSynchronously: channel), tls: connectionTLS,
                                          transmission: NIOLoopBound(transmission, eventLoop: channel.eventLoop),
                                          finished: transmission.finished)
            }
        }
        var socketFile: OwnedSocketPath?
        let listener: NIOAsyncChannel<AcceptedConnection, Never>
        do {
            switch address {
            case .unix(let path):
                try OwnedSocketPath.checkFree(path)
                listener = try await OwnedSocketPath.bindingOwnerOnly {
                    try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false, childChannelInitializer: initializer)
                }
                socketFile = try OwnedSocketPath(boundAt: path)
            case .tcp(let host, let port):
                listener = try await bootstrap.bind(host: host, port: port, childChannelInitializer: initializer)
            }
        } catch let error as BlockError {
            throw error
        } catch let error as IOError where error.errnoCode == EADDRINUSE {
            throw BlockError(.conflict, "Could not listen on \(address): the address is in use")
        } catch {
            throw BlockError(.ioError, "Could not listen on \(address): \(error)")
        }
        defer { socketFile?.removeIfOurs() }
        let stoppedEarly = state.withLock { state in
            state.listener = listener.channel
            return state.stopping
        }
        if stoppedEarly { listener.channel.close(promise: nil) }
        listening(listenedAddress(listener.channel))

        do {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { connections in
                    var accepted = connections.makeAsyncIterator()
                    while true {
                        await roomForAConnection()
                        guard let next = try await accepted.next() else { break }
                        let connection = next.channel
                        guard admit(connection.channel) else {
                            connection.channel.close(promise: nil)
                            continue
                        }
                        group.addTask { [self] in
                            await NBDConnection(exports: exports, tls: next.tls, transmission: next.transmission,
                                                transmissionFinished: next.finished, logger: logger).run(connection)
                            leave(connection.channel)
                        }
                    }
                }
            }
        } catch {
            throw BlockError(.ioError, "The server on \(address) failed: \(error)")
        }
    }

    /// The connections being served now.
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Stops accepting, ends every connection's input and lets the requests under way finish;
    /// `run` then returns. Safe from any thread, and more than once.
    public func shutdown() {
        let (listener, connections, waiting) = state.withLock { state in
            state.stopping = true
            defer { state.waitingForRoom = nil }
            return (state.listener, Array(state.connections.values), state.waitingForRoom)
        }
        waiting?.resume()
        listener?.close(promise: nil)
        for connection in connections { Self.closeInput(of: connection) }
    }

    /// Closes `connection`'s input; beneath TLS where it has it, as swift-nio-ssl's handler
    /// refuses a half-closure itself: the socket's end of input then reaches it as the client's.
    private static func closeInput(of connection: Channel) {
        connection.pipeline.context(name: NBDConnectionTLS.handlerName).whenComplete { found in
            switch found {
            case .success(let tlsHandler): tlsHandler.close(mode: .input, promise: nil)
            case .failure: connection.close(mode: .input, promise: nil)
            }
        }
    }

    /// Returns once fewer than `connectionLimit` connections are served, or the server stops.
    private func roomForAConnection() async {
        await withCheckedContinuation { continuation in
            let room = state.withLock { state in
                guard !state.stopping, state.connections.count >= connectionLimit else { return true }
                state.waitingForRoom = continuation
                return false
            }
            if room { continuation.resume() }
        }
    }

    /// Counts `channel` in, unless the server is stopping.
    private func admit(_ channel: Channel) -> Bool {
        state.withLock { state in
            guard !state.stopping else { return false }
            state.connections[ObjectIdentifier(channel)] = channel
            return true
        }
    }

    private func leave(_ channel: Channel) {
        let (last, waiting) = state.withLock { state in
            state.connections[ObjectIdentifier(channel)] = nil
            defer { state.waitingForRoom = nil }
            return (state.connections.isEmpty, state.waitingForRoom)
        }
        waiting?.resume()
        if last && !persistent {
            logger.info("the last client left: stopping (no --persistent)")
            shutdown()
        }
    }

    private func listenedAddress(_ channel: Channel) -> String {
        guard case .tcp(let host, _) = address, let port = channel.localAddress?.port else { return address.description }
        return NBDListenAddress.tcp(host: host, port: port).description
    }
}

/// A connection as accepted: its channel, and its TLS when the server requires it.
struct AcceptedConnection: Sendable {
    let channel: NIOAsyncChannel<NBDClientMessage, ByteBuffer>
    let tls: NBDConnectionTLS?
    /// The handler that serves its requests once negotiated, and when it is done.
    let transmission: NIOLoopBound<NBDTransmission>
    let finished: EventLoopFuture<Void>
}
