// SystemCall: the one place that owns the "-1 means errno, retry EINTR" rule for the locking
// module, and the error value that names which call failed. close(2) is never retried: on Linux
// the descriptor is gone even when close reports EINTR.
import CLinuxLocking
import Glibc
import SystemPackage

/// A system call that failed, and the errno it failed with.
public struct SystemCallError: Error, Sendable, Hashable, CustomStringConvertible {
    public var systemCall: String
    public var errno: Errno

    public init(_ systemCall: String, _ errno: Errno) {
        self.systemCall = systemCall
        self.errno = errno
    }

    public var description: String { "\(systemCall): \(errno)" }
}

extension Errno {
    /// The errno the calling thread was left with by the last failed C call.
    @usableFromInline static var current: Errno { Errno(rawValue: Glibc.errno) }
}

/// Runs a C call that returns -1 and sets errno on failure, retrying it while it fails with EINTR
/// when `retryOnInterrupt` is set. Inlinable: every read and write of every driver goes through
/// it, and unspecialized across the module boundary it instantiated `Result`'s metadata through
/// the runtime's locked cache on each call — shared state every I/O thread touched.
@inlinable
public func valueOrErrno<Value: FixedWidthInteger>(
    _ name: StaticString, retryOnInterrupt: Bool = true, _ call: () -> Value
) -> Result<Value, SystemCallError> {
    while true {
        let value = call()
        if value != -1 { return .success(value) }
        let error = Errno.current
        if error == .interrupted && retryOnInterrupt { continue }
        return .failure(SystemCallError("\(name)", error))
    }
}

/// The current CLOCK_MONOTONIC time in nanoseconds: the clock lock deadlines are kept in.
public func currentMonotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}
