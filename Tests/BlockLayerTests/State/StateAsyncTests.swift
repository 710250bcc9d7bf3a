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
