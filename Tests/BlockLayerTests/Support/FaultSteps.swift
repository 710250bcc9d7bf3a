// FaultSteps: the --inject-fault rules that fail each write and each flush an operation's
// journal recorded, in turn, for the suites that check an operation reports every failure and
// leaves a sound image (AmendCrashTests, ShrinkCrashTests).
import Foundation

struct FaultSteps {
    struct Step {
        var rule: String
        /// One past the last write or flush: nothing fails, and the operation must succeed.
        var isPastLast: Bool
        /// What the failing request's error says.
        var error: String
    }

    let writes: Int
    let flushes: Int
    let steps: [Step]

    /// The rules for `journal` (as `--record-writes` wrote it): every write and flush when there
    /// are at most `sample` of a kind or with BLK_SOAK=1, else `sample` of them spread evenly;
    /// each kind also gets the step past its last. Every second step fails with ENOSPC, the
    /// others with EIO.
    init(journal: Data, sample: Int) {
        let epochs = CrashStates.epochs(journal)
        writes = epochs.map(\.count).reduce(0, +)
        flushes = epochs.count - 1
        var steps: [Step] = []
        for (operation, count) in [("flush", flushes), ("write", writes)] {
            let chosen = Soak.enabled || count <= sample ? Array(1...count + 1) : (0..<sample).map { 1 + $0 * count / sample } + [count + 1]
            for step in chosen {
                let full = step.isMultiple(of: 2)
                steps.append(Step(rule: "\(operation):\(step)" + (full ? ":enospc" : ""), isPastLast: step == count + 1,
                                  error: full ? "No space left on device" : "Input/output error"))
            }
        }
        self.steps = steps
    }

    /// The steps at which a request fails.
    var tried: Int { steps.filter { !$0.isPastLast }.count }
}
