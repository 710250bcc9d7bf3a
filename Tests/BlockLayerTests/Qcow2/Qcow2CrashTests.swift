// Crash states of qcow2 allocating writes (Qcow2WriteScenarios.swift): each write runs journaled
// (`blk io --record-writes`), every state a power cut could leave is rebuilt (CrashStates), and
// each must check clean or with leaks only (`blk check`: 0 or 3, never 2), QEMU's `qemu-img
// check` agreeing on a sample — the write ordering of Qcow2Writer.swift (data, refcounts, flush,
// L2, flush, L1) under test. BLK_SOAK=1 checks every state instead of a sample of 80.
import Foundation
import Testing

@Suite("qcow2: crash states of allocating writes")
struct Qcow2CrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("every crash state checks clean or with leaks only", arguments: Qcow2WriteScenario.all)
    func allocatingWrites(scenario: Qcow2WriteScenario) throws {
        let image = scratch.directory + "/image.qcow2"
        try scenario.makeImage(at: image)
        let base = try Data(contentsOf: URL(fileURLWithPath: image))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let wrote = try run(blkPath, ["io", "-f", "qcow2", "--record-writes", journal, image] + scenario.ioArguments)
        #expect(wrote.status == 0, "\(wrote)")
        // Every state through blk (a bounded sample when there are very many), a few through QEMU.
        let probe = scratch.directory + "/crashed.qcow2"
        try CrashStates.check("qcow2 \(scenario.name)", before: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)),
                              probe: probe, sample: 80) { sampled in
            try expectSound(probe, leaksAllowed: true, "\(scenario.name), \(sampled.label)", qemu: sampled.position.isMultiple(of: 10) || sampled.isLast)
        }
    }
}
