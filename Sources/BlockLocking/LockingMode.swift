// LockingMode: QEMU's `locking=auto|on|off` (file-posix.c, raw_open_common), and what it
// comes to on one descriptor.
//
//   mode  kernel has OFD locks       kernel lacks them               file system refuses locks
//   auto  OFD locks                  no locks (as QEMU)              warning, no permission locks
//   on    OFD locks                  POSIX locks, QEMU's warning     error: unsupported (exit 69)
//   off   no locks                   no locks                        no locks
import CLinuxLocking
import SystemPackage

public enum LockingMode: String, Sendable, Hashable, CaseIterable {
    case auto, on, off
}

/// The locks one descriptor will use, decided once at open.
public struct LockingDecision: Sendable, Hashable {
    /// nil: take no kernel locks.
    public var flavor: LockFlavor?
    /// Lines to show the user (QEMU prints these as warnings).
    public var warnings: [String]

    /// Decides by probing the descriptor itself with F_OFD_GETLK: EINVAL means the kernel does
    /// not know the command; ENOLCK or EOPNOTSUPP mean this file system will not lock.
    public static func decide(_ mode: LockingMode, descriptor: FileDescriptor, path: String) throws(LockingError) -> LockingDecision {
        if mode == .off { return LockingDecision(flavor: nil, warnings: []) }
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
