// SideBySide: a blk command and the same qemu-img command on the same images, each a process of
// its own, alternating who goes first; the best wall time of each side is compared
// (Statistics.swift says why the best), and the two outputs must be the same — a benchmark of
// a command that printed something else would measure nothing.
import BlockLayer

package struct SideBySide: Encodable {
    package var scenario: String
    package var blkSeconds: Double
    package var qemuImgSeconds: Double?
    package var ratio: Double?
    /// Whether blk printed exactly what qemu-img printed; nil without qemu-img, or where the
    /// outputs are not compared.
    package var sameOutput: Bool?
    package var target: String

    /// Runs `blk ARGUMENTS` and `qemu-img ARGUMENTS` `rounds` times each; both must exit with
    /// `expectedStatus`.
    package static func measure(_ scenario: String, _ arguments: [String], rounds: Int, expectedStatus: Int32 = 0,
                                target: String = "≥ 1.0×") throws(BlockError) -> SideBySide {
        try measure(scenario, rounds: rounds, target: target) { (executable) throws(BlockError) in
            try BenchProcess.timedRun(executable, arguments, expectedStatus: expectedStatus)
        }
    }

    /// Times `run` `rounds` times with blk's executable and as many with qemu-img's, if it is
    /// installed; `run` prepares what one run needs, untimed, and returns the timed command's
    /// wall time and output. Without `comparingOutputs` (a command that prints nothing) the
    /// outputs are not compared.
    static func measure(_ scenario: String, rounds: Int, target: String = "≥ 1.0×", comparingOutputs: Bool = true,
                        _ run: (_ executable: String) throws(BlockError) -> (seconds: Double, output: [UInt8])) throws(BlockError) -> SideBySide {
        var outputs: (blk: [UInt8], qemuImg: [UInt8]?) = ([], nil)
        let (ours, theirs) = try alternating(rounds: rounds, ours: { () throws(BlockError) in
            let (seconds, output) = try run(BenchPrograms.blk)
            outputs.blk = output
            return seconds
        }, baseline: { () throws(BlockError) -> Double? in
            guard let qemuImg = BenchPrograms.qemuImg else { return nil }
            let (seconds, output) = try run(qemuImg)
            outputs.qemuImg = output
            return seconds
        })
        let qemuSeconds = theirs.isEmpty ? nil : theirs.best
        return SideBySide(scenario: scenario, blkSeconds: ours.best, qemuImgSeconds: qemuSeconds, ratio: qemuSeconds.map { $0 / ours.best },
                          sameOutput: comparingOutputs ? outputs.qemuImg.map { $0 == outputs.blk } : nil, target: target)
    }
}
