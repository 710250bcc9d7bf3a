// The store under concurrency and crashes, across processes: a writer committing in a loop while
// readers read and verify (no torn or failed read), concurrent puts queueing on the transaction
// lock, and kill -9 of a writer mid-commit, many times (every blob one of the committed versions).
import Foundation
import Glibc
import Testing

@Suite("device-state store: concurrency and kill -9")
struct StateConcurrencyTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("a writer commits in a loop; reader processes read and verify beside it", arguments: ["raw", "qcow2"])
    func readersBesideWriter(format: String) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 4 << 20) : try scratch.qcow2Image(size: "4M")
        let writer = try LineProcess.stateFixture()
        #expect(try writer.request("open \(image) writer") == "ok")
        #expect(try writer.request("put permall 40000 0").hasPrefix("ok"))
        let readers = try (0..<2).map { _ in try LineProcess.stateFixture() }
        for reader in readers { #expect(try reader.request("open \(image) reader") == "ok") }
        // Enough commits that the readers, each a process, get their turns even on a loaded machine.
        let commits = 3000
        writer.send("loop permall 40000 \(commits)")
        var lastSeen: [UInt64] = [0, 0]
        var reads = 0, verifies = 0
        var done = false
        while !done {
            for (index, reader) in readers.enumerated() {
                let answer = try reader.request("get permall")
                #expect(answer.hasPrefix("ok "), "reader \(index): \(answer)")
                let seed = UInt64(answer.dropFirst(3)) ?? 0
                #expect(seed >= lastSeen[index], "a reader went back in time: \(seed) after \(lastSeen[index])")
                lastSeen[index] = seed
                reads += 1
            }
            let verified = try run(blkPath, ["state", "verify", image])
            #expect(verified.status == 0, "\(verified)")
            verifies += 1
            while let line = try? writer.nextLine(within: 0.001) {
                if line == "ok done" { done = true } else { #expect(line.hasPrefix("committed "), "\(line)") }
            }
        }
        #expect(reads > 10 && verifies > 5, "reads \(reads), verifies \(verifies)")
        #expect(try readers[0].request("get permall") == "ok \(commits)")
        for reader in readers { try reader.finish() }
        try writer.finish()
        if format == "qcow2" { #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0) }
    }

    @Test("concurrent puts queue on the transaction lock instead of failing")
    func concurrentPuts() throws {
        let image = try scratch.qcow2Image(size: "8M")
        let payload = scratch.directory + "/payload"
        try scratch.write(payload, Data((0..<100_000).map { _ in UInt8.random(in: 0...255) }))
        // One put holds the transaction lock (via blk hold) while others start and must wait.
        let holder = try LineProcess(blkPath, ["hold", image, "--", "/bin/sh", "-c", "echo held; read line"])
        #expect(try holder.nextLine() == "held")
        let puts = try (0..<4).map { index in
            try Spawned(blkPath, ["state", "put", "--timeout", "60", image, "blob\(index)", payload], stdinPipe: false)
        }
        #expect(try eventually { try hasKernelWaiter(on: image) }, "the puts wait in the kernel")
        try holder.finish()
        for put in puts { #expect(put.wait(within: 60) == 0) }
        let listed = try run(blkPath, ["state", "list", "--json", image])
        let json = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [String: Any]
        #expect((json?["blobs"] as? [[String: Any]])?.count == 4)
        #expect(json?["generation"] as? Int == 5)
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)

        // Without waiting long enough, the one held out says who holds the lock.
        let again = try LineProcess(blkPath, ["hold", image, "--", "/bin/sh", "-c", "echo held; read line"])
        #expect(try again.nextLine() == "held")
        let refused = try run(blkPath, ["state", "put", "--timeout", "0.2", image, "late", payload])
        #expect(refused.status == 75, "\(refused)")
        #expect(refused.stderr.contains("held by pid \(again.pid)"), "\(refused)")
        // A verify does not see a commit half done: it waits for the shared lock, here in vain.
        let busy = try run(blkPath, ["state", "verify", "--timeout", "0.2", image])
        #expect(busy.status == 75 && busy.stderr.contains("timed out waiting for the shared transaction lock"), "\(busy)")
        try again.finish()
        #expect(try run(blkPath, ["state", "verify", image]).status == 0)
    }

    @Test("kill -9 of a writer mid-commit, many times: every blob is a committed version", arguments: ["raw", "qcow2"])
    func killedWriters(format: String) throws {
        let image = format == "raw" ? try scratch.rawImage(bytes: 4 << 20) : try scratch.qcow2Image(size: "4M")
        let key = scratch.directory + "/key"
        try scratch.write(key, Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
        let reader = try LineProcess.stateFixture()
        #expect(try reader.request("open \(image) reader \(key)") == "ok")
        for round in 0..<12 {
            let writer = try LineProcess.stateFixture()
            #expect(try writer.request("open \(image) writer \(key)") == "ok")
            writer.send("loop permall \(30_000 + round * 7919) 0")
            // Let it commit a random number of times, then kill it wherever it is.
            let commits = Int.random(in: 1...40)
            var acknowledged: UInt64 = 0
            for _ in 0..<commits {
                let line = try writer.nextLine()
                acknowledged = UInt64(line.split(separator: " ").last!)!
            }
            writer.kill9()
            // Lines the writer printed before it died still count as acknowledged.
            while let line = try? writer.nextLine(within: 0.3) { acknowledged = UInt64(line.split(separator: " ").last!)! }
            let answer = try reader.request("get permall")
            #expect(answer.hasPrefix("ok "), "round \(round): \(answer)")
            let seed = UInt64(answer.dropFirst(3)) ?? 0
            // The last acknowledged commit, or the one in flight when the writer died.
            #expect(seed == acknowledged || seed == acknowledged + 1, "round \(round): read \(seed), acknowledged \(acknowledged)")
            let verified = try run(blkPath, ["state", "verify", "--key-file", key, image])
            #expect(verified.status == 0, "round \(round): \(verified)")
            if format == "qcow2" {
                let checked = try run("/usr/bin/qemu-img", ["check", image])
                #expect(checked.status == 0 || checked.status == 3, "round \(round): \(checked)")
            }
        }
        try reader.finish()
    }
}
