// ByteLocker: single-byte fcntl locks through one descriptor — set, release, probe, and wait.
//
// Why OFD locks (F_OFD_*) and not the others:
//   - Classic POSIX locks (F_SETLK) belong to the process: closing *any* descriptor of the file
//     drops them all, and two opens in one process never conflict. A library that opens an image
//     twice, or a caller that opens and closes the file for a stat, silently loses its locks.
//   - flock(2) locks the whole file: it blocks every QEMU open and cannot express QEMU's protocol.
//   - OFD locks belong to the open file description: they live until its last descriptor closes,
//     two opens in one process conflict like two processes, and they are byte ranges. QEMU ≥ 2.10
//     uses them; so must we, on the same bytes.
// Caveats: an OFD write lock needs a descriptor open for writing (EBADF otherwise), which is why
// QEMU only ever takes read locks and finds conflicts by probing with F_OFD_GETLK for a write lock.
// A probe must go through the descriptor that holds our own locks, since locks of the same open
// file description never conflict with each other. OFD locks report l_pid = -1, so holders are
// found through /proc (see LockHolderScan.swift).
import CLinuxLocking
import Glibc
import Posix
import SystemPackage

/// Which family of fcntl locks a descriptor uses.
public enum LockFlavor: Sendable, Hashable {
    /// Open-file-description locks (Linux ≥ 3.15), QEMU's choice.
    case openFileDescription
    /// Classic process-associated POSIX locks, QEMU's fallback under `locking=on` when the kernel
    /// lacks OFD locks. Lost when any descriptor of the file in this process is closed.
    case processAssociated

    var setCommand: Int32 { self == .openFileDescription ? Int32(blk_F_OFD_SETLK) : F_SETLK }
    var waitCommand: Int32 { self == .openFileDescription ? Int32(blk_F_OFD_SETLKW) : F_SETLKW }
    var probeCommand: Int32 { self == .openFileDescription ? Int32(blk_F_OFD_GETLK) : F_GETLK }
}

/// A lock found by a probe: its kind, and the pid F_GETLK reports (-1 for OFD locks).
public struct ProbedLock: Sendable, Hashable {
    /// Whether the lock in the way is shared or exclusive: a shared one blocks only writers.
    public var kind: LockKind
    /// Kept for classic POSIX locks, the one flavor whose owner the kernel names; -1 for OFD locks,
    /// whose holders only /proc can tell.
    public var reportedPID: Int32
}

/// Sets, releases, probes and waits for locks on single bytes of a file through one descriptor,
/// which it does not own.
public struct ByteLocker: Sendable {
    /// The descriptor every lock goes through. OFD locks belong to its open file description, so
    /// probes must use this same one: locks of one description never conflict with each other.
    public let descriptor: FileDescriptor
    /// Decided once per descriptor (LockingDecision): mixing flavors on one file would let an open
    /// conflict with itself.
    public let flavor: LockFlavor

    /// Borrows `descriptor`: closing it stays the owner's job, since closing the last descriptor of
    /// the description is what releases its locks.
    public init(descriptor: FileDescriptor, flavor: LockFlavor) {
        self.descriptor = descriptor
        self.flavor = flavor
    }

    @inline(__always)
    private func request(_ type: Int16, byte: Int64, length: Int = 1) -> flock {
        var lock = flock()
        lock.l_type = type
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = Int(byte)
        lock.l_len = length
        lock.l_pid = 0 // the kernel rejects OFD requests with any other pid (EINVAL)
        return lock
    }

    /// Takes a lock of `kind` on `byte` if no other owner's lock is in the way, converting a lock
    /// this descriptor already has there. A failed conversion leaves the old lock in place.
    /// fcntl(F_OFD_SETLK).
    public func tryLock(_ kind: LockKind, byte: Int64) -> Result<LockAttempt, SystemCallError> {
        var lock = request(kind.flockType, byte: byte)
        let command = flavor.setCommand
        let fd = descriptor.rawValue
        switch valueOrErrno("fcntl(F_OFD_SETLK)", { blk_fcntl_flock(fd, command, &lock) }) {
        case .success: return .success(.acquired)
        case .failure(let error) where error.errno == .resourceTemporarilyUnavailable || error.errno == .permissionDenied:
            return .success(.wouldBlock)
        case .failure(let error): return .failure(error)
        }
    }

    /// Releases whatever this descriptor holds on `byte`. Never blocks. fcntl(F_OFD_SETLK, F_UNLCK).
    public func unlock(byte: Int64) -> Result<Void, SystemCallError> {
        var lock = request(Int16(F_UNLCK), byte: byte)
        let command = flavor.setCommand
        let fd = descriptor.rawValue
        return valueOrErrno("fcntl(F_OFD_SETLK)", { blk_fcntl_flock(fd, command, &lock) }).map { _ in () }
    }

    /// The lock of another owner that would stop this descriptor from taking `kind` on `byte`,
    /// if any. Probing for `.exclusive` finds any lock at all. fcntl(F_OFD_GETLK).
    public func probe(byte: Int64, for kind: LockKind) -> Result<ProbedLock?, SystemCallError> {
        probe(from: byte, through: byte, for: kind)
    }

    /// The same for any byte from `first` through `last` (nil: to the end of the file), for
    /// asking about locks that are not on the image's single lock bytes: those /proc/locks lists.
    public func probe(from first: Int64, through last: Int64?, for kind: LockKind) -> Result<ProbedLock?, SystemCallError> {
        // A range to the largest offset is one to the end of the file (length 0).
        let length = last.map { $0 - first == .max ? 0 : Int($0 - first) + 1 } ?? 0
        var lock = request(kind.flockType, byte: first, length: length)
        let command = flavor.probeCommand
        let fd = descriptor.rawValue
        return valueOrErrno("fcntl(F_OFD_GETLK)", { blk_fcntl_flock(fd, command, &lock) }).map { _ in
            LockKind(flockType: lock.l_type).map { ProbedLock(kind: $0, reportedPID: lock.l_pid) }
        }
    }

    /// Blocks in the kernel until `kind` is had on `byte`, the deadline passes, or `interrupt`
    /// fires. The kernel wakes the waiter when the holder releases: there is no polling.
    /// A timer owned by this wait sends the wake signal to this thread at the deadline, and
    /// `interrupt` arms it at once, so F_OFD_SETLKW returns EINTR; other signals' EINTR resume
    /// the wait. A failed conversion (shared→exclusive) leaves the shared lock in place.
    /// fcntl(F_OFD_SETLKW).
    public func wait(
        _ kind: LockKind, byte: Int64, deadline: LockDeadline, interrupt: LockWaitInterrupt? = nil
    ) -> Result<LockWaitOutcome, SystemCallError> {
        let timer: WakeTimer?
        if deadline.isUnbounded && interrupt == nil {
            timer = nil
        } else {
            switch WakeTimer.forCurrentThread() {
            case .success(let made): timer = made
            case .failure(let error): return .failure(error)
            }
        }
        defer { timer?.delete() }
        if let timer, let nanoseconds = deadline.monotonicNanoseconds { timer.arm(at: nanoseconds) }
        if let interrupt, let timer, !interrupt.attach(timer) { return .success(.interrupted) }
        defer { interrupt?.detach() }

        var lock = request(kind.flockType, byte: byte)
        let command = flavor.waitCommand
        let fd = descriptor.rawValue
        while true {
            switch valueOrErrno("fcntl(F_OFD_SETLKW)", retryOnInterrupt: false, { blk_fcntl_flock(fd, command, &lock) }) {
            case .success:
                return .success(.acquired)
            case .failure(let failure) where failure.errno == .interrupted:
                if interrupt?.isInterrupted == true { return .success(.interrupted) }
                if deadline.hasPassed { return .success(.timedOut) }
            case .failure(let failure):
                return .failure(failure)
            }
        }
    }
}

/// How a blocking wait ended, when it did not fail.
public enum LockWaitOutcome: Sendable, Hashable {
    case acquired
    case timedOut
    case interrupted
}
