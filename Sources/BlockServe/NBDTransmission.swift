// NBDTransmission: a connection's transmission phase, on its event loop. Negotiation is the
// connection's task's (NBDConnection); from NBD_OPT_GO or NBD_OPT_EXPORT_NAME on, the requests
// the decoder frames stop here instead of going on to the task's inbound stream: each is handed
// from the event loop straight to the block layer's thread pool (BlockingThreadPool: block I/O
// never on the loop), and its reply comes back to the loop (ReplyWriter). Two thread hops a
// request, as qemu-nbd's main loop and thread pool make.
//
// Problem: through NIOAsyncChannel's inbound stream a request made three. Every batch the socket
// delivered woke a concurrency thread to run the task, which then woke the pool's workers; on a
// 2-core machine that wake is a context switch, where a 4 KiB read is a few microseconds of work
// (docs/serve.md, Figures).
//
// The switch: after an option that may start transmission passes through to the task, whatever
// the client sends next is held here (and no more is read) until the task has decided:
// `startTransmission` serves it, `resumeNegotiation` passes it on. So a request a client sends
// right behind NBD_OPT_GO cannot slip into the stream the task no longer reads.
//
// Backpressure: at most `maximumInFlight` requests are under way, a request counting until its
// reply has reached the socket (or failed to). Beyond it requests wait here in order — at most
// what the socket's last read brought, since the handler lets no read() through while any wait —
// and the socket is read again once they have all started.
//
// Ending: NBD_CMD_DISC or an option stops the taking of requests (what follows them is dropped);
// the end of input, a framing error or the channel's close stops the reading, and what was read
// before still runs. `finished` succeeds once nothing is under way, or waits: replies already
// made are answered where the client is still there, and the connection's descriptors for
// sendfile are closed only after the last of them (ZeroCopyFiles).
//
// State: every property belongs to the event loop; workers reach the handler only through
// NIOLoopBound, from the loop (the replies' `written`).
import BlockLocking
import Logging
import NBD
import NIOCore

final class NBDTransmission: ChannelDuplexHandler {
    typealias InboundIn = NBDClientMessage
    typealias InboundOut = NBDClientMessage
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// What the requests are served under, once transmission has started.
    private struct Serving {
        let session: NBDSession
        let files: ZeroCopyFiles?
        let replies: ReplyWriter
        let allocator: ByteBufferAllocator
    }

    private let maximumInFlight: Int
    private let statistics: NBDServerStatistics
    private let logger: Logger
    private let eventLoop: EventLoop
    private let finishedPromise: EventLoopPromise<Void>
    /// Succeeds once transmission has ended and nothing is under way.
    let finished: EventLoopFuture<Void>

    private var context: ChannelHandlerContext?
    private var serving: Serving?
    /// An option that may start transmission has passed on; the task has not yet decided.
    private var deciding = false
    /// Messages held while deciding, or requests beyond the limit; oldest first.
    private var waiting = CircularBuffer<NBDClientMessage>()
    private var underWay = 0
    /// A read() from the channel held back: requests wait, or the task is deciding.
    private var readHeld = false
    /// No more messages are taken: the input ended, or the client said it was done.
    private var inputEnded = false
    private var done = false

    init(maximumInFlight: Int, statistics: NBDServerStatistics, logger: Logger, eventLoop: EventLoop) {
        self.maximumInFlight = maximumInFlight
        self.statistics = statistics
        self.logger = logger
        self.eventLoop = eventLoop
        finishedPromise = eventLoop.makePromise()
        finished = finishedPromise.futureResult
    }

    /// Whether the task decides, after `option`, between transmission and more negotiation.
    static func mayStartTransmission(_ option: NBDOption) -> Bool { option == .go || option == .exportName }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// The task's verdict on the last such option: transmission under `session`. `zeroCopy`:
    /// read data may go out with sendfile (not through TLS).
    func startTransmission(_ session: NBDSession, zeroCopy: Bool) {
        guard let context else { return finishIfIdle() }
        // Weak: the handler keeps the writer. The connection keeps the handler until `finished`,
        // which waits for every reply's callback.
        let handler = NIOLoopBound(WeakReference(self), eventLoop: eventLoop)
        let replies = ReplyWriter(context.channel, logger: logger) { count in handler.value.object?.completed(count) }
        serving = Serving(session: session, files: zeroCopy ? ZeroCopyFiles() : nil, replies: replies,
                          allocator: context.channel.allocator)
        deciding = false
        takeWaiting()
    }

    /// The task's verdict on the last such option: negotiation goes on with what was held.
    func resumeNegotiation() {
        deciding = false
        guard let context else { return finishIfIdle() }
        while !deciding, let message = waiting.popFirst() { pass(message, context) }
        context.fireChannelReadComplete()
        releaseRead()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let message = unwrapInboundIn(data)
        guard serving != nil || deciding else { return pass(message, context) }
        guard !inputEnded else { return }
        waiting.append(message)
        takeWaiting()
    }

    func read(context: ChannelHandlerContext) {
        if deciding || (serving != nil && (underWay == maximumInFlight || !waiting.isEmpty)) {
            readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { endInput("the input ended") }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // While deciding too: the task may start transmission, and then only this ends it.
        if serving != nil || deciding { endInput("\(error)") }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Negotiation ended with the connection (the task closed it, or the client left).
        if serving == nil {
            deciding = false
            waiting.removeAll()
        }
        endInput("the connection closed")
        context.fireChannelInactive()
    }

    /// A message of negotiation, on to the task.
    private func pass(_ message: NBDClientMessage, _ context: ChannelHandlerContext) {
        if case .option(let option) = message, Self.mayStartTransmission(option.option) { deciding = true }
        context.fireChannelRead(wrapInboundOut(message))
    }

    /// Starts the waiting requests the limit lets start, then reads on or ends.
    private func takeWaiting() {
        guard let serving else { return }
        while underWay < maximumInFlight, let message = waiting.popFirst() {
            guard case .request(let request) = message, request.command != .disconnect else {
                if case .request = message {
                    endInput("the client disconnected")
                } else {
                    endInput("a message of negotiation during transmission")
                }
                waiting.removeAll()
                break
            }
            start(request, serving)
        }
        if waiting.isEmpty && underWay < maximumInFlight { releaseRead() }
        finishIfIdle()
    }

    private func start(_ request: NBDRequest, _ serving: Serving) {
        underWay += 1
        statistics.started()
        let session = serving.session, files = serving.files, replies = serving.replies, allocator = serving.allocator
        BlockingThreadPool.shared.execute { [statistics, logger] in
            let export = session.export
            let reply = export.reply(to: request, in: session, files: files, allocator: allocator)
            statistics.answered(request, with: reply)
            if reply.reportsError { export.logLeaseLossIfAny(logger) }
            // A client gone leaves nobody to answer; the request itself has completed.
            replies.send(reply)
        }
    }

    /// `count` replies have reached the socket, or failed to.
    private func completed(_ count: Int) {
        underWay -= count
        takeWaiting()
    }

    private func releaseRead() {
        guard readHeld, let context else { return }
        readHeld = false
        context.read()
    }

    private func endInput(_ reason: String) {
        guard !inputEnded else { return }
        inputEnded = true
        if serving != nil { logger.info("transmission ended", metadata: ["reason": "\(reason)"]) }
        finishIfIdle()
    }

    private func finishIfIdle() {
        guard inputEnded || context == nil, !deciding, waiting.isEmpty, underWay == 0, !done else { return }
        done = true
        serving?.files?.close()
        finishedPromise.succeed()
    }
}

/// A reference that does not keep its object.
private final class WeakReference<Object: AnyObject> {
    weak var object: Object?

    init(_ object: Object) { self.object = object }
}
