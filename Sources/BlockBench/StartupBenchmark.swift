// StartupBenchmark: `blk bench startup`. The short verbs VM managers run many times per VM —
// `--version`, `info`, `locks`, `io -c flush` — each as a whole process beside the qemu-img or
// qemu-io command that does the same, on one small qcow2 image, in turn (blk first in even
// rounds, the baseline first in odd ones). A run this short is mostly start-up: loading,
// argument parsing and opening the image. The median of each side is reported, not the best:
// the claim is about the typical run (issue 21), and pairs in turn keep it fair as the machine's
// speed drifts.
import BlockLayer
import Glibc

package struct StartupBenchmark {
    package let directory: String
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.rounds = rounds
        self.progress = progress
    }

    private var image: String { directory + "/blk-bench-startup-\(getpid()).qcow2" }

    /// One verb: blk's median and its baseline's, in seconds.
    package struct Scenario: Encodable {
        package var scenario: String
        package var blkCommand: String
        package var blkSeconds: Double
        /// The qemu-img or qemu-io command beside it; nil when QEMU's tools are not installed.
        package var baselineCommand: String?
        package var baselineSeconds: Double?
        /// blk's median over the baseline's: the issue asks for at most 1.2 on `info` and `io`.
        package var timesBaseline: Double?
        package var target: String
    }

    package func run() throws(BlockError) -> [Scenario] {
        defer { unlink(image) }
        try createBenchImage("qcow2", at: image, ImageCreateOptions(virtualSize: 64 << 20))
        let qemuImg = ("qemu-img", BenchPrograms.qemuImg), qemuIO = ("qemu-io", BenchPrograms.qemuIO)
        // blk locks has no QEMU counterpart; qemu-img info opens the image and reads its state too.
        let plans: [(name: String, blk: [String], baseline: (name: String, path: String?), arguments: [String], target: String)] = [
            ("--version", ["--version"], qemuImg, ["--version"], "none: the floor of any command"),
            ("info", ["info", image], qemuImg, ["info", image], "≤ 1.2×"),
            ("locks", ["locks", image], qemuImg, ["info", image], "none: qemu-img info beside it"),
            ("io -c flush", ["io", "-c", "flush", image], qemuIO, ["-c", "flush", image], "≤ 1.2×"),
        ]
        var results: [Scenario] = []
        for (number, plan) in plans.enumerated() {
            progress.update(Double(number) / Double(plans.count), plan.name)
            let (ours, theirs) = try alternating(
                rounds: rounds, ours: { () throws(BlockError) in try BenchProcess.timedRun(BenchPrograms.blk, plan.blk).seconds },
                baseline: { () throws(BlockError) in try plan.baseline.path.map { path throws(BlockError) in try BenchProcess.timedRun(path, plan.arguments).seconds } })
            let baselineSeconds = theirs.isEmpty ? nil : theirs.median
            results.append(Scenario(scenario: plan.name, blkCommand: (["blk"] + plan.blk).joined(separator: " "), blkSeconds: ours.median,
                                    baselineCommand: plan.baseline.path.map { _ in ([plan.baseline.name] + plan.arguments).joined(separator: " ") },
                                    baselineSeconds: baselineSeconds, timesBaseline: baselineSeconds.map { ours.median / $0 },
                                    target: plan.target))
        }
        progress.finish()
        return results
    }
}
