// ConvertBenchmark: `blk convert` beside `qemu-img convert`, each a process of its own copying the
// same source into a new image on the same file system, alternating who goes first; the best
// wall time of each side is compared (Statistics.swift says why the best). The source is a raw image, half of it written with data
// that compresses about as well as a guest's files (words from a small vocabulary), half zeroes.
// Both sides run in the same cache mode: durable (flushed at the end: blk's default, qemu-img's
// -t writeback) and unflushed (qemu-img's default, -t unsafe, blk's -t unsafe).
import BlockLayer
import BlockLocking
import FoundationEssentials
import Glibc

package struct ConvertBenchmark {
    package let directory: String
    package let sourceBytes: Int64
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, sourceBytes: Int64, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.sourceBytes = sourceBytes
        self.rounds = rounds
        self.progress = progress
    }

    private var source: String { directory + "/blk-bench-convert-\(getpid()).raw" }
    private var output: String { directory + "/blk-bench-convert-\(getpid()).out" }

    package func run() throws(BlockError) -> [SideBySide] {
        try makeSource()
        defer {
            unlink(source)
            unlink(output)
        }
        let scenarios: [(String, [String], String)] = [
            ("raw → qcow2, durable (-t writeback)", ["-O", "qcow2", "-t", "writeback"], "≥ 1.0×"),
            ("raw → qcow2, unflushed (-t unsafe, qemu-img's default)", ["-O", "qcow2", "-t", "unsafe"], "≥ 1.0×"),
            ("raw → qcow2, compressed (-c -t unsafe)", ["-c", "-O", "qcow2", "-t", "unsafe"], "report only"),
        ]
        var results: [SideBySide] = []
        for (number, (name, arguments, target)) in scenarios.enumerated() {
            progress.update(Double(number) / Double(scenarios.count), name)
            // Both print nothing: the outputs say nothing about the copies.
            results.append(try SideBySide.measure("\(name), \(humanSize(sourceBytes)) (half data)", rounds: rounds, target: target,
                                                  comparingOutputs: false) { (executable) throws(BlockError) in
                unlink(output)
                return try BenchProcess.timedRun(executable, ["convert", "-f", "raw"] + arguments + [source, output])
            })
        }
        progress.finish()
        return results
    }

    /// Every other MiB written with words drawn from a small vocabulary, the rest left zero.
    private func makeSource() throws(BlockError) {
        try createBenchImage("raw", at: source, ImageCreateOptions(virtualSize: sourceBytes))
        let image = try BlockImage.open(source, options: OpenOptions(format: "raw", writable: true))
        let words = ["block", "layer", "qcow2", "cluster", "refcount", "snapshot", "guest", "kernel", "lock", "image", "\n", " "]
        var generator = SplitMix(seed: 0x5eed)
        var chunk = [UInt8]()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < sourceBytes {
            chunk.removeAll(keepingCapacity: true)
            while chunk.count < 1 << 20 { chunk += words[Int(generator.next() % UInt64(words.count))].utf8 }
            buffer.copyBytes(from: chunk[0..<1 << 20])
            let count = Int(min(Int64(1 << 20), sourceBytes - offset))
            try image.write(at: offset, from: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            offset += 2 << 20
        }
        try image.flush()
    }
}

/// A small, fast, seeded generator, so every run converts the same bytes.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var value = state
        value = (value ^ (value >> 30)) &* 0xbf58_476d_1ce4_e5b9
        value = (value ^ (value >> 27)) &* 0x94d0_49bb_1331_11eb
        return value ^ (value >> 31)
    }
}
