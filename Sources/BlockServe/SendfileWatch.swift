// SendfileWatch: ends a connection whose reply can never be sent because the image file was cut
// shorter under it.
//
// Problem: a reply's file region (sendfile) names a range of the image file as it was when the
// reply was made. When the file is then cut shorter — another process truncates a raw image
// served read-only or with -U, which the image locks allow, as QEMU's do — sendfile returns 0 at
// the new end. swift-nio takes 0 for a full socket and tries again for as long as the socket is
// writable: the event loop spins at full CPU, every connection on it slows, and the reply never
// completes, so the server could not even stop (netty had the same, netty#8868; swift-nio's
// PendingWritesManager still does).
// Design: while replies with file regions are on their way, once a second the watch compares the
// end of each with its file's size (fstat), and closes the connection when one is past it — the
// spec lets a server end a reply it cannot complete, and the client sees the connection end. One
// timer a connection, armed only while regions are on their way; nothing on a reply's path but
// the bookkeeping of its batch.
// State: the event loop's; ReplyWriter reaches it through NIOLoopBound.
import Glibc
import Logging
import NIOCore

final class SendfileWatch {
    /// How often the regions on their way are checked.
    static let interval = TimeAmount.seconds(1)

    private let channel: Channel
    private let logger: Logger
    /// The regions of each batch of replies given to the channel and not yet written.
    private var batches: [Int: [FileRegion]] = [:]
    private var nextBatch = 0
    private var armed = false

    init(_ channel: Channel, logger: Logger) {
        self.channel = channel
        self.logger = logger
    }

    /// Watches the file regions of a batch given to the channel; its number is for `written`.
    func watch(_ regions: [FileRegion]) -> Int {
        let batch = nextBatch
        nextBatch += 1
        batches[batch] = regions
        if !armed { arm() }
        return batch
    }

    /// The batch has been written, or has failed to be.
    func written(_ batch: Int) {
        batches[batch] = nil
    }

    private func arm() {
        armed = true
        let watch = NIOLoopBound(self, eventLoop: channel.eventLoop)
        channel.eventLoop.scheduleTask(in: Self.interval) { watch.value.check() }
    }

    private func check() {
        armed = false
        guard !batches.isEmpty else { return }
        if let region = batches.values.joined().first(where: Self.endsPastItsFile) {
            logger.error("a reply's data is past the end of the image file, which was cut shorter while served: closing the connection",
                         metadata: ["end": "\(region.endIndex)"])
            batches = [:]
            channel.close(promise: nil)
            return
        }
        arm()
    }

    /// Whether the region ends past its file's end, where sendfile would never send its rest.
    private static func endsPastItsFile(_ region: FileRegion) -> Bool {
        let size = try? region.fileHandle.withUnsafeFileDescriptor { descriptor -> Int? in
            var status = stat()
            return fstat(descriptor, &status) == 0 ? Int(status.st_size) : nil
        }
        guard let size = size ?? nil else { return false }
        return region.endIndex > size
    }
}
