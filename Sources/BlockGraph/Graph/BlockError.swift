// BlockError: the one error type of the block layer. A lock conflict keeps the locking
// module's error (QEMU's words and the holders) as its cause.
import BlockLocking
import Posix
import SystemPackage

/// The one error every block-layer call throws (typed throws): a code to switch on, a message in
/// QEMU's words where QEMU has words for it, and the causes behind it.
public struct BlockError: Error, Sendable, CustomStringConvertible {
    /// What went wrong, as a kind a caller can act on; `blk` maps each to its exit code. An open
    /// set of names rather than an enum, so a module can add a kind without breaking switches.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The kind's stable name, as `--json` output prints it.
        public let name: String
        /// A kind of its own; the static members are the kinds the block layer throws.
        public init(_ name: String) { self.name = name }
        /// The name, for messages and logs.
        public var description: String { name }

        /// The image, or a file it needs, is missing or unreadable.
        public static let notFound = Code("not-found")
        /// A format, feature or operation this build cannot handle.
        public static let unsupported = Code("unsupported")
        /// The image's format has no such operation (QEMU's ENOTSUP from a driver without it):
        /// checking a raw image, compressing into one, listing its snapshots.
        public static let notSupportedByFormat = Code("not-supported-by-format")
        /// Another open is in the way (see `locking` for who).
        public static let conflict = Code("conflict")
        /// A lock was not had in time.
        public static let timedOut = Code("timeout")
        /// The request is wrong: bad offsets, sizes, options.
        public static let invalidRequest = Code("invalid-request")
        /// A write to a read-only or inactive node.
        public static let readOnly = Code("read-only")
        /// The device is full.
        public static let noSpace = Code("no-space")
        /// The image's metadata is damaged or hostile: offsets out of place, tables past the end,
        /// a backing chain that loops.
        public static let corrupt = Code("corrupt")
        /// A read or write failed, or the image changed under us (shrank, vanished).
        public static let ioError = Code("io-error")
        /// A lock this process held is gone (NFS: an EIO after locking; a revoked sanlock lease);
        /// writes must stop.
        public static let lockLost = Code("lock-lost")
        /// Another process changed the image while this open was inactive, and the format's
        /// metadata cached here is out of date: open the image again.
        public static let stale = Code("stale")
        /// A lease on shared storage was asked for and cannot be had: no sanlock library or
        /// daemon, lockspace not joined, lease storage unreachable.
        public static let leaseUnavailable = Code("lease-unavailable")
    }

    /// The kind of failure, for callers that react to it (retry, another exit code).
    public var code: Code
    /// The words for the user, QEMU's where QEMU has them, so scripts that match qemu-img's
    /// messages keep working.
    public var message: String
    /// For lock failures: the locking module's error, which names the holders.
    public var locking: LockingError?
    /// The failed system call and its errno, when one is behind the error.
    public var cause: SystemCallError?
    /// Where in the source the error was made (`#fileID`), for reports of bugs rather than users.
    public var file: String
    /// The line of `file` the error was made at.
    public var line: Int

    /// An error of kind `code`; the place in the source is filled in by the compiler.
    public init(_ code: Code, _ message: String, locking: LockingError? = nil, cause: SystemCallError? = nil,
                file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.locking = locking
        self.cause = cause
        self.file = file
        self.line = line
    }

    /// Wraps a locking failure, keeping its words.
    public init(_ locking: LockingError, file: String = #fileID, line: Int = #line) {
        let code: Code = switch locking.code {
        case .conflict: .conflict
        case .timedOut: .timedOut
        case .unsupported: .unsupported
        case .notFound: .notFound
        case .invalidRequest: .invalidRequest
        case .lockLost: .lockLost
        case .leaseUnavailable: .leaseUnavailable
        default: .ioError
        }
        self.init(code, locking.message, locking: locking, cause: locking.cause, file: file, line: line)
    }

    /// The message and, for lock conflicts, the holders, one per line.
    public var description: String {
        ([message] + (locking?.holderLines ?? [])).joined(separator: "\n")
    }

    /// An I/O failure on a file this process holds locks on. On NFS, EIO after a lock is how the
    /// client says the lock was lost (an NFSv4 lease that expired, an NLM lock not reclaimed after
    /// a server restart): another host may have the image now, which "I/O error" does not say.
    public static func storageFailure(_ failure: SystemCallError, _ what: String, lockedOn mount: MountInfo?) -> BlockError {
        guard failure.errno == .ioError, let mount, mount.isNFS else { return systemCall(failure, what) }
        return BlockError(.lockLost, "\(what): \(failure.errno); on NFS (\(mount.source)) this means the image's lock was lost — the server restarted or the lease expired — and another host may hold the image now: stop writing and reopen it",
                          cause: failure)
    }

    static func systemCall(_ failure: SystemCallError, _ what: String, file: String = #fileID, line: Int = #line) -> BlockError {
        let code: Code
        switch failure.errno {
        case .noSpace, .diskQuotaExceeded: code = .noSpace
        case .noSuchFileOrDirectory, .permissionDenied, .isDirectory, .notDirectory: code = .notFound
        case .readOnlyFileSystem, .badFileDescriptor: code = .readOnly
        case .notSupported, .invalidArgument: code = .unsupported
        default: code = .ioError
        }
        return BlockError(code, "\(what): \(failure.errno)", cause: failure, file: file, line: line)
    }
}
