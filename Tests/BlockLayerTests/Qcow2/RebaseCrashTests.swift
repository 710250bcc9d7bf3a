// Crash states and injected faults of `blk rebase` (Qcow2HeaderUpdate.swift's order, and the
// copy of ImageRebase before it). Every state a power cut could leave (CrashStates, a sample of
// 16 unless BLK_SOAK=1) must check clean or with leaks only, name the old or the new backing
// file, and read as before or as after; every write and flush failing in turn must fail the
// rebase and leave such an image too.
import Foundation
import Testing

struct RebaseScenario: CustomTestStringConvertible, Sendable {
    var name: String
    var arguments: [String]
    /// The overlay is made standalone (no backing file) before the rebase.
    var standalone = false
    var testDescription: String { name }

    static let all = [
        RebaseScenario(name: "safe, onto a base that differs", arguments: ["-b", "new.qcow2", "-F", "qcow2"]),
        RebaseScenario(name: "safe, standing alone (-b \"\")", arguments: ["-b", ""]),
        RebaseScenario(name: "-u, the name moved past QEMU's extensions", arguments: ["-u", "-b", "new.qcow2", "-F", "raw"]),
        RebaseScenario(name: "-u, a standalone image gains a backing file", arguments: ["-u", "-b", "new.qcow2", "-F", "qcow2"], standalone: true),
    ]
}

@Suite("blk rebase: crash states and injected faults")
struct RebaseCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// The two images a crash or a failure may leave: the overlay before, and the result of the
    /// rebase done without faults, with the backing file and format each names.
    struct Outcomes {
        var before: String
        var after: String
        var beforeBacking: (file: String?, format: String?)
        var afterBacking: (file: String?, format: String?)
    }

    private func prepare(_ scenario: RebaseScenario) throws -> (chain: RebaseChain, outcomes: Outcomes) {
        let chain = try RebaseChain(scratch)
        if scenario.standalone { try qemuImg(["rebase", "-b", "", chain.overlay]) }
        let before = try chain.copy("before.qcow2"), after = try chain.copy("after.qcow2")
        let rebased = try run(blkPath, ["rebase"] + scenario.arguments + [after])
        #expect(rebased.status == 0, "\(rebased)")
        return (chain, Outcomes(before: before, after: after, beforeBacking: try backingOf(before), afterBacking: try backingOf(after)))
    }

    /// What a state (or a failed rebase) left at `image`: clean or leaking (by `qemu-img check`
    /// too with `qemu`), naming the backing file of the before or the after, and reading as that
    /// one.
    private func expectBeforeOrAfter(_ image: String, _ outcomes: Outcomes, _ label: String, qemu: Bool) throws {
        try expectSound(image, leaksAllowed: true, label, qemu: qemu)
        let backing = try backingOf(image)
        let isBefore = backing.file == outcomes.beforeBacking.file && backing.format == outcomes.beforeBacking.format
        let isAfter = backing.file == outcomes.afterBacking.file && backing.format == outcomes.afterBacking.format
        #expect(isBefore || isAfter, "\(label): backing \(backing)")
        let reference = isBefore ? outcomes.before : outcomes.after
        #expect(try sameGuestView(image, reference), "\(label): does not read as the image it names the backing file of")
    }

    @Test("every crash state checks clean or leaks, and reads as before or after", arguments: RebaseScenario.all)
    func crashStates(scenario: RebaseScenario) throws {
        let (chain, outcomes) = try prepare(scenario)
        let image = try chain.copy("journaled.qcow2")
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let rebased = try run(blkPath, ["rebase", "--record-writes", journal] + scenario.arguments + [image])
        #expect(rebased.status == 0, "\(rebased)")
        let probe = scratch.directory + "/crashed.qcow2"
        try CrashStates.check("rebase \(scenario.name)", before: try Data(contentsOf: URL(fileURLWithPath: outcomes.before)),
                              journal: try Data(contentsOf: URL(fileURLWithPath: journal)), probe: probe, sample: 16, minimum: 3) { sampled in
            try expectBeforeOrAfter(probe, outcomes, "\(scenario.name), \(sampled.label)", qemu: sampled.position.isMultiple(of: 10))
        }
    }

    @Test("every write and flush failing in turn fails the rebase and leaves a sound image",
          arguments: RebaseScenario.all.filter { !$0.arguments.contains("-u") }.prefix(1))
    func injectedFaults(scenario: RebaseScenario) throws {
        let (chain, outcomes) = try prepare(scenario)
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        _ = try run(blkPath, ["rebase", "--record-writes", journal] + scenario.arguments + [try chain.copy("journaled.qcow2")])
        let epochs = CrashStates.epochs(try Data(contentsOf: URL(fileURLWithPath: journal)))
        let image = scratch.directory + "/faulty.qcow2"
        // The last flush is the driver's as it is released, after `close` made everything
        // durable: its failure has nothing left to lose, and is not reported.
        for (operation, count) in [("write", epochs.map(\.count).reduce(0, +)), ("flush", epochs.count - 2)] {
            #expect(count > 1, "\(operation): \(count)")
            // Every step, or an even sample of 12 (BLK_SOAK=1: every one), and one past the last.
            let steps = Soak.enabled || count <= 12 ? Array(1...count + 1) : (0..<12).map { 1 + $0 * count / 12 } + [count + 1]
            for step in steps {
                let rule = "\(operation):\(step)" + (step.isMultiple(of: 2) ? ":enospc" : "")
                try? FileManager.default.removeItem(atPath: image)
                try FileManager.default.copyItem(atPath: outcomes.before, toPath: image)
                let rebased = try run(blkPath, ["rebase", "--inject-fault", rule] + scenario.arguments + [image])
                if step <= count {
                    #expect(rebased.status != 0, "\(rule): \(rebased)")
                    #expect(rebased.stderr.contains(step.isMultiple(of: 2) ? "No space left on device" : "Input/output error"), "\(rule): \(rebased)")
                } else {
                    #expect(rebased.status == 0, "\(rule), past the last \(operation): \(rebased)")
                }
                try expectBeforeOrAfter(image, outcomes, "\(scenario.name), \(rule)", qemu: true)
            }
        }
    }
}
