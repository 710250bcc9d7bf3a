// BenchmarkProgress: how a benchmark reports how far it is, without knowing where that is shown
// (blk draws a bar on stderr). The label is an autoclosure so a report nobody shows costs nothing.

/// Where a benchmark reports its progress: `fraction` of the whole done, doing `label`.
package protocol BenchmarkProgress: Sendable {
    func update(_ fraction: Double, _ label: @autoclosure () -> String)
    func finish()
}
