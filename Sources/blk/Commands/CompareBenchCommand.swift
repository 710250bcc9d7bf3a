// `blk bench compare`: blk compare beside qemu-img compare on pairs of identical images (BlockBench's CompareBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer
import FoundationEssentials

struct CompareBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare", abstract: "blk compare beside qemu-img compare: the same pairs of identical images, alternating.")

    @Option(help: "The size of each image.") var size = ByteCount(1 << 30)
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), size.value >= 1 << 20 else { throw ValidationError("--rounds takes 1 to 1000, --size 1M or more") }
    }

    func run() throws {
        let results: [SideBySide]
        do throws(BlockError) {
            results = try CompareBenchmark(directory: bench.dir, imageBytes: size.value, rounds: rounds, progress: bench.progress).run()
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
        } else {
            results.forEach { print($0.printed(command: "compare")) }
        }
    }
}
