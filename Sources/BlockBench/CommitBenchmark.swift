// CommitBenchmark: `blk commit` beside `qemu-img commit`, each a process of its own committing a
// qcow2 overlay whose every cluster holds random data into its empty qcow2 base, alternating who
// goes first; the best wall time of each side is compared (Statistics.swift says why the best).
// A commit changes both images, so each run gets fresh copies of the pristine pair, made and
// synced to disk before the clock starts: a run pays for its own writes, not the copy's.
// Both sides run qemu-img's default cache mode (writeback: the base is flushed at the end) and
// empty the overlay after, and must print the same.
import BlockLayer
import FoundationEssentials
import Glibc

package struct CommitBenchmark {
    package let directory: String
    package let overlayBytes: Int64
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, overlayBytes: Int64, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.overlayBytes = overlayBytes
        self.rounds = rounds
        self.progress = progress
    }

    private var prefix: String { directory + "/blk-bench-commit-\(getpid())" }
    /// The pair each run works on; the overlay names the base by this file name.
    private var base: String { prefix + ".base.qcow2" }
    private var overlay: String { prefix + ".overlay.qcow2" }
    /// The pair as made, copied before every run.
    private var pristineBase: String { prefix + ".pristine-base.qcow2" }
    private var pristineOverlay: String { prefix + ".pristine-overlay.qcow2" }

    package func run() throws(BlockError) -> SideBySide {
        defer { for path in [base, overlay, pristineBase, pristineOverlay] { unlink(path) } }
        try makeImages()
        var runs = 0
        let result = try SideBySide.measure("commit of a \(humanSize(overlayBytes)) qcow2 overlay (every cluster random data) into an empty qcow2 base",
                                            rounds: rounds) { (executable) throws(BlockError) in
            progress.update(Double(runs) / Double(rounds * 2), "round \(runs / 2 + 1) of \(rounds)")
            runs += 1
            for (from, to) in [(pristineBase, base), (pristineOverlay, overlay)] {
                _ = try BenchProcess.timedRun("/bin/cp", [from, to])
            }
            _ = try BenchProcess.timedRun("/bin/sync", [base, overlay])
            return try BenchProcess.timedRun(executable, ["commit", "-f", "qcow2", "-t", "writeback", overlay])
        }
        progress.finish()
        return result
    }

    /// An empty base and an overlay over it with every cluster written, as the pristine pair.
    private func makeImages() throws(BlockError) {
        try createBenchImage("qcow2", at: base, ImageCreateOptions(virtualSize: overlayBytes))
        var options = ImageCreateOptions(virtualSize: overlayBytes)
        // Relative to the overlay's folder, so the copy each run makes names the run's base.
        options.backingFile = String(base.split(separator: "/").last!)
        options.backingFormat = "qcow2"
        try createBenchImage("qcow2", at: pristineOverlay, options)
        let image = try BlockImage.open(pristineOverlay, options: OpenOptions(format: "qcow2", writable: true))
        var generator = SplitMix(seed: 0xc0ffee)
        let chunkBytes = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < overlayBytes {
            let words = buffer.bindMemory(to: UInt64.self)
            for index in words.indices { words[index] = generator.next() }
            let count = Int(min(Int64(chunkBytes), overlayBytes - offset))
            try image.write(at: offset, from: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            offset += Int64(count)
        }
        try image.close()
        if rename(base, pristineBase) != 0 { throw BlockError(.ioError, "Could not rename '\(base)'") }
    }
}
