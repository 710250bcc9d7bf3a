// NBDConnectionTLS: one connection's TLS — the server's context, the connection's upgrade state
// (shared with its decoder), and the step that answers NBD_OPT_STARTTLS. That step runs as one
// task on the channel's event loop: the ACK is written and flushed in plain text, the TLS handler
// goes in front of the decoder, and the upgrade is marked done, with no read in between; so the
// client's first TLS record, which it may send only after the ACK, meets the TLS handler, and any
// byte that came before the ACK has already ended the connection (NBDTLSUpgrade).
import NBD
import NIOCore

/// What a connection needs to start TLS.
struct NBDConnectionTLS: Sendable {
    /// The TLS handler's name in the pipeline, where shutdown finds it.
    static let handlerName = "nbd-tls"

    /// The server's credentials.
    let credentials: any NBDTLSHandlerFactory
    /// The connection's way to TLS, which its decoder shares.
    let upgrade: NBDTLSUpgrade

    /// Sends `replies` (ending in the ACK to NBD_OPT_STARTTLS) and starts TLS on `channel`. Throws
    /// when the client sent bytes before the ACK: the connection ends, the ACK unsent.
    func start(on channel: Channel, sending replies: ByteBuffer) async throws {
        try await channel.eventLoop.submit { [credentials, upgrade] in
            guard upgrade.phase == .awaitingReply else {
                throw NBDFramingError("the client sent bytes after NBD_OPT_STARTTLS, before its reply")
            }
            channel.writeAndFlush(replies, promise: nil)
            try channel.pipeline.syncOperations.addHandler(credentials.makeServerHandler(), name: Self.handlerName, position: .first)
            _ = upgrade.encrypt()
        }.get()
    }
}
