// The library's async waits: a commit or a verify waiting for the transaction lock another
// process holds blocks no task thread, ends when the holder lets go, and a cancelled task stops
// waiting at once.
import DeviceState
import Foundation
import Testing

@Suite("device-state store: async waits and cancellation")
struct StateAsyncTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("an async put waits in the kernel for a holder in another process, and cancelling it ends the wait")
    func cancelledWait() async throws {
        // The put and the loop watching it share one thread of the test's own: were the put to
        // block its thread, the loop could not see it wait (see SerialQueueExecutor).
        let executor = SerialQueueExecutor("blk.test.async-put")
        try await withTaskExecutorPreference(executor) {
            let image = try scratch.rawImage(bytes: 1 << 20)
            let store = try StateStore.open(image, role: .writer, options: .init(timeout: .seconds(60)))
            try await store.put("permall", [1, 2, 3])
            let holder = try LineProcess(blkPath, ["hold", "--shared", image, "--", "/bin/sh", "-c", "echo held; read line"])
            #expect(try holder.nextLine() == "held")
            let waiting = Task(executorPreference: executor) { try await store.put("permall", [4, 5, 6]) }
            #expect(try await executor.eventually { try hasKernelWaiter(on: image) }, "the put waits in the kernel")
            waiting.cancel()
            let outcome = await waiting.result
            guard case .failure(let error as StateError) = outcome else { Issue.record("the put was not cancelled: \(outcome)"); return }
            #expect(error.block?.locking?.code.name == "cancelled", "\(error)")
            #expect(try await store.get("permall") == [1, 2, 3], "nothing was committed")

            // The same wait, not cancelled, ends when the holder lets go; a reader sees the commit.
            let committing = Task(executorPreference: executor) { try await store.put("permall", [7, 8, 9]) }
            #expect(try await executor.eventually { try hasKernelWaiter(on: image) })
            try holder.finish()
            _ = try await committing.value
            let reader = try StateStore.open(image, role: .reader)
            #expect(try await reader.get("permall") == [7, 8, 9])
            let verified = try await reader.verify()
            #expect(verified.blobCount == 1 && verified.generation == 3, "init, then two commits")
            try store.close()
        }
    }
}

extension StateAsyncTests {
    @Test("more async commits than cores, all waiting for locks, leave a task thread for other work")
    func waitingCommitsDoNotStarve() async throws {
        // One thread stands for the pool: were a waiting commit to block its thread, no other
        // task of the executor would run until that commit timed out.
        let executor = SerialQueueExecutor("blk.test.async-commits")
        try await withTaskExecutorPreference(executor) {
            let commitCount = max(8, 2 * ProcessInfo.processInfo.activeProcessorCount)
            let holder = try LineProcess.fixture()
            var images: [String] = [], stores: [StateStore] = []
            for index in 0..<commitCount {
                let image = try scratch.rawImage("disk\(index).raw", bytes: 1 << 20)
                stores.append(try StateStore.open(image, role: .writer, options: .init(timeout: .seconds(60))))
                let handle = try holder.open(image, "ro")
                #expect(try holder.request("lock \(handle) shared") == "ok")
                images.append(image)
            }
            let commits = stores.enumerated().map { index, store in
                Task(executorPreference: executor) { try await store.put("permall", [UInt8](repeating: UInt8(index), count: 64 << 10)) }
            }
            #expect(try await executor.eventually { try images.allSatisfy { try hasKernelWaiter(on: $0) } },
                    "every commit waits in the kernel")

            let unrelated = Task(executorPreference: executor) { (1...1000).reduce(0, +) }
            #expect(await unrelated.value == 500_500)
            #expect(try images.allSatisfy { try hasKernelWaiter(on: $0) }, "the commits were still waiting when it completed")

            try holder.finish()
            for commit in commits { _ = try await commit.value }
            for (index, image) in images.enumerated() {
                let reader = try StateStore.open(image, role: .reader)
                #expect(try await reader.get("permall") == [UInt8](repeating: UInt8(index), count: 64 << 10))
            }
            for store in stores { try store.close() }
        }
    }
}
