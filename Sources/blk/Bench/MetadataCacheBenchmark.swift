// MetadataCacheBenchmark: resident memory while a qcow2 image's metadata grows far past the
// metadata cache. A 64 GiB image with 4 KiB clusters gets one 4 KiB write in every 2 MiB — each
// in the range of a new L2 table — so 128 MiB of L2 tables (and their refcount blocks) come into
// being, then every block is read back. The baseline is that metadata itself: what memory would
// grow by if nothing were ever evicted.
import BlockLayer
import Foundation
import Glibc
import Qcow2

struct MetadataCacheBenchmark {
    struct Results: Encodable {
        var cacheBytes: Int
        var writes: Int
        /// Resident set after 25, 50, 75 and 100 % of the writes, then after reading all back.
        var residentMiB: [Double]
        var metadataMiB: Double
        /// Growth from the first sample to the largest later one, against the metadata made in between.
        var residentGrowthMiB: Double
        var metadataGrowthMiB: Double
    }

    let directory: String
    let cacheBytes: Int
    let progress: Progress

    func run() throws(BlockError) -> Results {
        let path = directory + "/blk-bench-cache-\(getpid()).qcow2"
        defer { unlink(path) }
        let clusterSize = 4096
        let tableSpan: Int64 = Int64(clusterSize / 8 * clusterSize) // guest bytes one L2 table maps
        let virtualBytes: Int64 = 64 << 30
        try Qcow2Format.create(at: path, virtualSize: virtualBytes, clusterSize: clusterSize)
        let image = try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true, metadataCacheBytes: cacheBytes),
                                        formats: blkFormats)
        let writes = Int(virtualBytes / tableSpan)
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        defer { block.deallocate() }
        var resident: [Double] = []
        for index in 0..<writes {
            block.storeBytes(of: UInt32(index), as: UInt32.self)
            try image.write(at: Int64(index) * tableSpan, from: UnsafeRawBufferPointer(block))
            if (index + 1) % (writes / 4) == 0 {
                resident.append(Self.residentMiB())
                progress.update(Double(index + 1) / Double(writes * 2), "writes")
            }
        }
        try image.flush()
        for index in 0..<writes {
            try image.read(at: Int64(index) * tableSpan, into: block)
            guard block.load(as: UInt32.self) == UInt32(index) else {
                throw BlockError(.corrupt, "block \(index) read back wrong")
            }
        }
        resident.append(Self.residentMiB())
        progress.finish()
        try image.close()
        // Each write made one L2 table; 16-bit refcounts count 2048 clusters per block.
        let clustersMade = Double(writes * 2)
        let metadataMiB = (Double(writes) + clustersMade / Double(clusterSize / 2)) * Double(clusterSize) / Double(1 << 20)
        return Results(cacheBytes: cacheBytes, writes: writes, residentMiB: resident, metadataMiB: metadataMiB,
                       residentGrowthMiB: (resident.dropFirst().max() ?? resident[0]) - resident[0],
                       metadataGrowthMiB: metadataMiB * 3 / 4)
    }

    /// VmRSS from /proc/self/status.
    static func residentMiB() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
        return kilobytes / 1024
    }
}
