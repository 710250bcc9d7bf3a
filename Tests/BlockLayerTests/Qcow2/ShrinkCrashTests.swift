// Crash states and injected I/O errors of `blk resize --shrink` (Qcow2Shrink.swift's order):
// every state a power cut during the shrink could leave checks clean or with leaks only (`blk
// check`, and `qemu-img check` on a sample) and reads as before (the old size, the old data) or
// as after (the new size, the surviving range unchanged) — whichever the header's size says —
// and a snapshot reads as it did; every write and flush failing in turn is reported and leaves
// such an image too. A sample of states and steps; BLK_SOAK=1 for all. The file's tail is cut
// after the last flush, outside the journal: states keep the longer file, and the image the
// shrink leaves is checked itself.
import Foundation
import Testing

struct ShrinkCrashScenario: CustomStringConvertible, Sendable {
    var shrink: ShrinkScenario
    /// A snapshot taken by qemu-img after the writes, then more writes over and past the end.
    var snapshot = false

    var description: String { "\(shrink)\(snapshot ? ", a snapshot" : "")" }

    static let all = [
        ShrinkCrashScenario(shrink: ShrinkScenario.all[0]),
        ShrinkCrashScenario(shrink: ShrinkScenario.all[0], snapshot: true),
        ShrinkCrashScenario(shrink: ShrinkScenario.all[1]),
    ]

    /// The image, the guest's disk before and after as raw files, and the snapshot's.
    func makeFixture(_ scratch: Scratch) throws -> (image: String, before: String, after: String, snapshot: String?) {
        let image = scratch.directory + "/shrink.qcow2"
        try shrink.makeImage(image)
        var snapshotRaw: String?
        if snapshot {
            try qemuImg(["snapshot", "-c", "s", image])
            snapshotRaw = image + ".s.raw"
            try qemuImg(["convert", "-O", "raw", image, snapshotRaw!])
            try qemuIO(["-f", "qcow2", "-c", "write -P 0x55 512k 64k", "-c", "write -P 0x56 6M 4k", image])
        }
        let before = image + ".before.raw", after = image + ".after.raw"
        try qemuImg(["convert", "-O", "raw", image, before])
        try qemuImg(["convert", "-O", "raw", image, after]) // sparse, as a copy of 2 GiB would not be
        try qemuImg(["resize", "-q", "-f", "raw", "--shrink", after, "\(shrink.newSize)"])
        return (image, before, after, snapshotRaw)
    }
}

@Suite("blk resize --shrink: crash states and injected errors")
struct ShrinkCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Reads as `before` or as `after`, by the size the header says; the snapshot as it was.
    static func expectReads(_ image: String, _ fixture: (image: String, before: String, after: String, snapshot: String?),
                            newSize: Int, _ context: String) throws {
        let size = try qcow2VirtualSize(image), oldSize = try fileSize(fixture.before)
        #expect(size == newSize || size == oldSize, "\(context): size \(size)")
        let reference = size == newSize ? fixture.after : fixture.before
        let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, reference])
        #expect(compared.status == 0, "\(context): \(compared)")
        if let snapshot = fixture.snapshot {
            // Applied to a copy (qemu-img resizes it to the snapshot's size), it reads whole.
            let applied = image + ".applied"
            try? FileManager.default.removeItem(atPath: applied)
            try FileManager.default.copyItem(atPath: image, toPath: applied)
            try qemuImg(["snapshot", "-a", "s", applied])
            let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", applied, snapshot])
            #expect(compared.status == 0, "\(context): snapshot: \(compared)")
        }
    }

    @Test("every crash state checks clean or leaking and reads as before or as after", arguments: ShrinkCrashScenario.all)
    func crashStates(scenario: ShrinkCrashScenario) throws {
        let fixture = try scenario.makeFixture(scratch)
        let base = try Data(contentsOf: URL(fileURLWithPath: fixture.image))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let shrunk = try blk("resize", "--shrink", "--record-writes", journal, fixture.image, "\(scenario.shrink.newSize)")
        #expect(shrunk.status == 0, "\(shrunk)")
        try expectSound(fixture.image, leaksAllowed: false, "\(scenario), done")
        try Self.expectReads(fixture.image, fixture, newSize: scenario.shrink.newSize, "\(scenario), done")
        // With a snapshot sharing the table the new end falls inside, its copy goes at the end.
        if !scenario.snapshot { #expect(try fileSize(fixture.image) < base.count, "\(scenario): the tail is cut") }
        let probe = scratch.directory + "/crashed.qcow2"
        try CrashStates.check("shrink \(scenario)", before: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)),
                              probe: probe, sample: 24, minimum: 8) { sampled in
            let thorough = Soak.enabled || sampled.position.isMultiple(of: 3) || sampled.isLast
            try expectSound(probe, leaksAllowed: true, "\(scenario), \(sampled.label)", qemu: thorough)
            if thorough { try Self.expectReads(probe, fixture, newSize: scenario.shrink.newSize, "\(scenario), \(sampled.label)") }
        }
    }

    @Test("every write and flush failing in turn is reported and leaves a sound image",
          arguments: [ShrinkCrashScenario.all[1], ShrinkCrashScenario.all[2]])
    func injectedErrors(scenario: ShrinkCrashScenario) throws {
        let fixture = try scenario.makeFixture(scratch)
        let pristine = fixture.image + ".pristine"
        try FileManager.default.copyItem(atPath: fixture.image, toPath: pristine)
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        #expect(try blk("resize", "--shrink", "--record-writes", journal, fixture.image, "\(scenario.shrink.newSize)").status == 0)
        let faults = FaultSteps(journal: try Data(contentsOf: URL(fileURLWithPath: journal)), sample: 12)
        var surfaced = 0
        for step in faults.steps {
            try? FileManager.default.removeItem(atPath: fixture.image)
            try FileManager.default.copyItem(atPath: pristine, toPath: fixture.image)
            let shrunk = try blk("resize", "--shrink", "--inject-fault", step.rule, fixture.image, "\(scenario.shrink.newSize)")
            // The last flush cuts the tail: its failure is a warning, as QEMU's.
            if shrunk.stderr.contains(step.error) {
                surfaced += 1
            } else {
                #expect(shrunk.status == 0 && shrunk.stderr.isEmpty, "\(scenario), \(step.rule): \(shrunk)")
            }
            if step.isPastLast { #expect(shrunk.status == 0, "\(scenario), \(step.rule): past the last, yet \(shrunk)") }
            try expectSound(fixture.image, leaksAllowed: true, "\(scenario), \(step.rule)")
            try Self.expectReads(fixture.image, fixture, newSize: scenario.shrink.newSize, "\(scenario), \(step.rule)")
        }
        #expect(surfaced * 2 >= faults.tried, "\(scenario): only \(surfaced) of \(faults.tried) injected failures surfaced")
        print("shrink \(scenario): \(faults.writes) writes, \(faults.flushes) flushes; \(surfaced) of \(faults.tried) injected failures surfaced")
    }
}
