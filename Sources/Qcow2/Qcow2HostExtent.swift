// Qcow2HostExtent: where a run of guest bytes is stored as it reads, for servers that send it
// from the page cache (BlockGraph's HostExtent.swift): a run of data clusters side by side in the
// image file, or a run of unallocated clusters where the backing image has one.
//
// Why a data cluster's range stays the guest cluster's for as long as the open lives, with no
// lock held while a server sends from it: this driver allocates only at the end of its file
// (Qcow2Allocation.swift: `nextFreeCluster` only grows while the image is open), so a cluster
// that loses its last reference — a shared cluster a write copied, a cluster a racing allocating
// write replaced, the host cluster of a zeroed cluster later rewritten elsewhere — keeps the bytes
// it had and is never given to other data. What changes a data cluster in place is a write to the
// same guest cluster, whose bytes the reader may see as a read racing that write may. Snapshot
// operations (which do move the end of allocation) are not made on an image a server holds.
//
// Compressed and zero clusters are read, as is everything in an image whose guest data is laid
// out otherwise (an external data file, subclusters): the copying read knows those layouts.
import BlockGraph

extension Qcow2Driver {
    /// The run from `byteOffset`: data clusters contiguous in the file, or unallocated clusters
    /// the backing image stores; otherwise the rest of the first cluster, to be read.
    public func hostExtent(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> HostExtent {
        let size = Int64(clusterSize)
        let firstPiece = min(byteCount, size - byteOffset % size)
        guard header.incompatibleFeatures & (Qcow2Header.externalDataFileBit | Qcow2Header.extendedL2Bit) == 0 else {
            return .mustRead(byteCount: firstPiece)
        }
        let first = UInt64(byteOffset / size)
        let firstMapping = try mapping(ofGuestCluster: first)
        // How far the clusters after the first continue it; at most what was asked.
        func run(continuing continues: (_ index: UInt64, _ mapping: ClusterMapping) -> Bool) throws(BlockError) -> Int64 {
            var count = firstPiece
            var index: UInt64 = 1
            while count < byteCount, continues(index, try mapping(ofGuestCluster: first + index)) {
                count += min(size, byteCount - count)
                index += 1
            }
            return count
        }
        switch firstMapping {
        case .data(let hostOffset):
            let count = try run { index, mapping in mapping == .data(hostOffset: hostOffset + index * UInt64(size)) }
            return try fileDriver.hostExtent(at: Int64(hostOffset) + byteOffset % size, byteCount: count)
        case .unallocated:
            guard let backing else { return .mustRead(byteCount: firstPiece) }
            let count = try run { _, mapping in mapping == .unallocated }
            // A backing image shorter than this one reads as zeroes past its end.
            let inside = min(count, try backing.driver.length() - byteOffset)
            guard inside > 0 else { return .mustRead(byteCount: count) }
            return try backing.driver.hostExtent(at: byteOffset, byteCount: inside)
        case .zeroes, .compressed:
            return .mustRead(byteCount: firstPiece)
        }
    }
}
