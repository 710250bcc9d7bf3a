// Statistics: timing loops and order statistics for the benchmarks.
import BlockLayer
import BlockLocking

/// Nanoseconds per iteration of `body`, run `iterations` times.
@inline(__always)
func nanosecondsPerIteration(_ iterations: Int, _ body: () -> Void) -> Double {
    let start = currentMonotonicNanoseconds()
    for _ in 0..<iterations { body() }
    return Double(currentMonotonicNanoseconds() - start) / Double(iterations)
}

/// Seconds of `rounds` runs of each side, taken in turn: ours first in even rounds, the
/// baseline first in odd ones, so neither always meets the machine the other left. A baseline
/// that answers nil (its tool not installed) is left out.
func alternating(rounds: Int, ours: () throws(BlockError) -> Double,
                 baseline: () throws(BlockError) -> Double?) throws(BlockError) -> (ours: [Double], baseline: [Double]) {
    var oursSeconds: [Double] = [], baselineSeconds: [Double] = []
    for round in 0..<rounds {
        if round.isMultiple(of: 2) { oursSeconds.append(try ours()) }
        if let seconds = try baseline() { baselineSeconds.append(seconds) }
        if !round.isMultiple(of: 2) { oursSeconds.append(try ours()) }
    }
    return (oursSeconds, baselineSeconds)
}

extension Array where Element == Double {
    /// The value below which `fraction` of the samples fall (nearest rank).
    func percentile(_ fraction: Double) -> Double {
        guard !isEmpty else { return .nan }
        let sorted = self.sorted()
        return sorted[Swift.min(sorted.count - 1, Int((fraction * Double(sorted.count)).rounded(.down)))]
    }

    var median: Double { percentile(0.5) }

    /// The smallest sample: for throughput on a shared machine, where interference (other
    /// tenants, the host reclaiming guest memory, background writeback) only ever adds time,
    /// the run with the least of it is the one that measures the code.
    var best: Double { self.min() ?? .nan }
}
