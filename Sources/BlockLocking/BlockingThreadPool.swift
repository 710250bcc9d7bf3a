// BlockingThreadPool: where the async API's blocking work runs — lock waits, I/O, fdatasync — on
// threads of its own, never on the Swift concurrency pool's.
//
// Problem: the concurrency pool has one thread per core. A task that blocks one in a syscall (a
// lock wait lasting until another process lets go, an fdatasync of milliseconds) takes it from
// every other task of the process: two waiting commits on a 2-core machine stop the program.
// Design: an async entry point suspends its task and hands the blocking body to a worker thread
// of this pool; the task resumes when the body returns. Idle workers stay for the next call and
// leave after 10 s without work, as in QEMU's block thread pool (util/thread-pool.c).
// Wakes: a job goes on a ready list, and a worker is woken for it only when none is on its way
// already; a worker that finishes a job takes the next ready one before it sleeps, and one that
// takes a job with more behind it wakes the next. A burst of short jobs (an NBD client's 16
// reads of 4 KiB) is then run by the one or two workers it woke, not by 16 threads woken and put
// back to sleep in turn — on 2 cores each wake is a context switch, and these cost more than the
// jobs. A job that blocks still has another worker called for the jobs behind it, so blocking
// work runs side by side as before.
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
    }

    private struct State {
        /// Asleep, most recently idle last: woken first, so the others age out.
        var idle: [Worker] = []
        /// Jobs for the next worker that looks, oldest at `readyStart`.
        var ready: [Assignment] = []
        var readyStart = 0
        /// Capped jobs waiting for a turn, oldest first.
        var queued: [Job] = []
        var runningCapped = 0
        /// A worker is being woken or started for `ready` and has not looked at it yet.
        var workerOnTheWay = false

        mutating func takeReady() -> Assignment? {
            guard readyStart < ready.count else { return nil }
            let next = ready[readyStart]
            readyStart += 1
            if readyStart == ready.count {
                ready.removeAll(keepingCapacity: true)
                readyStart = 0
            } else if readyStart >= 64 && readyStart * 2 >= ready.count {
                // Under a load that never lets it empty, the taken part is dropped now and then.
                ready.removeFirst(readyStart)
                readyStart = 0
            }
            return next
        }

        var hasReady: Bool { readyStart < ready.count }

        /// A worker to wake (or a thread to start) for what is ready, unless one is on its way.
        mutating func callWorker() -> Call? {
            guard !workerOnTheWay else { return nil }
            workerOnTheWay = true
            return idle.popLast().map(Call.wake) ?? .spawn
        }
    }

    private enum Call {
        case wake(Worker)
        case spawn
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

    private func submit(capped: Bool, _ job: @escaping Job) {
        let call = state.withLock { state -> Call? in
            if capped {
                guard state.runningCapped < maximumRunning else {
                    state.queued.append(job)
                    return nil
                }
                state.runningCapped += 1
            }
            state.ready.append(Assignment(job: job, capped: capped))
            return state.callWorker()
        }
        if let call { answer(call) }
    }

    private func answer(_ call: Call) {
        switch call {
        case .wake(let worker): worker.wake.signal()
        case .spawn: spawn()
        }
    }

    /// A new worker thread, on its way to what is ready.
    private func spawn() {
        let start = Unmanaged.passRetained(WorkerStart { self.work(Worker()) }).toOpaque()
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

    /// A worker's life: it was called for what is ready; it runs jobs while there are any, then
    /// sleeps until called again, or ends when it has been idle too long.
    private func work(_ worker: Worker) {
        var arriving = true
        var finished: Assignment?
        while true {
            let (next, call) = state.withLock { state -> (Assignment?, Call?) in
                if arriving { state.workerOnTheWay = false }
                // The turn passes to the oldest queued job.
                if let finished, finished.capped {
                    if state.queued.isEmpty {
                        state.runningCapped -= 1
                    } else {
                        state.ready.append(Assignment(job: state.queued.removeFirst(), capped: true))
                    }
                }
                guard let next = state.takeReady() else {
                    state.idle.append(worker)
                    return (nil, nil)
                }
                // More is ready than this worker takes: someone else comes for it.
                return (next, state.hasReady ? state.callWorker() : nil)
            }
            if let call { answer(call) }
            guard let next else {
                guard waitForCall(worker) else { return }
                arriving = true
                finished = nil
                continue
            }
            arriving = false
            next.job()
            finished = next
        }
    }

    /// Whether the idle `worker` was called; false when it was not within the idle timeout and
    /// is to end.
    private func waitForCall(_ worker: Worker) -> Bool {
        guard worker.wake.wait(timeout: .now() + idleTimeout) == .timedOut else { return true }
        let leaves = state.withLock { state in
            guard let index = state.idle.firstIndex(where: { $0 === worker }) else { return false }
            state.idle.remove(at: index)
            return true
        }
        if leaves { return false }
        // Called as the timeout passed: its signal is on the way.
        worker.wake.wait()
        return true
    }
}

/// What a new thread runs, passed through pthread_create's context pointer.
private final class WorkerStart {
    let body: () -> Void

    init(_ body: @escaping () -> Void) { self.body = body }
}
