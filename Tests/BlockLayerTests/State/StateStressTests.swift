// Many processes on one store (issue 6's stress, for the state store): eight incrementers each
// read a counter and commit it plus one under the exclusive transaction lock, while readers check
// it under the shared lock, and some incrementers are killed with SIGKILL mid-run. No update may
// be lost: every acknowledged value is distinct, the final counter is at least the largest one
// and at most the acknowledged total plus one in-flight commit per killed process, and readers
// never see the counter go back. BLK_SOAK=1 runs 16 times as many increments.
import Foundation
import Glibc
import Testing

@Suite("device-state store: many processes, kill -9")
struct StateStressTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("8 incrementers, readers beside them, 3 killed: no lost update")
    func incrementers() throws {
        let image = try scratch.qcow2Image(size: "4M")
        let incrementsEach = Soak.enabled ? 400 : 25
        var workers: [LineProcess] = []
        for _ in 0..<8 { workers.append(try LineProcess.stateFixture()) }
        for worker in workers { worker.send("increment \(image) \(incrementsEach)") }
        var acknowledged: [[Int]] = Array(repeating: [], count: workers.count)
        var finished = Set<Int>(), killed = Set<Int>()
        var lastRead = 0, reads = 0
        let deadline = Date().addingTimeInterval(Soak.enabled ? 3600 : 240)
        // Reads go on after the last incrementer ends until there have been a few: on a loaded
        // machine the incrementers may finish within a handful of reads.
        while (finished.count + killed.count < workers.count || reads <= 5) && Date() < deadline {
            for (index, worker) in workers.enumerated() where !finished.contains(index) && !killed.contains(index) {
                while let line = try? worker.nextLine(within: 0.001) {
                    if line == "ok done" { finished.insert(index); break }
                    #expect(line.hasPrefix("incremented "), "worker \(index): \(line)")
                    acknowledged[index].append(Int(line.split(separator: " ")[1]) ?? -1)
                }
                // Kill three workers once each has committed a few times.
                if index < 3 && acknowledged[index].count >= 3 + index * 4 && !finished.contains(index) {
                    worker.kill9()
                    killed.insert(index)
                    while let line = try? worker.nextLine(within: 0.2) {
                        if let value = Int(line.split(separator: " ").last ?? "") { acknowledged[index].append(value) }
                    }
                }
            }
            let read = try run(blkPath, ["state", "get", "--timeout", "60", image, "counter", "-"])
            if read.status == 0, let value = Int(read.stdout) {
                #expect(value >= lastRead, "a reader saw the counter go back: \(value) after \(lastRead)")
                lastRead = value
                reads += 1
            } else {
                #expect(read.status == 66, "\(read)")
            }
        }
        #expect(finished.count + killed.count == workers.count, "the run ended in time")
        for (index, worker) in workers.enumerated() where !killed.contains(index) { try worker.finish() }

        let values = acknowledged.flatMap { $0 }
        #expect(Set(values).count == values.count, "two commits acknowledged the same value: an update was lost")
        let final = Int(try run(blkPath, ["state", "get", image, "counter", "-"]).stdout) ?? -1
        #expect(final >= values.max() ?? 0)
        #expect(final <= values.count + killed.count, "final \(final), acknowledged \(values.count), killed \(killed.count)")
        #expect(final >= (workers.count - killed.count) * incrementsEach)
        #expect(reads > 5)
        #expect(try run(blkPath, ["state", "verify", image]).status == 0)
        print("state stress: \(values.count) acknowledged updates, final counter \(final), \(killed.count) killed, \(reads) reads, 0 lost")
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0 || checked.status == 3, "\(checked)")
    }
}
