// SerialQueueExecutor: a task executor of a test's own (SE-0417), one serial dispatch queue.
//
// Why: the cooperative pool has as many threads as cores (two here), and tests running in
// parallel block them for minutes waiting for child processes; a task under test and the loop
// watching it could get no thread before their deadline. Tasks that prefer this executor run on
// the queue whatever the pool does (a serial queue is served by dispatch's overcommit threads,
// which it adds on demand), and one at a time: a task that blocked its thread would stop the
// loop watching it, so a test built on it still fails when the code under test blocks.
import Dispatch

final class SerialQueueExecutor: TaskExecutor {
    private let queue: DispatchQueue

    init(_ label: String) { queue = DispatchQueue(label: label) }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// Suspends the calling task for `duration`, waking it from this queue: `Task.sleep` wakes
    /// through a job on the pool, which a starved pool may not run before a test's deadline.
    func sleep(for duration: Duration) async {
        let nanoseconds = Int(duration.components.seconds) * 1_000_000_000 + Int(duration.components.attoseconds / 1_000_000_000)
        await withCheckedContinuation { continuation in
            queue.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { continuation.resume() }
        }
    }

    /// Polls `condition` every 5 ms on this queue until it holds or `seconds` pass.
    func eventually(within seconds: Int = 60, _ condition: () throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if try condition() { return true }
            await sleep(for: .milliseconds(5))
        }
        return try condition()
    }
}
