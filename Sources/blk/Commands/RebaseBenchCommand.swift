// `blk bench rebase`: a safe blk rebase beside qemu-img rebase on fresh copies of one overlay (BlockBench's RebaseBenchmark).
import ArgumentParser
import BlockBench
import BlockLayer

struct RebaseBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebase",
        abstract: "blk rebase beside qemu-img rebase: an overlay moved onto a base that differs in 10 % of its clusters (--size: each base), alternating.")

    @OptionGroup var options: ImageBenchOptions

    func run() throws {
        try options.bench.measure("rebase") { (progress) throws(BlockError) in
            [try RebaseBenchmark(directory: options.bench.dir, baseBytes: options.size.value, rounds: options.rounds, progress: progress).run()]
        }
    }
}
