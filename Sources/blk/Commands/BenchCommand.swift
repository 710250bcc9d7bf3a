// `blk bench …`: benchmarks, each figure beside a baseline measured in the same run.
import ArgumentParser

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Benchmarks; every figure is printed beside its baseline measured in the same run, and the ratio.",
        subcommands: [LockBenchCommand.self, IOBenchCommand.self, ConvertBenchCommand.self, MapBenchCommand.self, CompareBenchCommand.self, CommitBenchCommand.self, RebaseBenchCommand.self, SnapshotBenchCommand.self, CacheBenchCommand.self, StateBenchCommand.self, StartupBenchCommand.self, ServeBenchCommand.self, HandoffPeerCommand.self]
    )
}
