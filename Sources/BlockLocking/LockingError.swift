// LockingError: the one error type of the locking module. A code scripts can switch on (an
// extensible struct, not a frozen enum), a message that names the image and what to do, the
// processes that hold what was wanted, the failed system call if any, and where it was thrown.
import Posix
import SystemPackage

/// The one error of the locking module: a code a program can switch on, QEMU's words for
/// messages, and who was in the way, so a refusal tells the user what to do.
public struct LockingError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is; the CLI maps each to an exit code.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The code's stable name ("conflict", "timeout"): what scripts and JSON output see.
        public let name: String
        /// An extensible struct, not a frozen enum, so a new kind of failure breaks no caller's
        /// switch.
        public init(_ name: String) { self.name = name }
        /// The stable name, as JSON output prints it.
        public var description: String { name }

        /// Another open holds or refuses to share a permission this open needs.
        public static let conflict = Code("conflict")
        /// The lock was not had before the deadline.
        public static let timedOut = Code("timeout")
        /// The wait was interrupted or its task cancelled.
        public static let cancelled = Code("cancelled")
        /// The kernel or the file system cannot lock this file as asked.
        public static let unsupported = Code("unsupported")
        /// The image does not exist, is not readable, or is not a file.
        public static let notFound = Code("not-found")
        /// The request itself is wrong (e.g. force-share on a read-write open).
        public static let invalidRequest = Code("invalid-request")
        /// Any other failure of a system call.
        public static let ioError = Code("io-error")
        /// A lease was asked for and its engine cannot grant any: the library or daemon is
        /// missing, this host has not joined the lockspace, the lease storage is unreachable.
        public static let leaseUnavailable = Code("lease-unavailable")
        /// A lock or lease this process held was taken from it; writes must stop.
        public static let lockLost = Code("lock-lost")
    }

    /// What kind of failure, for the caller to act on: retry a conflict, report a lost lock.
    public var code: Code
    /// The complete message: for conflicts QEMU's two lines, word for word.
    public var message: String
    /// The image the failure concerns, when there is one.
    public var path: String?
    /// Who holds the lock that was in the way, where this host can tell.
    public var holders: [LockHolder]
    /// The hosts holding the lease that was in the way.
    public var leaseOwners: [LeaseOwner]
    /// The system call that failed, for the detailed description and for logs.
    public var cause: SystemCallError?
    /// Where the error was thrown (#fileID), for the detailed description.
    public var file: String
    /// The line it was thrown at.
    public var line: Int

    /// A failure with its words; holders and lease owners when someone was in the way.
    public init(
        _ code: Code, _ message: String, path: String? = nil, holders: [LockHolder] = [], leaseOwners: [LeaseOwner] = [],
        cause: SystemCallError? = nil, file: String = #fileID, line: Int = #line
    ) {
        self.leaseOwners = leaseOwners
        self.code = code
        self.message = message
        self.path = path
        self.holders = holders
        self.cause = cause
        self.file = file
        self.line = line
    }

    /// The message, then one line per holder ("held by pid 4121 (qemu-system-x86): holds write").
    public var description: String {
        ([message] + holderLines).joined(separator: "\n")
    }

    /// One line per holder process: "held by pid 4121 (qemu-system-x86): holds write". (Lease
    /// owners are named in the message itself.)
    public var holderLines: [String] {
        holders.map { "held by \($0.summary)" }
    }

    /// The description with the failed call and the throwing location, for debugging.
    public var detailedDescription: String {
        var lines = [description]
        if let cause { lines.append("  cause: \(cause)") }
        lines.append("  at: \(file):\(line)")
        return lines.joined(separator: "\n")
    }
}

extension LockingError {
    /// Maps a failed call on an image to an error whose code says what the user can do about it.
    static func from(_ failure: SystemCallError, doing action: String, path: String, file: String = #fileID, line: Int = #line) -> LockingError {
        let code: Code
        switch failure.errno {
        case .noSuchFileOrDirectory, .permissionDenied, .isDirectory, .notDirectory, .readOnlyFileSystem: code = .notFound
        case .noLocks, .notSupported, .invalidArgument: code = .unsupported
        default: code = .ioError
        }
        return LockingError(code, "\(action) '\(path)': \(failure.errno)", path: path, cause: failure, file: file, line: line)
    }
}
