// ReplyWriter: a connection's replies, sent from the block layer's threads as each request
// completes. The replies that complete while the event loop is busy go out together, with one
// flush (one writev) for all of them; and each reports when it has reached the socket (with the
// batch's last write), which is when its request stops counting against the in-flight limit — so
// a client that stops reading holds at most the limit's replies in the server's memory. Parts of a reply that are file
// regions go out with sendfile between the writevs of the bytes around them.
import NIOCore
import Synchronization

final class ReplyWriter: Sendable {
    private typealias Reply = (reply: ExportReply, written: @Sendable () -> Void)

    private let channel: Channel
    /// Replies handed over and not yet given to the channel, oldest first.
    private let pending = Mutex<[Reply]>([])

    init(_ channel: Channel) { self.channel = channel }

    /// Sends `reply` from any thread; `written` runs on the event loop once it has reached the
    /// socket, or failed to (the client is gone).
    func send(_ reply: ExportReply, written: @escaping @Sendable () -> Void) {
        let first = pending.withLock { pending in
            pending.append((reply, written))
            return pending.count == 1
        }
        // Later replies join the batch the first one scheduled.
        if first { channel.eventLoop.execute { self.writePending() } }
    }

    private func writePending() {
        var taken: [Reply] = []
        pending.withLock { swap(&$0, &taken) }
        let replies = taken
        guard !replies.isEmpty else { return }
        // Each part in turn, nothing between them. Writes complete in order, so the last one's
        // completes every reply of the batch: one promise a batch, not one a reply (a failed
        // write closes the channel, and every write after it fails too).
        for reply in replies.dropLast() {
            for part in reply.reply.parts { channel.write(part, promise: nil) }
        }
        let last = replies[replies.count - 1].reply.parts
        for part in last.dropLast() { channel.write(part, promise: nil) }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        promise.futureResult.whenComplete { _ in
            for reply in replies { reply.written() }
        }
        channel.write(last[last.count - 1], promise: promise)
        channel.flush()
    }
}
