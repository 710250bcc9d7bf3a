// LockingMode: QEMU's `locking=auto|on|off` (file-posix.c, raw_open_common), and what it
// comes to on one descriptor.
//
//   mode  kernel has OFD locks       kernel lacks them               file system refuses locks
//   auto  OFD locks                  no locks (as QEMU)              warning, no permission locks
//   on    OFD locks                  POSIX locks, QEMU's warning     error: unsupported (exit 69)
//   off   no locks                   no locks                        no locks
//
// And where the locks would not reach other hosts (MountInfo: NFS with nolock or local_lock):
// auto warns; on warns for a read-only open and refuses a read-write one (exit 69), since the
// caller asked for protection that cannot be given.
import CLinuxLocking
import SystemPackage

/// QEMU's `locking` option, kept as QEMU has it so `blk` and QEMU given the same option protect
/// an image the same way (the table above says what each comes to).
public enum LockingMode: String, Sendable, Hashable, CaseIterable {
    /// Lock where the kernel and file system can, warn where they cannot: QEMU's default.
    case auto
    /// Refuse to go on without the protection asked for.
    case on
    /// No locks: for images nothing else opens, or tools that only look.
    case off
}

/// The locks one descriptor will use, decided once at open.
public struct LockingDecision: Sendable, Hashable {
    /// nil: take no kernel locks.
    public var flavor: LockFlavor?
    /// Lines to show the user (QEMU prints these as warnings).
    public var warnings: [String]

    /// Decides by probing the descriptor itself with F_OFD_GETLK: EINVAL means the kernel does
    /// not know the command; ENOLCK or EOPNOTSUPP mean this file system will not lock. Then, for
    /// locks that work, whether they reach other hosts (`mount`: the descriptor's, when known).
    public static func decide(_ mode: LockingMode, descriptor: FileDescriptor, path: String, writable: Bool,
                              mount: MountInfo?) throws(LockingError) -> LockingDecision {
        if mode == .off { return LockingDecision(flavor: nil, warnings: []) }
        var decision = try probe(mode, descriptor: descriptor, path: path)
        if decision.flavor != nil, let why = mount?.locksStayOnThisHost {
            if writable { try refuseUnreachedWriter(mode, path: path, mount: mount) }
            decision.warnings.append("locks on \(path) do not reach other hosts (\(why)): a process on another host sharing this storage is not kept out")
        }
        return decision
    }

    /// Under `--locking on`, a read-write open (or a reopen to read-write) of an image whose locks
    /// stay on this host is refused: the promise "on" makes cannot be kept.
    public static func refuseUnreachedWriter(_ mode: LockingMode, path: String, mount: MountInfo?) throws(LockingError) {
        guard mode == .on, let why = mount?.locksStayOnThisHost else { return }
        throw LockingError(.unsupported, "locks on \(path) would not reach other hosts (\(why)), so --locking on cannot protect a read-write open; remount with locking, or give --locking auto to accept it",
                           path: path)
    }

    private static func probe(_ mode: LockingMode, descriptor: FileDescriptor, path: String) throws(LockingError) -> LockingDecision {
        let probe = ByteLocker(descriptor: descriptor, flavor: .openFileDescription).probe(byte: LockByte.transaction, for: .exclusive)
        guard case .failure(let failure) = probe else { return LockingDecision(flavor: .openFileDescription, warnings: []) }
        switch (failure.errno, mode) {
        case (.invalidArgument, .auto):
            return LockingDecision(flavor: nil, warnings: [])
        case (.invalidArgument, _):
            return LockingDecision(flavor: .processAssociated, warnings: [
                "File lock requested but OFD locking syscall is unavailable, falling back to POSIX file locks",
                "Due to the implementation, locks can be lost unexpectedly.",
            ])
        case (.noLocks, .auto), (.notSupported, .auto):
            return LockingDecision(flavor: nil, warnings: [
                "the file system of \(path) does not support locks (\(failure.errno)); opened without locks, so other processes are not kept out",
            ])
        case (.noLocks, _), (.notSupported, _):
            throw LockingError(.unsupported,
                               "the file system of \(path) does not support locks (\(failure.errno))",
                               path: path, cause: failure)
        default:
            throw LockingError.from(failure, doing: "Failed to test locks on", path: path)
        }
    }
}
