// SystemCallError: the error value of every system call the project makes, naming the call
// that failed beside its errno, so a message can say which step of a request went wrong.
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
    @inlinable public static var current: Errno { Errno(rawValue: Glibc.errno) }
}
