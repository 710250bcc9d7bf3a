// `blk bench commit`: blk commit beside qemu-img commit on fresh copies of the same overlay and
// base (BlockBench's CommitBenchmark).
import ArgumentParser
import BlockBench
import BlockLayer

struct CommitBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit", abstract: "blk commit beside qemu-img commit: fresh copies of the same overlay and base, alternating.")

    @OptionGroup var options: ImageBenchOptions

    func run() throws {
        try options.bench.measure("commit") { (progress) throws(BlockError) in
            [try CommitBenchmark(directory: options.bench.dir, overlayBytes: options.size.value, rounds: options.rounds, progress: progress).run()]
        }
    }
}
