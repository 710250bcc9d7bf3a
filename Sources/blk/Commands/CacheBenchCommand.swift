// `blk bench cache`: resident memory while qcow2 metadata outgrows the metadata cache (Bench/MetadataCacheBenchmark.swift).
import ArgumentParser
import BlockLayer
import Foundation

struct CacheBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "Resident memory while 128 MiB of qcow2 metadata pass through the metadata cache.")

    @Option(help: "The metadata cache size under test.") var cacheSize = ByteCount(4 << 20)
    @Option(help: "Folder for the benchmark's image.") var dir = URL(fileURLWithPath: NSTemporaryDirectory()).path
    @Flag(name: .short, help: "Show progress even when stderr is not a terminal.") var p = false
    @Flag(help: "Print JSON on stdout.") var json = false

    func run() throws {
        let results: MetadataCacheBenchmark.Results
        do throws(BlockError) {
            results = try MetadataCacheBenchmark(directory: dir, cacheBytes: Int(cacheSize.value), progress: Progress(forced: p)).run()
        } catch {
            throw report(error, json: json)
        }
        if json {
            printJSON(results)
            return
        }
        let samples = results.residentMiB.map { String(format: "%.1f", $0) }
        print("blk bench cache: \(results.writes) writes, each making an L2 table; cache \(humanSize(Int64(results.cacheBytes)))")
        print("  resident MiB at 25/50/75/100 % of writes, after reads: " + samples.joined(separator: " / "))
        print("  metadata made: " + String(format: "%.1f MiB", results.metadataMiB))
        print("  growth after the first quarter: resident " + String(format: "%.1f MiB", results.residentGrowthMiB)
              + ", metadata " + String(format: "%.1f MiB", results.metadataGrowthMiB)
              + String(format: " — ratio %.3f (target: flat, growth ≤ the cache size)", results.residentGrowthMiB / results.metadataGrowthMiB))
    }
}
