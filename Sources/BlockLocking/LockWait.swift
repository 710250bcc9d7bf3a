// LockWait: deadlines, the per-wait wake timer, and the handle that interrupts a blocked wait.
//
// Problem: F_OFD_SETLKW blocks until the lock is granted; it takes no timeout, and nothing but a
// signal makes it return early. Polling with F_OFD_SETLK and sleeps (what most lock libraries do)
// costs milliseconds of latency and wakes for nothing.
// Design: the waiting thread blocks in F_OFD_SETLKW, so the kernel wakes it the moment the holder
// releases. A POSIX timer directed at that thread (SIGEV_THREAD_ID) sends a signal whose handler
// does nothing and is installed without SA_RESTART: at the deadline, or at once when another
// thread interrupts, the syscall returns EINTR and the waiter checks why.
// Caveat: a signal may land just before the thread enters the syscall and be lost; the timer
// therefore repeats every millisecond until the wait has ended. The repeats only start once the
// wait is already over its deadline or interrupted, so an ordinary wait never polls.
import CLinuxLocking
import Glibc
import Posix
import Synchronization
import SystemPackage

/// The current CLOCK_MONOTONIC time in nanoseconds: the clock lock deadlines are kept in.
public func currentMonotonicNanoseconds() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
}

/// When a lock wait gives up: never, or at a point on the CLOCK_MONOTONIC clock.
public struct LockDeadline: Sendable, Hashable {
    /// Nanoseconds on CLOCK_MONOTONIC; nil waits for ever.
    public let monotonicNanoseconds: Int64?

    /// Waits as long as the holder holds: for locks whose holder is known to let go (`blk hold`).
    public static let never = LockDeadline(monotonicNanoseconds: nil)

    /// A deadline `duration` from now; zero or negative means "try once, do not wait".
    public static func after(_ duration: Duration) -> LockDeadline {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !nanoseconds.overflow else { return seconds > 0 ? .never : .after(.zero) }
        let (fromNow, tooFar) = nanoseconds.partialValue.addingReportingOverflow(attoseconds / 1_000_000_000)
        let (deadline, pastTheClock) = currentMonotonicNanoseconds().addingReportingOverflow(fromNow)
        guard !tooFar, !pastTheClock else { return fromNow > 0 || tooFar ? .never : .after(.zero) }
        return LockDeadline(monotonicNanoseconds: deadline)
    }

    /// A deadline `seconds` from now, as a command line gives it: anything beyond a century, or
    /// not a number, waits for ever; zero or less means "try once".
    public static func after(seconds: Double) -> LockDeadline {
        guard seconds.isFinite, seconds < 3_155_760_000 else { return seconds.isNaN || seconds > 0 ? .never : .after(.zero) }
        return .after(.nanoseconds(Int64(max(seconds, 0) * 1e9)))
    }

    var isUnbounded: Bool { monotonicNanoseconds == nil }

    var hasPassed: Bool {
        guard let monotonicNanoseconds else { return false }
        return currentMonotonicNanoseconds() >= monotonicNanoseconds
    }
}

/// A CLOCK_MONOTONIC timer that signals one thread (the one blocked in the wait).
struct WakeTimer: Sendable {
    let handle: Int

    static let repeatNanoseconds: Int64 = 1_000_000

    static func forCurrentThread() -> Result<WakeTimer, SystemCallError> {
        blk_unblock_wake_signal()
        var handle = 0
        return valueOrErrno("timer_create", { blk_wake_timer_create(blk_thread_id(), &handle) })
            .map { _ in WakeTimer(handle: handle) }
    }

    func arm(at monotonicNanoseconds: Int64) {
        _ = blk_wake_timer_arm(handle, max(1, monotonicNanoseconds), Self.repeatNanoseconds)
    }

    func fireNow() { _ = blk_wake_timer_arm(handle, 0, Self.repeatNanoseconds) }

    func delete() { _ = blk_wake_timer_delete(handle) }
}

/// Interrupts a blocked lock wait from another thread or task, such as a cancellation handler.
/// An interrupt that comes before the wait starts makes it end at once.
public final class LockWaitInterrupt: Sendable {
    private struct State {
        var isInterrupted = false
        var timer: WakeTimer?
    }

    private let state = Mutex(State())

    /// One per wait (or per task that may cancel it), made before the wait starts.
    public init() {}

    /// Makes the wait (current or future) return `.interrupted` without taking the lock.
    public func interrupt() {
        state.withLock { state in
            state.isInterrupted = true
            state.timer?.fireNow()
        }
    }

    /// Lets a waiter tell an interrupt from a deadline when its wait ends early.
    public var isInterrupted: Bool { state.withLock { $0.isInterrupted } }

    /// Publishes the waiting thread's timer; false when already interrupted.
    func attach(_ timer: WakeTimer) -> Bool {
        state.withLock { state in
            if state.isInterrupted { return false }
            state.timer = timer
            return true
        }
    }

    func detach() { state.withLock { $0.timer = nil } }
}
