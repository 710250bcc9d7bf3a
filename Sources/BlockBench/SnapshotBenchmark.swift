// SnapshotBenchmark: `blk snapshot -c` beside `qemu-img snapshot -c`, each a process of its own on
// its own copy of the same qcow2 image — 40 % of its virtual size allocated from the start with
// random data, so every L2 table of that range is full — alternating who goes first; whole
// commands are timed, and the best wall time of each side is compared (Statistics.swift says why
// the best). Each side deletes its snapshot after every timed create, untimed, so every round
// snapshots an image without one, as the first did; at the end qemu-img checks both images.
import BlockLayer
import Glibc

package struct SnapshotBenchmark {
    package let directory: String
    package let virtualBytes: Int64
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, virtualBytes: Int64, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.virtualBytes = virtualBytes
        self.rounds = rounds
        self.progress = progress
    }

    /// The allocated part: the first 40 %, in whole MiB.
    var allocatedBytes: Int64 { virtualBytes / 5 * 2 / (1 << 20) * (1 << 20) }

    private var ours: String { directory + "/blk-bench-snapshot-\(getpid())-blk.qcow2" }
    private var theirs: String { directory + "/blk-bench-snapshot-\(getpid())-qemu-img.qcow2" }

    package func run() throws(BlockError) -> SideBySide {
        defer {
            unlink(ours)
            unlink(theirs)
        }
        progress.update(0, "writing \(humanSize(allocatedBytes)) of random data")
        try makeImage(ours)
        if BenchPrograms.qemuImg != nil {
            progress.update(0.4, "writing the same image for qemu-img")
            try makeImage(theirs)
        }
        progress.update(0.8, "snapshot create, alternating")
        let result = try SideBySide.measure("snapshot -c, \(humanSize(virtualBytes)) qcow2 with \(humanSize(allocatedBytes)) allocated, best of \(rounds)",
                                            rounds: rounds) { (executable) throws(BlockError) in
            try createAndDelete(executable, executable == BenchPrograms.blk ? ours : theirs)
        }
        if let qemuImg = BenchPrograms.qemuImg {
            for image in [ours, theirs] { _ = try BenchProcess.timedRun(qemuImg, ["check", "-q", image]) }
        }
        progress.finish()
        return result
    }

    /// The wall time and output of `snapshot -c`; the delete after it is not timed.
    private func createAndDelete(_ executable: String, _ image: String) throws(BlockError) -> (Double, [UInt8]) {
        let created = try BenchProcess.timedRun(executable, ["snapshot", "-c", "bench", image])
        _ = try BenchProcess.timedRun(executable, ["snapshot", "-d", "bench", image])
        return created
    }

    /// The image, its allocated part written in 1 MiB writes from a seeded generator: both
    /// sides' images hold the same bytes in the same clusters.
    private func makeImage(_ path: String) throws(BlockError) {
        try createBenchImage("qcow2", at: path, ImageCreateOptions(virtualSize: virtualBytes))
        let image = try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true))
        var generator = SplitMix(seed: 0x5eed)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        let words = buffer.bindMemory(to: UInt64.self)
        var offset: Int64 = 0
        while offset < allocatedBytes {
            for index in words.indices { words[index] = generator.next() }
            try image.write(at: offset, from: UnsafeRawBufferPointer(buffer))
            offset += 1 << 20
        }
        try image.close()
    }
}
