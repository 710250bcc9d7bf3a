// ClusterReferenceCounts: how often the metadata `blk check` walks names each cluster of the file.
// A byte per cluster, since almost every count is 0, 1 or a snapshot's few; a count that reaches
// 255 goes on in a dictionary, whose entries each took 255 references and so stay as few as the
// metadata that made them. The bytes come from calloc: a large block is fresh anonymous memory
// that the kernel zeroes page by page when first written, so the holes of a sparse file (clusters
// nothing names) cost address space, not memory.
import Glibc

final class ClusterReferenceCounts {
    let clusters: UInt64
    private let counts: UnsafeMutablePointer<UInt8>
    private var beyondByte: [UInt64: UInt64] = [:]
    /// So that the byte's 255 plus what lies beyond it is at most UInt64.max.
    private static let largestBeyondByte = UInt64.max - UInt64(UInt8.max)

    /// nil when the memory cannot be had.
    init?(clusters: UInt64) {
        guard let memory = calloc(Int(max(clusters, 1)), 1) else { return nil }
        self.clusters = clusters
        counts = memory.assumingMemoryBound(to: UInt8.self)
    }

    deinit { free(counts) }

    /// Adds `times` references to `cluster` (below `clusters`); a count saturates at UInt64.max.
    func add(_ times: UInt64, to cluster: UInt64) {
        let index = Int(cluster)
        let small = counts[index]
        if small == .max {
            let (sum, overflow) = beyondByte[cluster, default: 0].addingReportingOverflow(times)
            beyondByte[cluster] = overflow ? Self.largestBeyondByte : min(sum, Self.largestBeyondByte)
            return
        }
        let (sum, overflow) = UInt64(small).addingReportingOverflow(times)
        if !overflow && sum < UInt64(UInt8.max) {
            counts[index] = UInt8(sum)
        } else {
            counts[index] = .max
            beyondByte[cluster] = overflow ? Self.largestBeyondByte : sum - UInt64(UInt8.max)
        }
    }

    subscript(cluster: UInt64) -> UInt64 {
        let small = counts[Int(cluster)]
        return small == .max ? UInt64(small) + beyondByte[cluster, default: 0] : UInt64(small)
    }
}
