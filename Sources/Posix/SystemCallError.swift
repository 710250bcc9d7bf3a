// SystemCallError: the error value of every system call the project makes, naming the call
// that failed beside its errno, so a message can say which step of a request went wrong.
import Glibc
import SystemPackage

/// A system call that failed, and the errno it failed with.
public struct SystemCallError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The call's name ("pwrite", "fcntl(F_OFD_SETLK)"), so a message says what failed.
    public var systemCall: String
    /// What it failed with: callers switch on it (ENOSPC, EAGAIN, ENOTSUP).
    public var errno: Errno

    /// A failure of `systemCall` with `errno`, usually `Errno.current` right after the call.
    public init(_ systemCall: String, _ errno: Errno) {
        self.systemCall = systemCall
        self.errno = errno
    }

    /// "call: error", as strerror would word it.
    public var description: String { "\(systemCall): \(errno)" }
}

extension Errno {
    /// The errno the calling thread was left with by the last failed C call.
    @inlinable public static var current: Errno { Errno(rawValue: Glibc.errno) }
}
