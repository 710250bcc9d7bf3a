// NBDService: the NBD server as a service of swift-service-lifecycle's ServiceGroup, which
// turns SIGTERM and SIGINT into a graceful shutdown: the server's `shutdown()` (stop accepting,
// end every connection's input, answer the requests under way). The control socket's `quit`
// calls `shutdown()` itself; the server's run then returns, and the group stops the rest.
import ServiceLifecycle

/// Runs `server` until it stops or the group shuts down gracefully.
public struct NBDService: Service {
    /// The server run.
    public let server: NBDServer
    /// Told where the server listens, once clients may connect.
    public let listening: @Sendable (String) -> Void

    /// A service running `server`.
    public init(server: NBDServer, listening: @escaping @Sendable (String) -> Void) {
        self.server = server
        self.listening = listening
    }

    /// Serves until the server stops: on its own, or told by a graceful shutdown.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.run(listening: listening)
        } onGracefulShutdown: { [server] in
            server.shutdown()
        }
    }
}
