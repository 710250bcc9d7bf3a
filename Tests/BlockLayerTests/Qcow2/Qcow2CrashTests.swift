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
        let states = CrashStates(base: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)))
        #expect(states.count >= 4, "\(scenario.name): \(states.count) states")
        // Every state through blk (a bounded sample when there are very many), a few through QEMU.
        let checked = states.sample(Soak.enabled ? states.count : 80)
        let probe = scratch.directory + "/crashed.qcow2"
        for (position, state) in checked.enumerated() {
            let label = state.label
            try states.image(state).write(to: URL(fileURLWithPath: probe))
            let blkCheck = try run(blkPath, ["check", "-f", "qcow2", probe])
            #expect(blkCheck.status == 0 || blkCheck.status == 3, "\(scenario.name), \(label): \(blkCheck)")
            if position.isMultiple(of: 10) || position == checked.count - 1 {
                let qemuCheck = try run("/usr/bin/qemu-img", ["check", "-f", "qcow2", probe])
                #expect(qemuCheck.status == 0 || qemuCheck.status == 3, "\(scenario.name), \(label): \(qemuCheck)")
            }
        }
        print("qcow2 \(scenario.name): \(states.count) crash states, \(checked.count) checked")
    }
}
