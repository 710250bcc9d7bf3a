// ImageLocks: every lock of one open image, on the descriptor its opener owns — the permission
// locks (held for as long as the image is open and active) and the transaction lock.
import CLinuxLocking
import Glibc
import Posix
import Synchronization
import SystemPackage

/// Every lock of one open image in one place, so the block layer's file driver, `blk hold` and
/// the state store lock an image the same way: the permission locks, the transaction lock and
/// the lease all on the descriptor the opener owns.
public final class ImageLocks: Sendable {
    /// The descriptor every lock lives on; it is never replaced, since a new one would be a new
    /// open file description without these locks. Owned by the opener, which closes it.
    public let descriptor: FileDescriptor
    /// For messages: every error names the image as the user gave it.
    public let path: String
    /// What the locking mode came to on this descriptor (which flavor, if any, and the warnings to
    /// show), decided once at open.
    public let decision: LockingDecision
    /// The mode asked for, kept to judge a later reopen read-write as the open itself would have.
    public let mode: LockingMode
    /// The image's transaction lock (byte 300), on this same descriptor.
    public let transaction: TransactionLock
    private let permissions: Mutex<PermissionLocks?>

    /// The mount the image lives on, when /proc says; nil with locking off, where nothing asks:
    /// an open without locks reads nothing from /proc.
    public let mount: MountInfo?

    /// The image's lease on shared storage, which follows the permission locks: exclusive while
    /// write or resize is held, shared while anything else is, none otherwise.
    public let lease: ImageLease?

    /// Decides how to lock (see LockingMode) for an open that may write or not, and takes no lock
    /// yet. The lease does not depend on the locking mode: where leases are used, OFD locks often
    /// reach no other host anyway (a SAN LUN, NFS mounted nolock).
    public init(descriptor: FileDescriptor, path: String, mode: LockingMode, writable: Bool,
                lease policy: LeasePolicy = .none) throws(LockingError) {
        self.descriptor = descriptor
        self.path = path
        self.mode = mode
        mount = mode == .off ? nil : MountInfo.of(descriptor)
        decision = try LockingDecision.decide(mode, descriptor: descriptor, path: path, writable: writable, mount: mount)
        let locker = decision.flavor.map { ByteLocker(descriptor: descriptor, flavor: $0) }
        permissions = Mutex(locker.map { PermissionLocks(locker: $0, path: path) })
        transaction = TransactionLock(locker: locker, path: path)
        if let settings = try policy.resolved() {
            var image = try SanlockEngine.leasedImage(path: path)
            image.descriptor = descriptor.rawValue // synced by a fence before the lease goes
            lease = ImageLease(engine: SanlockEngine(settings: settings), image: image)
        } else {
            lease = nil
        }
    }

    /// What opening read-write would have checked, for a read-only open reopened read-write.
    public func checkWritable() throws(LockingError) {
        guard decision.flavor != nil else { return }
        try LockingDecision.refuseUnreachedWriter(mode, path: path, mount: mount)
    }

    /// The permissions whose bytes are locked now.
    public var lockedPermissions: PermissionRequest {
        permissions.withLock { $0?.locked ?? .none }
    }

    /// Takes, changes or (with `.none`) gives up the permission locks and the lease; on failure
    /// the old ones stay. The local locks go first: a local conflict is found without asking the
    /// storage.
    public func setPermissions(_ request: PermissionRequest) throws(LockingError) {
        try permissions.withLock { (locks) throws(LockingError) in
            let before = locks?.locked ?? .none
            try locks?.change(to: request)
            do throws(LockingError) {
                try lease?.set(LeaseMode(for: request.held))
            } catch {
                try? locks?.change(to: before)
                throw error
            }
        }
    }
}

/// An image file opened only to be locked: `blk hold`, `blk locks`, and test fixtures.
/// The block layer's file driver owns its own descriptor and uses `ImageLocks` directly.
/// It never takes a lease: whatever writes to a leased image must do it through the file
/// driver, whose requests a fence can stop.
public final class LockedImageFile: Sendable {
    /// The locks, reached through the one descriptor this object owns.
    public let locks: ImageLocks
    /// The descriptor to hand to `LockReport` as `excluding`, or to a child process that should
    /// inherit the locks (`blk hold`).
    public var descriptor: FileDescriptor { locks.descriptor }

    /// Opens `path` (O_CLOEXEC, so no child process inherits the locks) without locking it.
    /// `writable` is needed for an exclusive transaction lock: the kernel grants write locks only
    /// through descriptors open for writing.
    public init(path: String, writable: Bool, mode: LockingMode = .auto) throws(LockingError) {
        let descriptor = try Self.openDescriptor(path, writable: writable)
        do {
            locks = try ImageLocks(descriptor: descriptor, path: path, mode: mode, writable: writable)
        } catch {
            try? descriptor.close()
            throw error
        }
    }

    deinit {
        // Closing the last descriptor of the open file description releases every OFD lock.
        try? locks.descriptor.close()
    }

    /// Opens `path` with O_CLOEXEC, read-write only when `writable`, with errors in QEMU's words.
    /// Only a regular file or a block device is opened: an image names its backing file, so a
    /// hostile one can name a FIFO (whose open waits for a writer) or a character device (whose
    /// open may act: a tape rewinds, a serial line hangs up). The file is looked at through an
    /// O_PATH descriptor, which opens nothing, and the open proper must reach that same file.
    public static func openDescriptor(_ path: String, writable: Bool) throws(LockingError) -> FileDescriptor {
        let (pathOnly, looked) = try openWithStatus(path, flags: blk_o_path_flag(), action: "Could not open")
        try? pathOnly.close()
        switch looked.st_mode & S_IFMT {
        case S_IFREG, S_IFBLK:
            break
        case S_IFDIR:
            throw LockingError(.notFound, "Could not open '\(path)': \(Errno.isDirectory)", path: path)
        default:
            throw LockingError(.unsupported, "Could not open '\(path)': it is \(fileKind(looked.st_mode)), not an image (a regular file or a block device)",
                               path: path)
        }
        let action = writable ? "Could not open for writing (which an exclusive transaction lock needs)" : "Could not open"
        // O_NONBLOCK and O_NOCTTY in case the name was swapped for a FIFO or a terminal since.
        let flags = (writable ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_NOCTTY
        let (descriptor, opened) = try openWithStatus(path, flags: flags, action: action)
        guard opened.st_dev == looked.st_dev && opened.st_ino == looked.st_ino else {
            try? descriptor.close()
            throw LockingError(.ioError, "Could not open '\(path)': it was replaced while it was opened", path: path)
        }
        _ = fcntl(descriptor.rawValue, F_SETFL, fcntl(descriptor.rawValue, F_GETFL) & ~O_NONBLOCK)
        return descriptor
    }

    private static func openWithStatus(_ path: String, flags: Int32, action: String) throws(LockingError) -> (FileDescriptor, stat) {
        let raw: Int32
        switch valueOrErrno("open", { open(path, flags | O_CLOEXEC) }) {
        case .success(let opened): raw = opened
        case .failure(let failure): throw LockingError.from(failure, doing: action, path: path)
        }
        var status = stat()
        if case .failure(let failure) = valueOrErrno("fstat", { fstat(raw, &status) }) {
            close(raw)
            throw LockingError.from(failure, doing: "Could not stat", path: path)
        }
        return (FileDescriptor(rawValue: raw), status)
    }

    private static func fileKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFSOCK: "a socket"
        default: "a special file"
        }
    }
}
