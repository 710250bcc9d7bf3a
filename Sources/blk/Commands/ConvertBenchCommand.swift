// `blk bench convert`: blk convert beside qemu-img convert on the same source (BlockBench's ConvertBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer

struct ConvertBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert", abstract: "blk convert beside qemu-img convert: the same source, the same output format, alternating.")

    @Option(help: "Size of the source image (half of it data).") var size = ByteCount(1 << 30)
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), size.value > 0 else { throw ValidationError("--rounds takes 1 to 1000, --size a size above 0") }
    }

    func run() throws {
        try bench.measure("convert") { (progress) throws(BlockError) in
            try ConvertBenchmark(directory: bench.dir, sourceBytes: size.value, rounds: rounds, progress: progress).run()
        }
    }
}
