// `blk bench compare`: blk compare beside qemu-img compare on pairs of identical images (BlockBench's CompareBenchmark).
import ArgumentParser
import BlockBench
import BlockLayer

struct CompareBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare", abstract: "blk compare beside qemu-img compare: the same pairs of identical images, alternating.")

    @OptionGroup var options: ImageBenchOptions

    func run() throws {
        try options.bench.measure("compare") { (progress) throws(BlockError) in
            try CompareBenchmark(directory: options.bench.dir, imageBytes: options.size.value, rounds: options.rounds, progress: progress).run()
        }
    }
}
