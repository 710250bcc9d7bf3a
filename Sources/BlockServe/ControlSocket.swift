// ControlSocket: `--control PATH`, the server's control socket (ControlProtocol.swift): a Unix
// socket made as the NBD socket is (OwnedSocketPath: never over a file already there, mode
// 0600, removed on exit only if still ours), served on swift-nio. Any number of clients, each
// answered line by line in order; a bad line gets an error answer and the next line is read.
//
// Bound before the server starts (blk serve's "listening" line means both sockets are ready),
// it runs as a service of blk serve's ServiceGroup: graceful shutdown closes the listening
// socket and the input of every control connection. `quit` stops the NBD server the way
// SIGTERM does; the group then shuts this socket down too.
//
// inactivate and activate run on the block layer's threads (they flush and lock), one at a
// time, and apply to every export in order; a failure stops there and is answered.
import BlockLayer
import BlockLocking
import FoundationEssentials
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The control socket of an NBD server.
public final class ControlSocket: Service, Sendable {
    /// The longest request line taken.
    static let maximumLineLength = 4096

    private let server: NBDServer
    private let listener: NIOAsyncChannel<NIOAsyncChannel<ControlLine, ByteBuffer>, Never>
    private let socketFile: OwnedSocketPath
    private let logger: Logger
    private let connections = Mutex<[ObjectIdentifier: Channel]?>([:])
    /// Held by a hand-over step (inactivate, activate) from start to end.
    private let handOver = Mutex(())

    /// Binds the control socket at `path` for `server`: refused (`conflict`) where anything is.
    public static func bind(path: String, server: NBDServer, logger: Logger) async throws(BlockError) -> ControlSocket {
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).serverChannelOption(.backlog, value: 16)
        try OwnedSocketPath.checkFree(path)
        do {
            let listener = try await OwnedSocketPath.bindingOwnerOnly {
                try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let decoder = ControlLineDecoder(maximumLength: maximumLineLength)
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(decoder))
                        return try NIOAsyncChannel<ControlLine, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            }
            return ControlSocket(server: server, listener: listener, socketFile: try OwnedSocketPath(boundAt: path), logger: logger)
        } catch let error as BlockError {
            throw error
        } catch {
            throw BlockError(.ioError, "Could not listen on the control socket '\(path)': \(error)")
        }
    }

    private init(server: NBDServer, listener: NIOAsyncChannel<NIOAsyncChannel<ControlLine, ByteBuffer>, Never>,
                 socketFile: OwnedSocketPath, logger: Logger) {
        self.server = server
        self.listener = listener
        self.socketFile = socketFile
        self.logger = logger
    }

    /// Serves control clients until graceful shutdown; removes the socket on return.
    public func run() async throws {
        defer { socketFile.removeIfOurs() }
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { clients in
                    for try await client in clients {
                        guard enter(client.channel) else {
                            client.channel.close(promise: nil)
                            continue
                        }
                        group.addTask { [self] in
                            await serve(client)
                            leave(client.channel)
                        }
                    }
                }
            }
        } onGracefulShutdown: { [self] in
            let open = connections.withLock { connections in
                defer { connections = nil }
                return connections.map { Array($0.values) } ?? []
            }
            listener.channel.close(promise: nil)
            for channel in open { channel.close(mode: .input, promise: nil) }
        }
    }

    /// Counts a client in, unless the socket is shutting down.
    private func enter(_ channel: Channel) -> Bool {
        connections.withLock { connections in
            guard connections != nil else { return false }
            connections![ObjectIdentifier(channel)] = channel
            return true
        }
    }

    private func leave(_ channel: Channel) {
        _ = connections.withLock { $0?.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    /// Answers `client`'s lines until it closes.
    private func serve(_ client: NIOAsyncChannel<ControlLine, ByteBuffer>) async {
        do {
            try await client.executeThenClose { lines, answers in
                for try await line in lines {
                    let (answer, command) = await self.answer(line)
                    try await answers.write(ByteBuffer(bytes: answer.line))
                    if command == .quit { server.shutdown() }
                }
            }
        } catch {
            logger.info("control connection ended", metadata: ["reason": "\(error)"])
        }
    }

    /// The answer to one line, and the command it ran, if any.
    private func answer(_ line: ControlLine) async -> (ControlAnswer, ControlCommand?) {
        guard case .request(let bytes) = line else {
            return (.error("the request is longer than \(Self.maximumLineLength) bytes"), nil)
        }
        let request: ControlRequest
        do {
            request = try JSONDecoder().decode(ControlRequest.self, from: Data(bytes.readableBytesView))
        } catch DecodingError.dataCorrupted {
            return (.error("the request is not JSON"), nil)
        } catch {
            return (.error(#"a request is a JSON object {"execute": COMMAND}"#), nil)
        }
        guard let command = ControlCommand(rawValue: request.execute) else {
            let known = ControlCommand.allCases.map(\.rawValue).joined(separator: ", ")
            return (.failure(class: "CommandNotFound", desc: "The command \(request.execute) has not been found (commands: \(known))"), nil)
        }
        logger.info("control command", metadata: ["command": "\(command)"])
        switch command {
        case .status:
            return (.value(status()), command)
        case .quit:
            return (.value(ControlEmpty()), command)
        case .inactivate, .activate:
            do throws(BlockError) {
                try await BlockingThreadPool.shared.run { [self] () throws(BlockError) in
                    try handOver.withLock { _ throws(BlockError) in
                        for export in server.exports {
                            if command == .activate { try export.activate() } else { try export.inactivate() }
                        }
                    }
                }
                return (.value(ControlEmpty()), command)
            } catch {
                logger.warning("\(command) failed", metadata: ["reason": "\(error.message)"])
                return (.error(error.message), command)
            }
        }
    }

    private func status() -> ServerStatus {
        let statistics = server.statistics
        return ServerStatus(
            exports: server.exports.map { export in
                let image = export.image
                return ExportStatus(name: export.name, image: image.path, format: image.format, size: try? export.size(),
                                    readOnly: export.isReadOnly, active: image.isActive, leaseLost: export.leaseLoss)
            },
            connections: server.connectionCount, requestsInFlight: statistics.requestsInFlight,
            requestsServed: statistics.requestsServed, bytesRead: statistics.bytesRead, bytesWritten: statistics.bytesWritten,
            bytesSentFromFile: statistics.bytesSentFromFile)
    }
}
