// Statistics: timing loops and order statistics for the benchmarks.
import BlockLocking

/// Nanoseconds per iteration of `body`, run `iterations` times.
@inline(__always)
func nanosecondsPerIteration(_ iterations: Int, _ body: () -> Void) -> Double {
    let start = currentMonotonicNanoseconds()
    for _ in 0..<iterations { body() }
    return Double(currentMonotonicNanoseconds() - start) / Double(iterations)
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
