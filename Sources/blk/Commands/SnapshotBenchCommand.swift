// `blk bench snapshot`: blk snapshot -c beside qemu-img snapshot -c on identical images (BlockBench's SnapshotBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer

struct SnapshotBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "blk snapshot -c beside qemu-img snapshot -c: identical qcow2 images, 40 % allocated, alternating.")

    @Option(help: "Virtual size of the images; the first 40 % is allocated with random data.") var size = ByteCount(10 << 30)
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), size.value >= 1 << 20 else { throw ValidationError("--rounds takes 1 to 1000, --size a size of 1M or more") }
    }

    func run() throws {
        try bench.measure("snapshot", jsonObject: true) { (progress) throws(BlockError) in
            [try SnapshotBenchmark(directory: bench.dir, virtualBytes: size.value, rounds: rounds, progress: progress).run()]
        }
    }
}
