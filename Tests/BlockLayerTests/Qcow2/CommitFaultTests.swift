// Error paths of `blk commit`, by fault injection: every write and flush into the base
// (`--inject-base-fault`) and every one of the overlay's emptying (`--inject-fault`) fails in
// turn, EIO and ENOSPC alternating. Each must surface as a failed commit (never exit 0) that
// leaves both images checking clean or with leaks only, and the guest reading through the
// overlay what it read before. How many there are comes from a journaled run's write journals;
// the last flush of each image, made as its node is released after the work, is reported to
// no one, and only the images' soundness is checked after it fails.
import Foundation
import Testing

@Suite("commit: injected I/O errors")
struct CommitFaultTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("every write and flush failing in turn surfaces as an error and leaves sound images", arguments: [CommitChain.all[0], CommitChain.all[1]])
    func failingSteps(chain: CommitChain) throws {
        let original = scratch.directory + "/original", expected = scratch.directory + "/expected.raw"
        let top = try chain.make(in: original, guestView: expected)
        let journaled = scratch.directory + "/journaled"
        try chain.copy(from: original, to: journaled)
        let topJournal = scratch.directory + "/top.journal", baseJournal = scratch.directory + "/base.journal"
        #expect(try run(blkPath, ["commit", "--record-writes", topJournal, "--record-base-writes", baseJournal, journaled + "/top.qcow2"]).status == 0)

        var surfaced = 0
        for (option, journal) in [("--inject-base-fault", baseJournal), ("--inject-fault", topJournal)] {
            let epochs = CrashStates.epochs(try Data(contentsOf: URL(fileURLWithPath: journal)))
            for (operation, count) in [("write", epochs.map(\.count).reduce(0, +)), ("flush", epochs.count - 1)] {
                for step in 1...count + 1 {
                    let rule = "\(operation):\(step)" + (step.isMultiple(of: 2) ? ":enospc" : "")
                    let folder = scratch.directory + "/run"
                    try? FileManager.default.removeItem(atPath: folder)
                    try chain.copy(from: original, to: folder)
                    let committed = try run(blkPath, ["commit", option, rule, folder + "/top.qcow2"])
                    let context = "\(chain), \(option) \(rule)"
                    // The last flush is the one a qcow2 node makes as it goes away, after the
                    // command's own work (and flushes) ended: nothing is left to report it to.
                    let closing = operation == "flush" && step == count
                    if step <= count && !closing {
                        #expect(committed.status != 0 && !committed.stdout.contains("Image committed."), "\(context): \(committed)")
                        #expect(committed.stderr.contains(step.isMultiple(of: 2) ? "No space left on device" : "Input/output error"),
                                "\(context): \(committed)")
                        surfaced += 1
                    } else if step > count {
                        #expect(committed.status == 0, "\(context): past the last \(operation), yet it failed: \(committed)")
                    }
                    if chain.baseFormat == "qcow2" { try expectSound(folder + "/base", leaksAllowed: true, context, qemu: step == 1) }
                    try expectSound(folder + "/top.qcow2", leaksAllowed: true, context, qemu: step == 1)
                    #expect(try readsAs(folder + "/top.qcow2", expected), "\(context): the guest reads something else")
                }
            }
        }
        print("commit \(chain): \(surfaced) injected failures surfaced")
    }
}
