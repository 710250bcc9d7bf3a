// `blk bench map`: blk map beside qemu-img map on a sparse qcow2 image with scattered data (BlockBench's MapBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer

struct MapBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "map", abstract: "blk map beside qemu-img map: the same sparse qcow2 image with scattered data, alternating.")

    @Option(help: "The image's virtual size.") var size = ByteCount(1 << 40)
    @Option(help: "64 KiB writes at random offsets: the data the map shows.") var writes = 2000
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), (1...1_000_000).contains(writes), size.value >= 1 << 16 else {
            throw ValidationError("--rounds takes 1 to 1000, --writes 1 to 1000000, --size 64k or more")
        }
    }

    func run() throws {
        try bench.measure("map") { (progress) throws(BlockError) in
            try MapBenchmark(directory: bench.dir, virtualBytes: size.value, writes: writes, rounds: rounds, progress: progress).run()
        }
    }
}
