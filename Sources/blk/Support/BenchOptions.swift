// BenchOptions: what every `blk bench …` command takes alike — where its files go, whether it
// shows progress off a terminal, and JSON output — so that the benches read the same at a shell
// and in scripts.
import ArgumentParser
import FoundationEssentials

struct BenchOptions: ParsableArguments {
    @Option(help: "Folder for the benchmark's files (its file system is what is measured).")
    var dir = FileManager.default.temporaryDirectory.path
    @Flag(name: .short, help: "Show progress even when stderr is not a terminal.") var p = false
    @Flag(help: "Print JSON on stdout.") var json = false

    /// The progress bar the flags ask for.
    var progress: Progress { Progress(forced: p) }
}
