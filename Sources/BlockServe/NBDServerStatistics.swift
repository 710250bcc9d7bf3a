// NBDServerStatistics: what the control socket's `status` reports of the traffic — requests
// under way and answered, bytes read and written by requests that succeeded, and how many of the
// bytes read the kernel sent from the image file (sendfile). Counted by every
// connection on the threads that answer, so atomics, not a lock.
import NBD
import NIOCore
import Synchronization

/// The server's request counters, for all its connections.
public final class NBDServerStatistics: Sendable {
    private let inFlight = Atomic<Int>(0)
    private let served = Atomic<Int>(0)
    private let read = Atomic<UInt64>(0)
    private let written = Atomic<UInt64>(0)
    private let sentFromFile = Atomic<UInt64>(0)

    /// Counters at zero.
    public init() {}

    /// Requests taken and not yet answered.
    public var requestsInFlight: Int { inFlight.load(ordering: .relaxed) }
    /// Requests answered, successfully or not.
    public var requestsServed: Int { served.load(ordering: .relaxed) }
    /// Bytes of successful reads.
    public var bytesRead: UInt64 { read.load(ordering: .relaxed) }
    /// Bytes of successful writes (NBD_CMD_WRITE payloads).
    public var bytesWritten: UInt64 { written.load(ordering: .relaxed) }
    /// Of `bytesRead`, those sent from the image file with sendfile rather than copied.
    public var bytesSentFromFile: UInt64 { sentFromFile.load(ordering: .relaxed) }

    /// A request taken from a connection.
    func started() {
        inFlight.add(1, ordering: .relaxed)
    }

    /// `request` answered with `reply`.
    func answered(_ request: NBDRequest, with reply: ExportReply) {
        inFlight.subtract(1, ordering: .relaxed)
        served.add(1, ordering: .relaxed)
        guard !reply.reportsError else { return }
        if request.command == .read {
            read.add(UInt64(request.length), ordering: .relaxed)
            let fromFile = reply.bytesFromFiles
            if fromFile > 0 { sentFromFile.add(UInt64(fromFile), ordering: .relaxed) }
        } else if request.command == .write {
            written.add(UInt64(request.length), ordering: .relaxed)
        }
    }
}
