// BenchOptions: what every `blk bench …` command takes alike — where its files go, whether it
// shows progress off a terminal, and JSON output — so that the benches read the same at a shell
// and in scripts.
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLayer
import FoundationEssentials

struct BenchOptions: ParsableArguments {
    @Option(help: "Folder for the benchmark's files (its file system is what is measured).")
    var dir = FileManager.default.temporaryDirectory.path
    @Flag(name: .short, help: "Show progress even when stderr is not a terminal.") var p = false
    @Flag(help: "Print JSON on stdout.") var json = false

    /// The progress bar the flags ask for.
    var progress: Progress { Progress(forced: p) }

    /// Runs a bench that times blk beside qemu-img, reporting its failure (as the exit code) or
    /// printing what it measured; `--json` prints the list, or with `jsonObject` its one entry.
    func measure(_ command: String, jsonObject: Bool = false, _ body: (Progress) throws(BlockError) -> [SideBySide]) throws {
        let results: [SideBySide]
        do throws(BlockError) {
            results = try body(progress)
        } catch {
            throw report(error, json: json)
        }
        if json, jsonObject, results.count == 1 {
            printJSON(results[0])
        } else if json {
            printJSON(results)
        } else {
            results.forEach { print($0.printed(command: command)) }
        }
    }
}
