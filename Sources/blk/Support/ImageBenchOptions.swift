// ImageBenchOptions: what the benches that time blk beside qemu-img on images of one size share
// (`blk bench compare`, `blk bench rebase`): the options, their checks, and the printing.
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer

struct ImageBenchOptions: ParsableArguments {
    @Option(help: "The size of each image.") var size = ByteCount(1 << 30)
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), size.value >= 1 << 20 else { throw ValidationError("--rounds takes 1 to 1000, --size 1M or more") }
    }

    /// Runs a bench, reporting its failure (as the exit code) or printing what it measured.
    func measure(_ command: String, _ body: (Progress) throws(BlockError) -> [SideBySide]) throws {
        let results: [SideBySide]
        do throws(BlockError) {
            results = try body(bench.progress)
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
        } else {
            results.forEach { print($0.printed(command: command)) }
        }
    }
}
