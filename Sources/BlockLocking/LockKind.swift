// LockKind: shared (F_RDLCK) or exclusive (F_WRLCK), ordered so that "covers" is a comparison.
import Glibc

/// The two kinds of byte lock: many shared holders, or one exclusive holder.
public enum LockKind: Int, Sendable, Hashable, Comparable, CustomStringConvertible, CaseIterable {
    /// Many holders at once: readers, and every QEMU permission lock.
    case shared = 0
    /// One holder: a commit. Needs a descriptor open for writing.
    case exclusive = 1

    /// Exclusive is the stronger kind: a lock held covers a request when it is at least as strong.
    public static func < (lhs: LockKind, rhs: LockKind) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The word messages use: "shared" or "exclusive".
    public var description: String {
        switch self {
        case .shared: "shared"
        case .exclusive: "exclusive"
        }
    }

    /// The struct flock l_type for this kind.
    var flockType: Int16 {
        switch self {
        case .shared: Int16(F_RDLCK)
        case .exclusive: Int16(F_WRLCK)
        }
    }

    init?(flockType: Int16) {
        switch Int32(flockType) {
        case F_RDLCK: self = .shared
        case F_WRLCK: self = .exclusive
        default: return nil
        }
    }
}

/// What a non-blocking lock attempt came to. Contention is an expected outcome, not a failure,
/// so it is not thrown (as Rust's `TryLockError::WouldBlock` is kept apart from real errors).
public enum LockAttempt: Sendable, Hashable {
    /// The lock is held now.
    case acquired
    /// Another owner's lock is in the way; nothing changed.
    case wouldBlock
}
