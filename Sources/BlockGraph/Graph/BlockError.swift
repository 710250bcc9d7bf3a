// BlockError: the one error type of the block layer. A lock conflict keeps the locking
// module's error (QEMU's words and the holders) as its cause.
import BlockLocking
import Posix
import SystemPackage

public struct BlockError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
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

    public var code: Code
    public var message: String
    /// For lock failures: the locking module's error, which names the holders.
    public var locking: LockingError?
    public var cause: SystemCallError?
    public var file: String
    public var line: Int

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
