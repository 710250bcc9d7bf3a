// ReplyWriter: a connection's replies, sent from the block layer's threads as each request
// completes. The replies that complete while the event loop is busy go out together, with one
// flush (one writev) for all of them; and the batch reports how many have reached the socket
// (with its last write), which is when their requests stop counting against the in-flight limit —
// so a client that stops reading holds at most the limit's replies in the server's memory. Parts
// of a reply that are file regions go out with sendfile between the writevs of the bytes around
// them. One callback for the connection, told a count: a reply costs no closure of its own. A
// batch with file regions is watched until written (SendfileWatch: a file cut shorter under it).
import Logging
import NIOCore
import Synchronization

final class ReplyWriter: Sendable {
    private let channel: Channel
    /// Runs on the event loop with how many replies have reached the socket, or failed to.
    private let written: @Sendable (Int) -> Void
    /// Replies handed over and not yet given to the channel, oldest first.
    private let pending = Mutex<[ExportReply]>([])
    private let watch: NIOLoopBound<SendfileWatch>

    /// Replies to `channel`, made on its event loop; `written` is told, on the loop, each time
    /// some have reached the socket (or failed to: the client is gone).
    init(_ channel: Channel, logger: Logger, written: @escaping @Sendable (Int) -> Void) {
        self.channel = channel
        self.written = written
        watch = NIOLoopBound(SendfileWatch(channel, logger: logger), eventLoop: channel.eventLoop)
    }

    /// Sends `reply`, from any thread.
    func send(_ reply: ExportReply) {
        let first = pending.withLock { pending in
            pending.append(reply)
            return pending.count == 1
        }
        // Later replies join the batch the first one scheduled.
        if first { channel.eventLoop.execute { self.writePending() } }
    }

    private func writePending() {
        var taken: [ExportReply] = []
        pending.withLock { swap(&$0, &taken) }
        let replies = taken
        guard !replies.isEmpty else { return }
        // Each part in turn, nothing between them. Writes complete in order, so the last one's
        // completes every reply of the batch: one promise a batch, not one a reply (a failed
        // write closes the channel, and every write after it fails too).
        let promise = channel.eventLoop.makePromise(of: Void.self)
        var regions: [FileRegion] = []
        for (index, reply) in replies.enumerated() {
            for (partIndex, part) in reply.parts.enumerated() {
                if case .fileRegion(let region) = part { regions.append(region) }
                let isLast = index == replies.count - 1 && partIndex == reply.parts.count - 1
                channel.write(part, promise: isLast ? promise : nil)
            }
        }
        let count = replies.count, written = self.written, watch = self.watch
        let batch = regions.isEmpty ? nil : watch.value.watch(regions)
        promise.futureResult.whenComplete { _ in
            if let batch { watch.value.written(batch) }
            written(count)
        }
        channel.flush()
    }
}
