// RateLimit: qemu-img's `-r` for the copying jobs (commit, convert). A job reports the bytes it
// wrote after each chunk, and sleeps until they fit the limit counted from its start, so the
// copy as a whole averages at most the limit, as QEMU's ratelimit does for its block jobs.
// Only guest data counts: zeroes and holes cost the storage little, and QEMU's commit counts
// only what it copies. The sleep is until an absolute CLOCK_MONOTONIC time, so an interrupted
// sleep resumes to the same end.
import BlockLocking
import Glibc
import Synchronization

/// At most `bytesPerSecond` bytes written per second, on average since the first write.
public final class RateLimit: Sendable {
    /// The average rate a job may write at, in bytes per second.
    public let bytesPerSecond: Int64
    private let progress = Mutex<(started: Int64?, bytes: Int64)>((nil, 0))

    /// A limit of `bytesPerSecond`; nil for 0, which qemu-img takes as no limit.
    public init?(bytesPerSecond: Int64) {
        guard bytesPerSecond > 0 else { return nil }
        self.bytesPerSecond = bytesPerSecond
    }

    /// Counts `bytes` more written and returns when they fit the limit.
    func pace(_ bytes: Int64) {
        let now = currentMonotonicNanoseconds()
        let due = progress.withLock { progress -> Int64 in
            let started = progress.started ?? now
            progress.started = started
            progress.bytes = progress.bytes.addingReportingOverflow(bytes).overflow ? .max : progress.bytes + bytes
            let seconds = Double(progress.bytes) / Double(bytesPerSecond)
            return seconds >= Double(Int64.max - started) / 1e9 ? .max : started + Int64(seconds * 1e9)
        }
        guard due > now else { return }
        var until = timespec(tv_sec: Int(due / 1_000_000_000), tv_nsec: Int(due % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, nil) == EINTR {}
    }
}
