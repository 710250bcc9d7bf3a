// Error paths of qcow2 allocating writes (Qcow2WriteScenarios.swift), by fault injection
// (`blk io --inject-fault`): an EIO or ENOSPC at every write, flush and read of each scenario
// — counted, and by named step — must surface as a failed `blk io` (never exit 0), and leave an
// image that both checkers pass (leaks allowed) with the data written before intact.
import Foundation
import Testing

@Suite("qcow2: injected I/O errors in allocating writes")
struct Qcow2FaultTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Data outside every scenario's writes, written before them: it must survive each failure.
    static let keep = ["write -P 0x99 1536M 64k"]
    static let keepCheck = "read -P 0x99 1536M 64k"

    @Test("every step failing in turn surfaces as an error and leaves a sound image", arguments: Qcow2WriteScenario.all)
    func failingSteps(scenario: Qcow2WriteScenario) throws {
        let base = scratch.directory + "/base.qcow2"
        try scenario.makeImage(at: base)
        #expect(try run(blkPath, ["io", "-f", "qcow2", base] + Self.keep.flatMap { ["-c", $0] }).status == 0)
        // How many writes and flushes the scenario makes, from its write journal.
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let image = scratch.directory + "/image.qcow2"
        try FileManager.default.copyItem(atPath: base, toPath: image)
        #expect(try run(blkPath, ["io", "-f", "qcow2", "--record-writes", journal, image] + scenario.ioArguments).status == 0)
        let epochs = CrashStates.epochs(try Data(contentsOf: URL(fileURLWithPath: journal)))
        let counts = ["write": epochs.map(\.count).reduce(0, +), "flush": epochs.count - 1, "read": 12]

        var covered = 0
        for (operation, count) in counts.sorted(by: { $0.key < $1.key }) {
            // Every step, or an even sample of 30 of them for the scenario with hundreds (BLK_SOAK=1: every one).
            let steps = Soak.enabled || count <= 30 ? Array(1...count + 1) : (0..<30).map { 1 + $0 * count / 30 } + [count + 1]
            for step in steps {
                let rule = "\(operation):\(step)" + (step.isMultiple(of: 2) ? ":enospc" : "")
                let failed = try failOnce(rule, scenario: scenario, base: base, image: image)
                if failed { covered += 1 }
                if step == count + 1 && operation != "read" {
                    #expect(!failed, "\(scenario.name), \(rule): past the last \(operation), yet it failed")
                }
            }
        }
        for event in scenario.events {
            for rule in ["write@\(event):1", "flush@\(event):1:enospc"] where rule.hasPrefix("write") || event != "write_aio" {
                let failed = try failOnce(rule, scenario: scenario, base: base, image: image)
                if rule.hasPrefix("write") { #expect(failed, "\(scenario.name): no write during \(event)") }
                if failed { covered += 1 }
            }
        }
        print("qcow2 \(scenario.name): \(counts["write"]!) writes, \(counts["flush"]!) flushes; \(covered) injected failures surfaced")
    }

    /// Runs the scenario on a fresh copy of `base` with one fault rule; checks what it left.
    private func failOnce(_ rule: String, scenario: Qcow2WriteScenario, base: String, image: String) throws -> Bool {
        try? FileManager.default.removeItem(atPath: image)
        try FileManager.default.copyItem(atPath: base, toPath: image)
        let wrote = try run(blkPath, ["io", "-f", "qcow2", "--inject-fault", rule, image] + scenario.ioArguments)
        let failed = wrote.status != 0
        if failed {
            #expect(wrote.stderr.contains(rule.hasSuffix("enospc") ? "No space left on device" : "Input/output error"),
                    "\(scenario.name), \(rule): \(wrote)")
        } else {
            // No step failed, so every write must be there.
            let last = scenario.writes.last { $0.hasPrefix("write") }!.split(separator: " ")
            let read = "read -P \(last[last.count - 3]) \(last[last.count - 2]) \(last[last.count - 1])"
            #expect(try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", read, image]).stdout.contains("read "), "\(scenario.name), \(rule)")
        }
        let blkCheck = try run(blkPath, ["check", "-f", "qcow2", image])
        #expect(blkCheck.status == 0 || blkCheck.status == 3, "\(scenario.name), \(rule): \(blkCheck)")
        let qemuCheck = try run("/usr/bin/qemu-img", ["check", "-f", "qcow2", image])
        #expect(qemuCheck.status == 0 || qemuCheck.status == 3, "\(scenario.name), \(rule): \(qemuCheck)")
        let kept = try run("/usr/bin/qemu-io", ["-r", "-f", "qcow2", "-c", Self.keepCheck, image])
        #expect(!kept.stdout.contains("Pattern verification failed") && kept.status == 0, "\(scenario.name), \(rule): \(kept)")
        return failed
    }
}
