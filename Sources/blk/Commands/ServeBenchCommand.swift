// `blk bench serve`: blk serve beside qemu-nbd under the same clients (BlockBench's ServeBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer
import FoundationEssentials
import Posix

struct ServeBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "blk serve beside qemu-nbd: nbdcopy and qemu-img bench against each on the same images, in turn, with peak memory.",
        discussion: "A fresh server per run; medians of each side. Needs qemu-nbd, qemu-img (qemu-utils) and nbdcopy (libnbd-bin).")

    @Option(help: "Size of the images, a whole number of MiB (a raw image four times the size is made too).") var size = ByteCount(1 << 30)
    @Option(help: "4 KiB reads per run of qemu-img bench.") var reads = 100_000
    @Option(help: "Runs of each side per row; the median is reported.") var rounds = 5
    @Option(help: "Only the rows whose name contains this text (ignoring case), e.g. \"reads of 4 KiB\".") var only: String?
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds), (1...100_000_000).contains(reads), size.value > 0, size.value <= 1 << 40,
              size.value % Int64(ServeBenchmark.sizeUnit) == 0 else {
            throw ValidationError("--rounds takes 1 to 1000, --reads 1 to 100000000, --size a whole number of MiB up to 1 TiB")
        }
    }

    func run() throws {
        let results: [ServeBenchmark.Scenario]
        do throws(BlockError) {
            results = try ServeBenchmark(directory: bench.dir, imageBytes: size.value, reads: reads, rounds: rounds, only: only,
                                         progress: bench.progress).run()
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
            return
        }
        print("blk bench serve: medians of \(rounds) runs each, in turn; ratio = qemu-nbd's time / blk serve's (above 1: blk serve is faster)")
        for result in results {
            print("blk bench serve: \(result.scenario)")
            print("  client     \(result.client)")
            for (name, seconds, peak) in [("blk serve", result.blkSeconds, result.blkPeakBytes), ("qemu-nbd", result.qemuNbdSeconds, result.qemuNbdPeakBytes)] {
                print("  " + name.padding(10) + formatted("%8.3f s %9.1f MB/s   peak RSS %7.1f MiB", seconds, Double(result.bytes) / seconds / 1e6,
                                                          Double(peak) / 1048576))
            }
            print("  ratio      " + formatted("%.2f×", result.ratio) + " (target \(result.target))")
        }
    }
}
