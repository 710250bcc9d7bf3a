// BitmapBenchmark: `blk bench io --bitmap`, what marking a persistent dirty bitmap costs blk's
// writes (docs/qcow2.md, Persistent dirty bitmaps): the same 4 KiB writes into two qcow2
// images whose clusters are all allocated, one with an enabled bitmap and one whose bitmap is
// disabled, in the same run, alternating which goes first. Both images are made alike — the
// bitmap added, then every cluster written — so their files have the same layout: a bitmap
// added to one image only moves its data clusters by the bitmap's own clusters, and on a
// kernel with large folios that alone made 4 KiB overwrites of one file cost 30 % more than of
// the other in the page cache, which is not what marking costs. Overwrites: every granule
// already marked (the bitmap is filled before the timing), which should cost at most 5 % more.
// First touches: the bitmap cleared before each run, each write the first in its 64 KiB
// granule, which pays the write-ahead mark and its fdatasync.
import BlockLayer
import BlockLocking
import FoundationEssentials
import Glibc

package struct BitmapBenchmarkResult: Encodable {
    package var scenario: String
    /// Seconds with the bitmap disabled, and enabled.
    package var plainSeconds: Double
    package var bitmapSeconds: Double
    /// Seconds enabled over seconds disabled.
    package var ratio: Double
    package var writes: Int
}

package enum BitmapBenchmark {
    static let imageBytes: Int64 = 256 << 20
    static let requestBytes = 4096

    /// Both scenarios, `rounds` runs of each image; the best run of each is reported.
    package static func run(at path: String, overwrites: Int, rounds: Int, progress: any BenchmarkProgress) throws(BlockError) -> [BitmapBenchmarkResult] {
        defer { progress.finish() }
        let plain = path + "-plain.qcow2", marked = path + "-bitmap.qcow2"
        defer { unlink(plain); unlink(marked) }
        for image in [plain, marked] {
            try createBenchImage("qcow2", at: image, ImageCreateOptions(virtualSize: imageBytes))
            let opened = try BlockImage.open(image, options: OpenOptions(format: "qcow2", writable: true))
            try opened.changeBitmap("bench", .add(granularity: 65536))
            try fill(opened)
            if image == plain { try opened.changeBitmap("bench", .disable) }
            try opened.close()
        }
        // Overwrites: 4 KiB writes scattered by a 1236 KiB step (every block, out of order, as
        // bench io's reads); first touches: one 4 KiB write at the start of each 64 KiB granule.
        let scattered = (0..<overwrites).map { Int64($0) * (1236 << 10) % imageBytes / Int64(requestBytes) * Int64(requestBytes) }
        let firstTouches = stride(from: Int64(0), to: 64 << 20, by: 65536).map { $0 }
        var results: [BitmapBenchmarkResult] = []
        for (name, offsets, clearing) in [("overwrites of marked granules", scattered, false), ("first touches of granules", firstTouches, true)] {
            var best = (plain: Double.infinity, bitmap: Double.infinity)
            for round in 0..<rounds {
                progress.update((Double(results.count) + Double(round) / Double(rounds)) / 2, name)
                for image in round.isMultiple(of: 2) ? [plain, marked] : [marked, plain] {
                    let opened = try BlockImage.open(image, options: OpenOptions(format: "qcow2", writable: true))
                    if clearing && image == marked { try opened.changeBitmap("bench", .clear) }
                    let seconds = try timedWrites(opened, offsets)
                    try opened.close()
                    if image == plain { best.plain = min(best.plain, seconds) } else { best.bitmap = min(best.bitmap, seconds) }
                }
            }
            results.append(BitmapBenchmarkResult(scenario: "\(offsets.count) \(name), 4 KiB each, 64 KiB granules", plainSeconds: best.plain,
                                                 bitmapSeconds: best.bitmap, ratio: best.bitmap / best.plain, writes: offsets.count))
        }
        return results
    }

    /// Writes every cluster, so the timed writes allocate nothing (and mark every granule).
    private static func fill(_ image: BlockImage) throws(BlockError) {
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { chunk.deallocate() }
        chunk.initializeMemory(as: UInt8.self, repeating: 0x5a)
        for offset in stride(from: Int64(0), to: imageBytes, by: chunk.count) {
            try image.write(at: offset, from: UnsafeRawBufferPointer(chunk))
        }
        try image.flush()
    }

    private static func timedWrites(_ image: BlockImage, _ offsets: [Int64]) throws(BlockError) -> Double {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: requestBytes, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xa5)
        let started = currentMonotonicNanoseconds()
        for offset in offsets { try image.write(at: offset, from: UnsafeRawBufferPointer(buffer)) }
        return Double(currentMonotonicNanoseconds() - started) / 1e9
    }
}
