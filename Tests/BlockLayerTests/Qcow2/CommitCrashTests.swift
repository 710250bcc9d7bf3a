// Crash states of `blk commit` (ImageCommit.swift's order): the base's writes and the overlay's
// emptying each run journaled (`--record-base-writes`, `--record-writes`), and every state a
// power cut could leave is rebuilt (CrashStates). The base is flushed before the overlay is
// touched, so a crash leaves either a base part-way (the overlay as it was) or the whole base
// with an overlay part-way emptied; each state must check clean or with leaks only, and the
// guest must read through the overlay exactly what it read before the commit. A sample of each
// part's states (BLK_SOAK=1: all of them).
import Foundation
import Testing

@Suite("commit: crash states")
struct CommitCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("every crash state checks clean or with leaks only and reads as before", arguments: CommitChain.all)
    func crashStates(chain: CommitChain) throws {
        let original = scratch.directory + "/original", expected = scratch.directory + "/expected.raw"
        let top = try chain.make(in: original, guestView: expected)
        let baseBefore = try Data(contentsOf: URL(fileURLWithPath: original + "/base"))
        let topBefore = try Data(contentsOf: URL(fileURLWithPath: top))
        let topJournal = scratch.directory + "/top.journal", baseJournal = scratch.directory + "/base.journal"
        let committed = try run(blkPath, ["commit", "--record-writes", topJournal, "--record-base-writes", baseJournal, top])
        #expect(committed.status == 0, "\(chain): \(committed)")
        let baseAfter = try Data(contentsOf: URL(fileURLWithPath: original + "/base"))
        let baseJournalBytes = try Data(contentsOf: URL(fileURLWithPath: baseJournal))
        // Everything written into the base was flushed before the commit went on to the overlay.
        #expect(CrashStates.epochs(baseJournalBytes).last?.isEmpty == true, "\(chain): the base's last writes were not flushed")
        let topJournalBytes = try Data(contentsOf: URL(fileURLWithPath: topJournal))
        let probe = scratch.directory + "/probe"
        try FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)
        // A crash in the base's part: the base part-way under the overlay as it was.
        try topBefore.write(to: URL(fileURLWithPath: probe + "/top.qcow2"))
        try CrashStates.check("commit \(chain), base", before: baseBefore, journal: baseJournalBytes, probe: probe + "/base", sample: 12) { sampled in
            let context = "\(chain), base \(sampled.label)"
            if chain.baseFormat == "qcow2" { try expectSound(probe + "/base", leaksAllowed: true, context, qemu: sampled.position.isMultiple(of: 4)) }
            #expect(try readsAs(probe + "/top.qcow2", expected), "\(context): the guest reads something else")
        }
        // A crash in the overlay's part: the whole base under the overlay part-way emptied.
        try baseAfter.write(to: URL(fileURLWithPath: probe + "/base"))
        try CrashStates.check("commit \(chain), overlay", before: topBefore, journal: topJournalBytes, probe: probe + "/top.qcow2", sample: 12) { sampled in
            let context = "\(chain), overlay \(sampled.label)"
            try expectSound(probe + "/top.qcow2", leaksAllowed: true, context, qemu: sampled.position.isMultiple(of: 4))
            #expect(try readsAs(probe + "/top.qcow2", expected), "\(context): the guest reads something else")
        }
    }
}
