// CrashStates.check: what every crash-state suite does with a recorded journal — rebuild the
// states over the file as it was, take a sample of them (all with BLK_SOAK=1), write each to a
// probe file and check it — so that a suite says only what it records and what a state must be;
// and the check every state (and every image a failed operation leaves) gets: `expectSound`.
import Foundation
import Testing

extension CrashStates {
    /// One sampled state, written to the probe file when `body` sees it.
    struct Sampled {
        var state: State
        /// Its place in the sample, and whether it is the last (the completed operation).
        var position: Int
        var isLast: Bool
        var label: String { state.label }
    }

    /// The states `journal` (as `--record-writes` wrote it) makes over `before`: at least
    /// `minimum` of them are expected; `sample` of them (every one with BLK_SOAK=1) are written in
    /// turn to `probe` and handed to `body`, which checks the file there. Prints how many under
    /// `name`.
    static func check(_ name: String, before: Data, journal: Data, probe: String, sample: Int, minimum: Int = 4,
                      _ body: (Sampled) throws -> Void) throws {
        let states = CrashStates(base: before, journal: journal)
        #expect(states.count >= minimum, "\(name): \(states.count) states")
        let checked = states.sample(Soak.enabled ? states.count : sample)
        for (position, state) in checked.enumerated() {
            try states.image(state).write(to: URL(fileURLWithPath: probe))
            try body(Sampled(state: state, position: position, isLast: position == checked.count - 1))
        }
        print("\(name): \(states.count) crash states, \(checked.count) checked")
    }

}

/// `qemu-img check` and `blk check` of a qcow2 image: clean, or (with `leaksAllowed`) leaks only.
func expectSound(_ path: String, leaksAllowed: Bool, _ context: String, qemu: Bool = true) throws {
    let allowed: Set<Int32> = leaksAllowed ? [0, 3] : [0]
    let blkCheck = try run(blkPath, ["check", "-f", "qcow2", path])
    #expect(allowed.contains(blkCheck.status), "\(context): blk check \(path): \(blkCheck)")
    if qemu {
        let qemuCheck = try run("/usr/bin/qemu-img", ["check", "-f", "qcow2", path])
        #expect(allowed.contains(qemuCheck.status), "\(context): qemu-img check \(path): \(qemuCheck)")
    }
}
