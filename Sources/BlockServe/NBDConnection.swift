// NBDConnection: one client from greeting to close. Negotiation runs option by option on the
// connection's task; transmission runs on the event loop (NBDTransmission), which hands each
// request's block I/O to the block layer's thread pool (never the event loop, never the
// concurrency pool) and sends each reply as soon as it is ready (ReplyWriter), so replies may
// come out of order, as NBD allows; read data the image file stores as it reads goes out with
// sendfile from the connection's own descriptors of the file (ZeroCopyFiles). The task only
// waits for transmission to end: no task runs per request, nor per batch of requests.
//
// Backpressure: at most `maximumInFlight` requests are under way, a request counting until its
// reply has reached the socket; at the limit NBDTransmission stops reading from the socket
// until one completes.
//
// TLS: when the server has credentials, NBD_OPT_STARTTLS's ACK puts TLS in front of the decoder
// (NBDConnectionTLS) and negotiation goes on through it.
//
// Ending: NBD_CMD_DISC, the client's EOF, a framing error or the server's shutdown (which
// closes the channel's input) stop the reading; the requests under way still complete and are
// answered where the client is still there: a client that vanished leaves the image as every
// completed write made it, and no request torn.
import Logging
import NBD
import NIOCore

/// One client connection.
struct NBDConnection {
    let exports: [NBDExport]
    /// The connection's TLS, when the server requires it.
    let tls: NBDConnectionTLS?
    /// Serves the requests once negotiation has started transmission.
    let transmission: NIOLoopBound<NBDTransmission>
    let transmissionFinished: EventLoopFuture<Void>
    let logger: Logger

    /// Serves `channel` until it ends.
    func run(_ channel: NIOAsyncChannel<NBDClientMessage, ByteBuffer>) async {
        let allocator = channel.channel.allocator
        do {
            try await channel.executeThenClose { inbound, outbound in
                var messages = inbound.makeAsyncIterator()
                try await outbound.write(NBDHandshake.greeting(allocator: allocator))
                guard let session = try await negotiate(&messages, outbound, channel.channel) else { return }
                logger.info("transmission", metadata: ["export": "\(session.export.name)", "structured": "\(session.structuredReplies)"])
                // Returns once the input has ended and every request taken has been answered.
                try await transmissionFinished.get()
            }
        } catch {
            logger.info("connection ended", metadata: ["reason": "\(error)"])
        }
    }

    /// Option haggling until transmission (the session) or the end of the connection (nil).
    private func negotiate(_ messages: inout NIOAsyncChannelInboundStream<NBDClientMessage>.AsyncIterator,
                           _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                           _ channel: Channel) async throws -> NBDSession? {
        var negotiation = NBDNegotiation(exports: exports, allocator: channel.allocator, tlsRequired: tls != nil)
        // The decoder yields the client flags first and once, so every option comes after them.
        while let message = try await messages.next() {
            let outcome: NBDNegotiation.Outcome
            switch message {
            case .clientFlags(let flags):
                outcome = negotiation.receive(flags)
            case .option(let option):
                logger.debug("option", metadata: ["option": "\(option.option)", "length": "\(option.data.readableBytes)"])
                let step = negotiation.receive(option)
                if NBDTransmission.mayStartTransmission(option.option) {
                    // Before the reply: what the client sends after it goes to the handler.
                    let transmission = self.transmission, zeroCopy = tls == nil
                    if case .transmission(let session) = step.outcome {
                        // TLS must see every byte: its connections copy read data into their replies.
                        channel.eventLoop.execute { transmission.value.startTransmission(session, zeroCopy: zeroCopy) }
                    } else {
                        channel.eventLoop.execute { transmission.value.resumeNegotiation() }
                    }
                }
                if case .startTLS = step.outcome, let tls {
                    try await tls.start(on: channel, sending: step.replies)
                    logger.debug("TLS started")
                } else {
                    try await outbound.write(step.replies)
                }
                outcome = step.outcome
            case .request:
                outcome = .close("a transmission request during negotiation")
            }
            switch outcome {
            case .negotiating, .startTLS: continue
            case .transmission(let session): return session
            case .close(let reason):
                logger.info("negotiation ended", metadata: ["reason": "\(reason)"])
                return nil
            }
        }
        return nil
    }
}
