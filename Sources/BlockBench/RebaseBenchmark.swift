// RebaseBenchmark: a safe `blk rebase` beside `qemu-img rebase` (SideBySide's rules: processes
// of their own, alternating who goes first, the best wall time of each side). Two fully
// allocated qcow2 bases of random data differ in one cluster in ten (random clusters); an empty
// overlay on the old base is copied fresh before every run and moved onto the new base, so each
// side reads both bases whole and writes the tenth that differs into its overlay.
import BlockLayer
import FoundationEssentials
import Glibc

package struct RebaseBenchmark {
    package let directory: String
    package let baseBytes: Int64
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, baseBytes: Int64, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.baseBytes = baseBytes
        self.rounds = rounds
        self.progress = progress
    }

    private var prefix: String { directory + "/blk-bench-rebase-\(getpid())" }
    private var oldBase: String { prefix + "-old.qcow2" }
    private var newBase: String { prefix + "-new.qcow2" }
    private var overlay: String { prefix + "-overlay.qcow2" }
    private var rebased: String { prefix + "-rebased.qcow2" }

    package func run() throws(BlockError) -> SideBySide {
        defer { for path in [oldBase, newBase, overlay, rebased] { unlink(path) } }
        progress.update(0, "writing the bases")
        try makeBases()
        try createBenchImage("qcow2", at: overlay, ImageCreateOptions(virtualSize: baseBytes, backingFile: lastComponent(oldBase), backingFormat: "qcow2"))
        progress.update(0.5, "rebasing")
        let arguments = ["rebase", "-f", "qcow2", "-b", lastComponent(newBase), "-F", "qcow2", rebased]
        let result = try SideBySide.measure("safe rebase onto a base differing in 10 % of its clusters, \(humanSize(baseBytes)) qcow2 bases",
                                            rounds: rounds) { (executable) throws(BlockError) in
            try freshOverlay()
            return try BenchProcess.timedRun(executable, arguments)
        }
        progress.finish()
        return result
    }

    private func lastComponent(_ path: String) -> String { String(path.split(separator: "/").last ?? "") }

    /// The overlay as made, for one run: a copy, so every run starts from the same image.
    private func freshOverlay() throws(BlockError) {
        unlink(rebased)
        do {
            try FileManager.default.copyItem(atPath: overlay, toPath: rebased)
        } catch {
            throw BlockError(.ioError, "could not copy \(overlay): \(error)")
        }
    }

    /// Both bases, every cluster written: the same random bytes in both, but for one cluster
    /// in ten (drawn at random), where the new base has other random bytes.
    private func makeBases() throws(BlockError) {
        for path in [oldBase, newBase] { try createBenchImage("qcow2", at: path, ImageCreateOptions(virtualSize: baseBytes)) }
        let old = try BlockImage.open(oldBase, options: OpenOptions(format: "qcow2", writable: true, cache: .unsafe))
        let new = try BlockImage.open(newBase, options: OpenOptions(format: "qcow2", writable: true, cache: .unsafe))
        let clusterBytes = 64 << 10, chunkBytes = 1 << 20
        var generator = SplitMix(seed: 0x7eba5e)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < baseBytes {
            let count = Int(min(Int64(chunkBytes), baseBytes - offset))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            fill(chunk, &generator)
            try old.write(at: offset, from: UnsafeRawBufferPointer(chunk))
            for start in stride(from: 0, to: count, by: clusterBytes) where generator.next() % 10 == 0 {
                fill(UnsafeMutableRawBufferPointer(rebasing: chunk[start..<min(start + clusterBytes, count)]), &generator)
            }
            try new.write(at: offset, from: UnsafeRawBufferPointer(chunk))
            offset += Int64(count)
        }
        try old.flushIgnoringCacheMode()
        try new.flushIgnoringCacheMode()
        try old.close()
        try new.close()
    }

    private func fill(_ bytes: UnsafeMutableRawBufferPointer, _ generator: inout SplitMix) {
        let words = bytes.bindMemory(to: UInt64.self)
        for index in words.indices { words[index] = generator.next() }
    }
}
