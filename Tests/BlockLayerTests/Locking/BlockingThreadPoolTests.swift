// The threads the async API blocks on instead of the concurrency pool's: bodies that block run
// beside each other and beside other tasks, and past the cap they wait for a turn.
@testable import BlockLocking
import Dispatch
import Synchronization
import Testing

@Suite("blocking work off the concurrency pool")
struct BlockingThreadPoolTests {
    /// Bodies that block until the test lets them go, counting those that have started.
    final class Gate: Sendable {
        let semaphore = DispatchSemaphore(value: 0)
        let started = Mutex(0)

        /// Blocks its thread until opened; false if that took a minute.
        func pass() -> Bool {
            started.withLock { $0 += 1 }
            return semaphore.wait(timeout: .now() + 60) == .success
        }

        func open(_ count: Int) { for _ in 0..<count { semaphore.signal() } }

        var startedCount: Int { started.withLock { $0 } }
    }

    @Test("blocked bodies, more of them than cores, leave a task thread for other work")
    func blockedBodiesDoNotStarve() async throws {
        let executor = SerialQueueExecutor("blk.test.blocking-bodies")
        await withTaskExecutorPreference(executor) {
            let gate = Gate()
            let bodies = (0..<8).map { _ in Task(executorPreference: executor) { await BlockingThreadPool.shared.run { gate.pass() } } }
            #expect(await executor.eventually { gate.startedCount == 8 }, "every body runs at once")
            let unrelated = Task(executorPreference: executor) { (1...1000).reduce(0, +) }
            #expect(await unrelated.value == 500_500)
            gate.open(8)
            for body in bodies { #expect(await body.value, "the body was let go, it did not time out") }
        }
    }

    @Test("past the cap the next body waits for a turn, holding no thread")
    func capQueuesBodies() async throws {
        let executor = SerialQueueExecutor("blk.test.blocking-cap")
        let pool = BlockingThreadPool(maximumRunning: 4, idleTimeout: .seconds(1))
        await withTaskExecutorPreference(executor) {
            let gate = Gate()
            let bodies = (0..<5).map { _ in Task(executorPreference: executor) { await pool.run { gate.pass() } } }
            #expect(await executor.eventually { gate.startedCount == 4 })
            #expect(gate.startedCount == 4, "the fifth waits")
            gate.open(1)
            #expect(await executor.eventually { gate.startedCount == 5 }, "it runs when a turn comes free")
            gate.open(4)
            for body in bodies { #expect(await body.value) }
        }
    }

    @Test("lock waits do not count against the cap")
    func waitsOutsideCap() async throws {
        let executor = SerialQueueExecutor("blk.test.blocking-waits")
        let pool = BlockingThreadPool(maximumRunning: 1, idleTimeout: .seconds(1))
        await withTaskExecutorPreference(executor) {
            let gate = Gate()
            let body = Task(executorPreference: executor) { await pool.run { gate.pass() } }
            #expect(await executor.eventually { gate.startedCount == 1 })
            let waitGate = Gate()
            let wait = Task(executorPreference: executor) { await pool.wait { _ in waitGate.pass() } }
            #expect(await executor.eventually { waitGate.startedCount == 1 }, "a wait starts with the cap reached")
            waitGate.open(1)
            #expect(await wait.value)
            gate.open(1)
            #expect(await body.value)
        }
    }
}
