// `blk bench commit`: blk commit beside qemu-img commit on fresh copies of the same overlay and
// base (BlockBench's CommitBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer
import FoundationEssentials

struct CommitBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit", abstract: "blk commit beside qemu-img commit: fresh copies of the same overlay and base, alternating.")

    @Option(help: "The size of the overlay, every cluster of it written.") var size = ByteCount(1 << 30)
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), size.value >= 1 << 20 else { throw ValidationError("--rounds takes 1 to 1000, --size 1M or more") }
    }

    func run() throws {
        let result: SideBySide
        do throws(BlockError) {
            result = try CommitBenchmark(directory: bench.dir, overlayBytes: size.value, rounds: rounds, progress: bench.progress).run()
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON([result])
        } else {
            print(result.printed(command: "commit"))
        }
    }
}
