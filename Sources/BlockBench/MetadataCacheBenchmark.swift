// MetadataCacheBenchmark: resident memory while a qcow2 image's metadata grows far past the
// metadata cache. An image with 4 KiB clusters (64 GiB by default) gets one 4 KiB write in every
// 2 MiB — each in the range of a new L2 table — so its L2 tables (128 MiB of them by default,
// and their refcount blocks) come into being, then every block is read back. The baseline is that metadata itself: what memory would
// grow by if nothing were ever evicted.
import BlockLayer
import FoundationEssentials
import Glibc

package struct MetadataCacheBenchmark {
    package struct Results: Encodable {
        package var cacheBytes: Int
        package var writes: Int
        /// Resident set after 25, 50, 75 and 100 % of the writes, then after reading all back.
        package var residentMebibytes: [Double]
        package var metadataMebibytes: Double
        /// Growth from the first sample to the largest later one, against the metadata made in between.
        package var residentGrowthMebibytes: Double
        package var metadataGrowthMebibytes: Double
    }

    package let directory: String
    package let cacheBytes: Int
    package let virtualBytes: Int64
    package let progress: any BenchmarkProgress

    package init(directory: String, cacheBytes: Int, virtualBytes: Int64, progress: any BenchmarkProgress) {
        self.directory = directory
        self.cacheBytes = cacheBytes
        self.virtualBytes = virtualBytes
        self.progress = progress
    }

    package func run() throws(BlockError) -> Results {
        let path = directory + "/blk-bench-cache-\(getpid()).qcow2"
        defer { unlink(path) }
        let clusterSize = 4096
        let tableSpan: Int64 = Int64(clusterSize / 8 * clusterSize) // guest bytes one L2 table maps
        try createBenchImage("qcow2", at: path, ImageCreateOptions(virtualSize: virtualBytes, clusterSize: clusterSize))
        let image = try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true, metadataCacheBytes: cacheBytes))
        let writes = max(4, Int(virtualBytes / tableSpan))
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        defer { block.deallocate() }
        var resident: [Double] = []
        for index in 0..<writes {
            block.storeBytes(of: UInt32(index), as: UInt32.self)
            try image.write(at: Int64(index) * tableSpan, from: UnsafeRawBufferPointer(block))
            if (index + 1) % (writes / 4) == 0 {
                resident.append(Self.residentMebibytes())
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
        resident.append(Self.residentMebibytes())
        progress.finish()
        try image.close()
        // Each write made one L2 table; 16-bit refcounts count 2048 clusters per block.
        let clustersMade = Double(writes * 2)
        let metadataMebibytes = (Double(writes) + clustersMade / Double(clusterSize / 2)) * Double(clusterSize) / Double(1 << 20)
        return Results(cacheBytes: cacheBytes, writes: writes, residentMebibytes: resident, metadataMebibytes: metadataMebibytes,
                       residentGrowthMebibytes: (resident.dropFirst().max() ?? resident[0]) - resident[0],
                       metadataGrowthMebibytes: metadataMebibytes * 3 / 4)
    }

    /// VmRSS from /proc/self/status.
    package static func residentMebibytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
        return kilobytes / 1024
    }
}
