// `blk bench lock`: the locking benchmark (BlockBench's LockBenchmark) and its report.
import ArgumentParser
import BlockBench
import BlockCLI
import BlockLocking
import FoundationEssentials
import Posix

struct LockBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Lock and unlock, nested acquire, permission open and hand-over, each beside raw fcntl calls.",
        discussion: "With a lease area configured (see blk lease), also sanlock lease acquire and release beside sanlock's C API."
    )

    @OptionGroup var bench: BenchOptions
    @Option(help: "Iterations per round of the in-process measurements.") var iterations = 20_000
    @Option(help: "Hand-overs measured, ours and raw each.") var handoffs = 2_000
    @OptionGroup(title: "Leases across hosts") var leaseConfig: LeaseConfigOptions
    @Option(help: "Lease acquire/release pairs measured, ours and the C API's each (with a lease area configured).") var leaseRounds = 100

    func validate() throws {
        guard (1...1_000_000_000).contains(iterations), (1...1_000_000).contains(handoffs), (1...1_000_000).contains(leaseRounds) else {
            throw ValidationError("--iterations takes 1 to 1000000000, --handoffs and --lease-rounds 1 to 1000000")
        }
    }

    func run() throws {
        let benchmark = LockBenchmark(directory: bench.dir, iterations: iterations, handoffs: handoffs, progress: bench.progress)
        let results: LockBenchmark.Results
        var leases: LeaseBenchmark.Results?
        do {
            results = try benchmark.run()
            if let settings = try leaseConfig.settings() {
                leases = try LeaseBenchmark(settings: settings, directory: bench.dir, rounds: leaseRounds).run()
            }
        } catch let error as LockingError {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(LockBenchJSON(locks: results, leases: leases))
            return
        }
        let rows: [(String, Double, Double?, String, String)] = [
            ("uncontended pair", results.uncontendedPairNs, results.baselineUncontendedPairNs, "ns", "≤ 1.15×"),
            ("nested acquire", results.nestedAcquireNs, nil, "ns", "≤ 50 ns"),
            ("permission open", results.permissionOpenNs, results.baselinePermissionOpenNs, "ns", "≤ 1.2×"),
            ("hand-over median", results.handoffMedianUs, results.baselineHandoffMedianUs, "µs", "≤ 1.5×"),
            ("hand-over p99", results.handoffP99Us, results.baselineHandoffP99Us, "µs", "≤ 2×"),
        ]
        print("blk bench lock: \(iterations) iterations × 7 rounds, \(handoffs) hand-overs each way, in \(bench.dir)")
        print("operation".padding(18) + "ours".padding(14) + "raw fcntl".padding(14) + "ratio".padding(9) + "target")
        for (name, ours, baseline, unit, target) in rows {
            let baselineText = baseline.map { formatted("%.2f ", $0) + unit } ?? "—"
            let ratio = baseline.map { formatted("%.2f×", ours / $0) } ?? "—"
            print(name.padding(18) + (formatted("%.2f ", ours) + unit).padding(14) + baselineText.padding(14)
                  + ratio.padding(9) + target)
        }
        guard let leases else { return }
        print("sanlock lease (lockspace \(leases.lockspace)), median of \(leaseRounds), beside sanlock's C API:")
        for (name, ours, baseline) in [("lease acquire", leases.acquireMedianMs, leases.baselineAcquireMedianMs),
                                       ("lease release", leases.releaseMedianMs, leases.baselineReleaseMedianMs)] {
            print(name.padding(18) + formatted("%.2f ms", ours).padding(14) + formatted("%.2f ms", baseline).padding(14)
                  + formatted("%.2f×", ours / baseline).padding(9) + "≤ 1.1×")
        }
    }
}

/// The JSON of `blk bench lock`: the lock figures, and the lease figures when measured.
struct LockBenchJSON: Encodable {
    var locks: LockBenchmark.Results
    var leases: LeaseBenchmark.Results?

    func encode(to encoder: any Encoder) throws {
        try locks.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        try container.encodeIfPresent(leases, forKey: .leases)
    }

    enum Key: String, CodingKey { case leases }
}

extension String {
    func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }
}
