// TransactionLock: the seed's counted bdrv_lock, on byte 300 of the image file (LockByte).
//
// Short critical sections: a state-store commit holds it exclusive, readers and `verify` shared.
// Counting: one open image is one owner, like a recursive lock. Nested acquisitions cost a
// mutex and an increment, no syscall; the kernel lock follows the strongest kind still held:
//
//     unlocked ──acquire(s)──▶ shared ──acquire(x)──▶ exclusive     (upgrade: may wait)
//        ▲                       │  ▲                    │
//        └──last release(s)──────┘  └──last release(x)───┘          (downgrade: never waits)
//
// An upgrade that fails or times out leaves the shared lock held: the kernel checks for
// conflicts before it converts a lock. Two opens of one file in one process exclude each other,
// because OFD locks belong to the open file description, not the process. Threads sharing one
// open image share its lock. The mutex guards only the counts, never a wait: a thread blocked in
// the kernel leaves its siblings free to take nested acquisitions and to release; the waiter
// squares the kernel lock with the counts when its wait ends. Only one thread of an open waits
// at a time: a second is refused (use an open per thread to wait in parallel).
import Posix
import Synchronization
import SystemPackage

/// A lock for short critical sections across processes (a state-store commit), beside QEMU's
/// permission locks: counted per open, so nested acquisitions cost no system call, and waited
/// for in the kernel, so a release wakes the next holder at once.
public final class TransactionLock: Sendable {
    /// nil under `locking=off`: counting still works, the kernel is not asked.
    public let locker: ByteLocker?
    /// For messages: timeouts and conflicts name the image.
    public let path: String
    /// Byte 300 for images (LockByte.transaction); tests may lock another byte of a scratch file.
    public let byte: Int64

    private struct State {
        var sharedCount = 0
        var exclusiveCount = 0
        var kernelKind: LockKind?
        /// A thread of this open is blocked in the kernel for the lock.
        var waiting = false

        var strongestHeld: LockKind? {
            exclusiveCount > 0 ? .exclusive : sharedCount > 0 ? .shared : nil
        }

        mutating func record(_ kind: LockKind) {
            if kind == .exclusive { exclusiveCount += 1 } else { sharedCount += 1 }
        }
    }

    private let state = Mutex(State())

    /// Usually made by `ImageLocks`, on the image's lock descriptor; holds nothing until acquired.
    public init(locker: ByteLocker?, path: String, byte: Int64 = LockByte.transaction) {
        self.locker = locker
        self.path = path
        self.byte = byte
    }

    /// The kind held now (nil: not held) and how many acquisitions are outstanding.
    public var status: (kind: LockKind?, depth: Int) {
        state.withLock { ($0.strongestHeld, $0.sharedCount + $0.exclusiveCount) }
    }

    /// Takes the lock without waiting; `.wouldBlock` when another owner is in the way.
    public func tryAcquire(_ kind: LockKind) throws(LockingError) -> LockAttempt {
        switch try begin(kind, mayWait: false) {
        case .acquired: .acquired
        case .wouldBlock, .mustWait: .wouldBlock
        }
    }

    /// Takes the lock, waiting in the kernel until the deadline; throws `.timedOut` naming the
    /// holders when it passes.
    public func acquire(_ kind: LockKind, deadline: LockDeadline = .never) throws(LockingError) {
        try acquire(kind, deadline: deadline, interrupt: nil)
    }

    /// Takes the lock, waiting in the kernel until the deadline or until `interrupt` fires.
    public func acquire(_ kind: LockKind, deadline: LockDeadline, interrupt: LockWaitInterrupt?) throws(LockingError) {
        guard try begin(kind, mayWait: true) == .mustWait, let locker else { return }
        let outcome = locker.wait(kind, byte: byte, deadline: deadline, interrupt: interrupt)
        try state.withLock { (state) throws(LockingError) in
            state.waiting = false
            if case .success(.acquired) = outcome {
                state.record(kind)
                state.kernelKind = kind
            }
            // Siblings may have released meanwhile without touching the kernel: catch up.
            try reconcile(&state)
        }
        switch outcome {
        case .success(.acquired):
            return
        case .success(.timedOut):
            throw LockingError(.timedOut, "timed out waiting for the \(kind) transaction lock on \(path)", path: path, holders: holders())
        case .success(.interrupted):
            throw LockingError(.cancelled, "cancelled while waiting for the \(kind) transaction lock on \(path)", path: path)
        case .failure(let failure):
            throw waitFailure(failure, kind)
        }
    }

    private enum Start: Equatable {
        case acquired
        case wouldBlock
        /// Another owner is in the way and this thread is now this open's waiter.
        case mustWait
    }

    /// The part of an acquisition done under the mutex: a nested acquisition, or a kernel attempt
    /// that does not block.
    private func begin(_ kind: LockKind, mayWait: Bool) throws(LockingError) -> Start {
        try state.withLock { (state) throws(LockingError) -> Start in
            if let held = state.kernelKind, held >= kind {
                state.record(kind)
                return .acquired
            }
            guard let locker else {
                state.record(kind)
                state.kernelKind = state.strongestHeld
                return .acquired
            }
            if state.waiting {
                guard mayWait else { return .wouldBlock }
                throw LockingError(.conflict, "another thread is already waiting for the transaction lock on \(path) through this open; use an open per thread to wait in parallel", path: path)
            }
            switch locker.tryLock(kind, byte: byte) {
            case .success(.acquired):
                state.record(kind)
                state.kernelKind = kind
                return .acquired
            case .success(.wouldBlock):
                guard mayWait else { return .wouldBlock }
                state.waiting = true
                return .mustWait
            case .failure(let failure):
                throw waitFailure(failure, kind)
            }
        }
    }

    /// Takes the lock, waiting on a thread of BlockingThreadPool so no task thread blocks;
    /// cancelling the task ends the wait at once with `.cancelled`.
    public func acquire(_ kind: LockKind, deadline: LockDeadline = .never) async throws(LockingError) {
        if try tryAcquire(kind) == .acquired { return }
        try await BlockingThreadPool.shared.wait { (interrupt) throws(LockingError) in
            try self.acquire(kind, deadline: deadline, interrupt: interrupt)
        }
    }

    /// Gives back one acquisition of `kind`; the kernel lock is downgraded or released when no
    /// stronger acquisition remains (at once, or when this open's waiter finishes).
    public func release(_ kind: LockKind) throws(LockingError) {
        try state.withLock { (state) throws(LockingError) in
            var after = state
            switch kind {
            case .exclusive where state.exclusiveCount > 0: after.exclusiveCount -= 1
            case .shared where state.sharedCount > 0: after.sharedCount -= 1
            default:
                throw LockingError(.invalidRequest, "release of a \(kind) transaction lock on \(path) that is not held", path: path)
            }
            if !after.waiting { try reconcile(&after) }
            state = after
        }
    }

    /// Makes the kernel lock the strongest kind the counts hold. Converting our own lock to a
    /// weaker kind, or unlocking, never blocks. On failure nothing changes: the kernel still holds
    /// what the state says.
    private func reconcile(_ state: inout State) throws(LockingError) {
        let wanted = state.strongestHeld
        guard wanted != state.kernelKind else { return }
        if let locker {
            let result: Result<Void, SystemCallError>
            if let wanted {
                result = locker.tryLock(wanted, byte: byte).map { _ in () }
            } else {
                result = locker.unlock(byte: byte)
            }
            if case .failure(let failure) = result {
                throw LockingError.from(failure, doing: "Failed to release the transaction lock on", path: path)
            }
        }
        state.kernelKind = wanted
    }

    /// Runs `body` holding the lock, and releases it however `body` ends.
    public func withLock<Value>(
        _ kind: LockKind, deadline: LockDeadline = .never, _ body: () throws -> Value
    ) throws -> Value {
        try acquire(kind, deadline: deadline)
        let value: Value
        do {
            value = try body()
        } catch {
            try? release(kind)
            throw error
        }
        try release(kind)
        return value
    }

    /// Runs `body` holding the lock, waiting without blocking a task thread.
    public func withLock<Value: Sendable>(
        _ kind: LockKind, deadline: LockDeadline = .never, _ body: () async throws -> Value
    ) async throws -> Value {
        try await acquire(kind, deadline: deadline)
        let value: Value
        do {
            value = try await body()
        } catch {
            try? release(kind)
            throw error
        }
        try release(kind)
        return value
    }

    private func waitFailure(_ failure: SystemCallError, _ kind: LockKind) -> LockingError {
        if failure.errno == .badFileDescriptor && kind == .exclusive {
            return LockingError(.invalidRequest,
                                "the exclusive transaction lock on \(path) needs the image opened read-write",
                                path: path, cause: failure)
        }
        if failure.errno == .deadlock {
            // Only classic POSIX locks (the fallback) detect deadlocks; retrying may succeed.
            return LockingError(.conflict, "waiting for the \(kind) transaction lock on \(path) would deadlock with another process",
                                path: path, holders: holders(), cause: failure)
        }
        return LockingError.from(failure, doing: "Failed to take the \(kind) transaction lock on", path: path)
    }

    /// Who holds the transaction lock now (other than this open).
    public func holders() -> [LockHolder] {
        guard let locker, case .success(let identity) = LockHolderScan.identity(of: locker.descriptor) else { return [] }
        return LockHolderScan(file: identity, excluding: locker.descriptor).scan().holders.filter { $0.covers(byte: byte) }
    }
}
