// Crash states and injected I/O errors of `blk amend` (the orders of Qcow2RefcountOrder.swift,
// Qcow2VersionChange.swift and Qcow2Amend.swift): every state a power cut during the amend could
// leave checks clean or with leaks only (`blk check`, and `qemu-img check` on a sample) and reads
// the guest data the image had (`qemu-img compare`); every write and flush failing in turn is
// reported and leaves such an image too. A sample of states and steps; BLK_SOAK=1 for all.
import Foundation
import Testing

struct AmendScenario: CustomStringConvertible, Sendable {
    var options: String
    var clusterSize = "64k"
    var backing = false
    /// Options qemu-img applies first, to start from them.
    var setup: String?

    var description: String { "\(options) (\(clusterSize) clusters\(backing ? ", backing" : "")\(setup.map { ", from \($0)" } ?? ""))" }

    static let all = [
        // 512-byte clusters: hundreds of new blocks and a table of several clusters.
        AmendScenario(options: "refcount_bits=64", clusterSize: "512"),
        AmendScenario(options: "refcount_bits=1"),
        AmendScenario(options: "compat=0.10", backing: true),
        AmendScenario(options: "compat=0.10"),
        AmendScenario(options: "compat=1.1,refcount_bits=8", backing: true, setup: "compat=0.10"),
    ]

    func makeImage(_ scratch: Scratch) throws -> AmendFixture {
        let fixture = try AmendFixture(scratch, backing: backing, clusterSize: clusterSize)
        if let setup { try qemuImg(["amend", "-o", setup, fixture.image]) }
        return fixture
    }
}

@Suite("blk amend: crash states and injected errors")
struct AmendCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("every crash state checks clean or leaking and reads as before", arguments: AmendScenario.all)
    func crashStates(scenario: AmendScenario) throws {
        let fixture = try scenario.makeImage(scratch)
        let base = try Data(contentsOf: URL(fileURLWithPath: fixture.image))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let amended = try blk("amend", "--record-writes", journal, "-o", scenario.options, fixture.image)
        #expect(amended.status == 0, "\(amended)")
        let probe = scratch.directory + "/crashed.qcow2"
        try CrashStates.check("amend \(scenario)", before: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)),
                              probe: probe, sample: 20) { sampled in
            let thorough = Soak.enabled || sampled.position.isMultiple(of: 4) || sampled.isLast
            try expectSound(probe, leaksAllowed: true, "\(scenario), \(sampled.label)", qemu: thorough)
            if thorough {
                let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", probe, fixture.original])
                #expect(compared.status == 0, "\(scenario), \(sampled.label): \(compared)")
            }
        }
    }

    @Test("every write and flush failing in turn is reported and leaves a sound image",
          arguments: [AmendScenario.all[0], AmendScenario.all[2]])
    func injectedErrors(scenario: AmendScenario) throws {
        let fixture = try scenario.makeImage(scratch)
        let pristine = fixture.image + ".before"
        try FileManager.default.copyItem(atPath: fixture.image, toPath: pristine)
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        #expect(try blk("amend", "--record-writes", journal, "-o", scenario.options, fixture.image).status == 0)
        let faults = FaultSteps(journal: try Data(contentsOf: URL(fileURLWithPath: journal)), sample: 8)
        var surfaced = 0
        for step in faults.steps {
            try? FileManager.default.removeItem(atPath: fixture.image)
            try FileManager.default.copyItem(atPath: pristine, toPath: fixture.image)
            let amended = try blk("amend", "--inject-fault", step.rule, "-o", scenario.options, fixture.image)
            if amended.status != 0 {
                #expect(amended.stderr.contains(step.error), "\(scenario), \(step.rule): \(amended)")
                surfaced += 1
            }
            if step.isPastLast { #expect(amended.status == 0, "\(scenario), \(step.rule): past the last, yet \(amended)") }
            try expectSound(fixture.image, leaksAllowed: true, "\(scenario), \(step.rule)")
            let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", fixture.image, fixture.original])
            #expect(compared.status == 0, "\(scenario), \(step.rule): \(compared)")
        }
        #expect(surfaced * 2 >= faults.tried, "\(scenario): only \(surfaced) of \(faults.tried) injected failures surfaced")
        print("amend \(scenario): \(faults.writes) writes, \(faults.flushes) flushes; \(surfaced) injected failures surfaced")
    }
}
