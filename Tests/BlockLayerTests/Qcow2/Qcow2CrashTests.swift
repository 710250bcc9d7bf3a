// Crash states of qcow2 allocating writes: each write runs journaled (`blk io --record-writes`),
// every state a power cut could leave is rebuilt (CrashStates), and each must check clean or with
// leaks only (`blk check`: 0 or 3, never 2), QEMU's `qemu-img check` agreeing on a sample — the
// write ordering of Qcow2Writer.swift (data, refcounts, flush, L2, flush, L1) under test.
import Foundation
import Testing

@Suite("qcow2: crash states of allocating writes")
struct Qcow2CrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    static let scenarios: [(name: String, create: [String], setup: [String], writes: [String])] = [
        ("new L2 tables", ["-o", "cluster_size=65536"], [], ["write -P 0x11 0 64k", "write -P 0x12 1G 96k", "flush"]),
        ("refcount block allocation", ["-o", "cluster_size=512"], [], ["write -P 0x21 0 300k", "flush"]),
        ("refcount-table growth", ["-o", "cluster_size=512"], [], ["write -P 0x31 0 2M", "write -P 0x32 8M 2M", "flush"]),
        ("copy-on-write over a snapshot", ["-o", "cluster_size=65536"], ["write -P 0x41 0 256k"],
         ["write -P 0x42 4k 8k", "write -P 0x43 128k 64k", "flush"]),
    ]

    @Test("every crash state checks clean or with leaks only", arguments: 0..<scenarios.count)
    func allocatingWrites(scenario index: Int) throws {
        let scenario = Self.scenarios[index]
        let image = scratch.directory + "/image.qcow2"
        #expect(try run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2"] + scenario.create + [image, "2G"]).status == 0)
        if !scenario.setup.isEmpty {
            #expect(try run(blkPath, ["io", "-f", "qcow2", image] + scenario.setup.flatMap { ["-c", $0] }).status == 0)
            #expect(try run("/usr/bin/qemu-img", ["snapshot", "-c", "before", image]).status == 0)
        }
        let base = try Data(contentsOf: URL(fileURLWithPath: image))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let wrote = try run(blkPath, ["io", "-f", "qcow2", "--record-writes", journal, image] + scenario.writes.flatMap { ["-c", $0] })
        #expect(wrote.status == 0, "\(wrote)")
        let states = CrashStates.enumerate(base: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)))
        #expect(states.count >= 4, "\(scenario.name): \(states.count) states")
        // Every state through blk (a bounded sample when there are very many), a few through QEMU.
        let checked = CrashStates.sample(states, count: 80)
        let probe = scratch.directory + "/crashed.qcow2"
        for (position, (label, state)) in checked.enumerated() {
            try state.write(to: URL(fileURLWithPath: probe))
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
