// `blk bench state`: device-state commit latency beside one 4 KiB overwrite + fdatasync, and
// CRC32C throughput beside a byte-table loop (BlockBench's StateBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import DeviceState
import FoundationEssentials
import Posix

struct StateBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "state",
        abstract: "State-store commit latency beside a 4 KiB overwrite + fdatasync; CRC32C beside a byte-table loop."
    )

    @OptionGroup var bench: BenchOptions
    @Option(help: "Rounds: each times one baseline write and one commit of every scenario.") var rounds = 200

    func validate() throws {
        guard (1...1_000_000).contains(rounds) else { throw ValidationError("--rounds takes 1 to 1000000") }
    }

    func run() throws {
        let results: StateBenchmark.Results
        do {
            results = try StateBenchmark(directory: bench.dir, rounds: rounds, progress: bench.progress).run()
        } catch let error as StateError {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
            return
        }
        let base = results.baselineMicroseconds
        print("blk bench state: \(rounds) rounds in \(bench.dir); baseline: one 4 KiB overwrite + fdatasync = \(formatted("%.1f", base)) µs (median)")
        print("commit".padding(26) + "median".padding(13) + "÷ baseline".padding(12) + "target")
        for scenario in StateBenchmark.scenarios {
            let name = StateBenchmark.name(scenario)
            let value = results.commitMicroseconds[name]!
            print(name.padding(26) + formatted("%.1f µs", value).padding(13) + formatted("%.2f×", value / base).padding(12) + (scenario.bytes == 16 << 10 && !scenario.encrypted ? "≤ 2.3×" : ""))
        }
        for (format, size) in [("raw", 256), ("raw", 16)] {
            let plain = results.commitMicroseconds["\(format) \(size) KiB"]!
            let encrypted = results.commitMicroseconds["\(format) \(size) KiB encrypted"]!
            print("encryption adds, \(format) \(size) KiB".padding(39) + formatted("%+.1f %%", (encrypted / plain - 1) * 100).padding(12)
                  + (size == 256 ? "≤ 10 %" : ""))
        }
        print("CRC32C \(results.crcHardware ? "(SSE4.2)" : "(no SSE4.2)")".padding(26) + formatted("%.2f GB/s", results.crcGigabytesPerSecond).padding(13)
              + formatted("%.1f×", results.crcGigabytesPerSecond / results.crcTableGigabytesPerSecond).padding(12) + "≥ 10 GB/s")
        print("CRC32C byte table".padding(26) + formatted("%.2f GB/s", results.crcTableGigabytesPerSecond))
    }
}
