// `blk bench cache`: resident memory while qcow2 metadata outgrows the metadata cache (BlockBench's MetadataCacheBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer
import FoundationEssentials
import Posix

struct CacheBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "Resident memory while qcow2 metadata (128 MiB by default) passes through the metadata cache.")

    @Option(help: "The metadata cache size under test.") var cacheSize = ByteCount(4 << 20)
    @Option(help: "The image's virtual size: every 2 MiB of it makes a 4 KiB L2 table.") var size = ByteCount(64 << 30)
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard size.value > 0 else { throw ValidationError("--size takes a size above 0") }
    }

    func run() throws {
        let results: MetadataCacheBenchmark.Results
        do throws(BlockError) {
            results = try MetadataCacheBenchmark(directory: bench.dir, cacheBytes: Int(cacheSize.value), virtualBytes: size.value,
                                             progress: bench.progress).run()
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
            return
        }
        let samples = results.residentMebibytes.map { formatted("%.1f", $0) }
        print("blk bench cache: \(results.writes) writes, each making an L2 table; cache \(humanSize(Int64(results.cacheBytes)))")
        print("  resident MiB at 25/50/75/100 % of writes, after reads: " + samples.joined(separator: " / "))
        print("  metadata made: " + formatted("%.1f MiB", results.metadataMebibytes))
        print("  growth after the first quarter: resident " + formatted("%.1f MiB", results.residentGrowthMebibytes)
              + ", metadata " + formatted("%.1f MiB", results.metadataGrowthMebibytes)
              + formatted(" — ratio %.3f (target: flat, growth ≤ the cache size)", results.residentGrowthMebibytes / results.metadataGrowthMebibytes))
    }
}
