// BlockingThreadPool: where the async API's blocking work runs — lock waits, I/O, fdatasync — on
// threads of its own, never on the Swift concurrency pool's.
//
// Problem: the concurrency pool has one thread per core. A task that blocks one in a syscall (a
// lock wait lasting until another process lets go, an fdatasync of milliseconds) takes it from
// every other task of the process: two waiting commits on a 2-core machine stop the program.
// Design: an async entry point suspends its task and hands the blocking body to a worker thread
// of this pool; the task resumes when the body returns. Idle workers stay for the next call and
// leave after 10 s without work, as in QEMU's block thread pool (util/thread-pool.c).
//   run   work that ends by itself (I/O with the transaction lock held): at most 64 bodies at
//         once, QEMU's default thread-pool-max; more wait for a turn holding no thread. A body
//         never waits for other work of this process, so the cap cannot deadlock. `execute` is
//         the same without a task waiting for the body.
//   wait  a lock wait: it may last for ever, and its holder may be this process's own work
//         queued for `run`, so it never counts against the cap. Waits are bounded anyway: a
//         TransactionLock lets one thread per open wait, so there are at most as many as opens.
// Dispatch is not used for either: a serial queue per call (what the lock wait used) gets one
// of at most 255 overcommit threads on Linux, and beyond them a wait queued by dispatch could
// not even be cancelled until a thread came free.
// Cancellation: `wait` hands its body an interrupt that cancelling the task fires; `run` ignores
// cancellation, so a commit that has started completes, never torn.
import Dispatch
import Glibc
import Synchronization

package final class BlockingThreadPool: Sendable {
    /// A body bound to the continuation of the task waiting for it.
    private typealias Job = @Sendable () -> Void

    private struct Assignment {
        var job: Job
        /// Counted against `maximumRunning`.
        var capped: Bool
    }

    private final class Worker: Sendable {
        let wake = DispatchSemaphore(value: 0)
        let assignment = Mutex<Assignment?>(nil)
    }

    private struct State {
        /// Most recently idle last: reused first, so the others age out.
        var idle: [Worker] = []
        /// Capped jobs waiting for a turn, oldest first.
        var queued: [Job] = []
        var runningCapped = 0
    }

    /// The pool of the library's async API.
    package static let shared = BlockingThreadPool(maximumRunning: 64, idleTimeout: .seconds(10))

    private let maximumRunning: Int
    private let idleTimeout: DispatchTimeInterval
    private let state = Mutex(State())

    init(maximumRunning: Int, idleTimeout: DispatchTimeInterval) {
        self.maximumRunning = maximumRunning
        self.idleTimeout = idleTimeout
    }

    /// Runs `body` on a thread of the pool and suspends the calling task until it returns. It
    /// runs to the end whether or not the task is cancelled meanwhile.
    package func run<Value: Sendable, Failure: Error>(
        _ body: @escaping @Sendable () throws(Failure) -> Value
    ) async throws(Failure) -> Value {
        let result = await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, Failure>, Never>) in
            self.submit(capped: true) { continuation.resume(returning: Result(catching: body)) }
        }
        return try result.get()
    }

    /// Runs `body` on a thread of the pool, under the same cap as `run`, without waiting for it:
    /// for work whose end is reported by `body` itself (an NBD reply sent from the worker), which
    /// spares the caller's task the two hops of suspending and resuming.
    package func execute(_ body: @escaping @Sendable () -> Void) {
        submit(capped: true, body)
    }

    /// Runs the wait `body` on a thread of the pool, outside the cap; cancelling the calling
    /// task fires the interrupt `body` is given (at once, or before it starts).
    package func wait<Value: Sendable, Failure: Error>(
        _ body: @escaping @Sendable (LockWaitInterrupt) throws(Failure) -> Value
    ) async throws(Failure) -> Value {
        let interrupt = LockWaitInterrupt()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<Value, Failure>, Never>) in
                self.submit(capped: false) {
                    continuation.resume(returning: Result { () throws(Failure) in try body(interrupt) })
                }
            }
        } onCancel: {
            interrupt.interrupt()
        }
        return try result.get()
    }

    private enum Placement {
        case queued
        case handed(Worker)
        case needsThread
    }

    private func submit(capped: Bool, _ job: @escaping Job) {
        let placement = state.withLock { state -> Placement in
            if capped {
                guard state.runningCapped < maximumRunning else {
                    state.queued.append(job)
                    return .queued
                }
                state.runningCapped += 1
            }
            guard let worker = state.idle.popLast() else { return .needsThread }
            worker.assignment.withLock { $0 = Assignment(job: job, capped: capped) }
            return .handed(worker)
        }
        switch placement {
        case .queued: break
        case .handed(let worker): worker.wake.signal()
        case .needsThread: spawn(Assignment(job: job, capped: capped))
        }
    }

    /// A new worker thread that starts with `first`.
    private func spawn(_ first: Assignment) {
        let start = Unmanaged.passRetained(WorkerStart { self.work(Worker(), first) }).toOpaque()
        var thread = pthread_t()
        // Out of threads for the moment: wait and try again, as libdispatch does.
        while pthread_create(&thread, nil, { start in
            Unmanaged<WorkerStart>.fromOpaque(start!).takeRetainedValue().body()
            return nil
        }, start) == EAGAIN {
            usleep(10_000)
        }
        pthread_detach(thread)
    }

    /// A worker's life: its first job, then whatever comes, until it has been idle too long.
    private func work(_ worker: Worker, _ first: Assignment) {
        var next: Assignment? = first
        while let assignment = next {
            assignment.job()
            next = state.withLock { state -> Assignment? in
                if assignment.capped {
                    // The turn passes to the oldest queued job.
                    if !state.queued.isEmpty { return Assignment(job: state.queued.removeFirst(), capped: true) }
                    state.runningCapped -= 1
                }
                state.idle.append(worker)
                return nil
            }
            if next == nil { next = waitForJob(worker) }
        }
    }

    /// The job handed to the idle `worker`, or nil when none came within the idle timeout and
    /// the worker is to end.
    private func waitForJob(_ worker: Worker) -> Assignment? {
        if worker.wake.wait(timeout: .now() + idleTimeout) == .timedOut {
            let leaves = state.withLock { state in
                guard let index = state.idle.firstIndex(where: { $0 === worker }) else { return false }
                state.idle.remove(at: index)
                return true
            }
            if leaves { return nil }
            // Handed a job as the timeout passed: its signal is on the way.
            worker.wake.wait()
        }
        return worker.assignment.withLock { $0.take() }
    }
}

/// What a new thread runs, passed through pthread_create's context pointer.
private final class WorkerStart {
    let body: () -> Void

    init(_ body: @escaping () -> Void) { self.body = body }
}
