// `blk bench startup`: blk's short verbs beside qemu-img's and qemu-io's as whole processes (BlockBench's StartupBenchmark).
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer
import FoundationEssentials
import Posix

struct StartupBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "startup",
        abstract: "blk --version, info, locks and io -c flush beside qemu-img and qemu-io on a small qcow2: whole processes, in turn.")

    @Option(help: "Runs of each side per command; the median is reported.") var rounds = 21
    @OptionGroup var bench: BenchOptions

    func validate() throws {
        guard (1...1000).contains(rounds) else { throw ValidationError("--rounds takes 1 to 1000") }
    }

    func run() throws {
        let results: [StartupBenchmark.Scenario]
        do throws(BlockError) {
            results = try StartupBenchmark(directory: bench.dir, rounds: rounds, progress: bench.progress).run()
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
        } else {
            results.forEach { print(printed($0)) }
        }
    }

    /// The lines printed for one verb.
    func printed(_ result: StartupBenchmark.Scenario) -> String {
        var lines = ["blk bench startup: \(result.scenario)", "  blk        " + formatted("%8.2f ms", result.blkSeconds * 1000) + "  \(result.blkCommand)"]
        if let baselineCommand = result.baselineCommand, let baselineSeconds = result.baselineSeconds,
           let timesBaseline = result.timesBaseline {
            lines.append("  baseline   " + formatted("%8.2f ms", baselineSeconds * 1000) + "  \(baselineCommand)")
            lines.append("  blk takes  " + formatted("%.2f×", timesBaseline) + " the baseline's time (target \(result.target))")
        } else {
            lines.append("  baseline   not installed (Debian package qemu-utils): no baseline")
        }
        return lines.joined(separator: "\n")
    }
}
