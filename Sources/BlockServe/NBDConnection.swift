// NBDConnection: one client from greeting to close. Negotiation runs option by option on the
// connection's task; in transmission each request's block I/O goes to the block layer's thread
// pool (BlockingThreadPool: never the event loop, never the concurrency pool), and the worker
// hands its reply to the channel as soon as it is ready (ReplyWriter), so replies may come out
// of order, as NBD allows; read data the image file stores as it reads goes out with sendfile
// from the connection's own descriptors of the file (ZeroCopyFiles). No task waits for a
// request: a task per request cost two thread hops (suspend, resume) on a path whose every hop
// is a futex wake on a 2-core machine.
//
// Backpressure: at most `maximumInFlight` requests are under way (InFlightLimit), a request
// counting until its reply has reached the socket; at the limit the connection stops taking
// requests from the channel, whose inbound buffer then fills and stops reading from the socket
// (NIOAsyncChannel's watermarks), until one completes.
//
// TLS: when the server has credentials, NBD_OPT_STARTTLS's ACK puts TLS in front of the decoder
// (NBDConnectionTLS) and negotiation goes on through it.
//
// Ending: NBD_CMD_DISC, the client's EOF, a framing error or the server's shutdown (which
// closes the channel's input) stop the reading; the requests under way still complete and are
// answered where the client is still there: a client that vanished leaves the image as every
// completed write made it, and no request torn.
import BlockLocking
import Logging
import NBD
import NIOCore

/// One client connection.
struct NBDConnection {
    let exports: [NBDExport]
    let maximumInFlight: Int
    let statistics: NBDServerStatistics
    /// The connection's TLS, when the server requires it.
    let tls: NBDConnectionTLS?
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
                await transmit(session, &messages, channel.channel)
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

    /// Requests until the client disconnects or the input ends, then the rest of those under way.
    private func transmit(_ session: NBDSession,
                          _ messages: inout NIOAsyncChannelInboundStream<NBDClientMessage>.AsyncIterator,
                          _ channel: Channel) async {
        let inFlight = InFlightLimit(maximumInFlight)
        let replies = ReplyWriter(channel)
        let export = session.export, allocator = channel.allocator
        // TLS must see every byte: its connections copy read data into their replies.
        let files = tls == nil ? ZeroCopyFiles() : nil
        do {
            while let message = try await messages.next() {
                guard case .request(let request) = message else {
                    logger.info("connection ended", metadata: ["reason": "an option during transmission"])
                    break
                }
                if request.command == .disconnect { break }
                await inFlight.acquire()
                statistics.started()
                BlockingThreadPool.shared.execute { [statistics, logger] in
                    let reply = export.reply(to: request, in: session, files: files, allocator: allocator)
                    statistics.answered(request, with: reply)
                    if reply.reportsError { export.logLeaseLossIfAny(logger) }
                    // A client gone leaves nobody to answer; the request itself has completed.
                    replies.send(reply, written: inFlight.release)
                }
            }
        } catch {
            logger.info("connection ended", metadata: ["reason": "\(error)"])
        }
        await inFlight.drain()
        files?.close()
    }
}
