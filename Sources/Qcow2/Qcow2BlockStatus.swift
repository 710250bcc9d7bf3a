// Qcow2BlockStatus: block status from the L2 entries (QEMU's qcow2_co_block_status over
// qcow2_get_host_offset). A run is clusters of one kind in a row — data at consecutive host
// offsets, zeroes with consecutive kept clusters or with none, unallocated — and never passes
// the end of the L2 table its first cluster is in, so one status costs at most one table read;
// a compressed cluster is a run of its own. An unallocated run is the backing image's status
// there, one node deeper, and reads as zeroes where there is no backing image or it has ended.
import BlockGraph

extension Qcow2Driver {
    /// What an L2 entry makes of its cluster, for block status: the read mapping, with the host
    /// cluster a zero entry may keep (QEMU's "zero, allocated"), which qemu-img map shows.
    private enum RunKind: Equatable {
        case unallocated
        case zeroes(hostOffset: UInt64?)
        case data(hostOffset: UInt64)
        case compressed

        /// The kind the next cluster has if it continues the run.
        func following(clusterSize: UInt64) -> RunKind {
            switch self {
            case .unallocated, .compressed: self
            case .zeroes(let hostOffset): .zeroes(hostOffset: hostOffset.map { $0 + clusterSize })
            case .data(let hostOffset): .data(hostOffset: hostOffset + clusterSize)
            }
        }
    }

    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        let (kind, runBytes) = try run(at: UInt64(byteOffset), byteCount: UInt64(byteCount))
        let inCluster = UInt64(byteOffset) & UInt64(clusterSize - 1)
        switch kind {
        case .data(let hostOffset):
            return BlockStatus(byteCount: runBytes, isData: true, isZero: false, isAllocated: true,
                               hostOffset: Int64(hostOffset + inCluster), file: fileName)
        case .compressed:
            return BlockStatus(byteCount: runBytes, isData: true, isZero: false, isAllocated: true, isCompressed: true)
        case .zeroes(let hostOffset):
            return BlockStatus(byteCount: runBytes, isData: false, isZero: true, isAllocated: true,
                               hostOffset: hostOffset.map { Int64($0 + inCluster) }, file: hostOffset == nil ? nil : fileName)
        case .unallocated:
            return try backingStatus(at: byteOffset, byteCount: runBytes)
        }
    }

    /// The kind of the cluster at `byteOffset` and how many bytes from there share it.
    private func run(at byteOffset: UInt64, byteCount: UInt64) throws(BlockError) -> (RunKind, Int64) {
        let clusterShift = UInt64(clusterBits)
        let firstCluster = byteOffset >> clusterShift
        let l1Index = tableIndices(ofGuestCluster: firstCluster).l1Index
        // Offsets are below 2^63 and a table maps at most 2^39 bytes: no overflow in UInt64.
        let tableEnd = (UInt64(l1Index) + 1) << (UInt64(l2Bits) + clusterShift)
        let end = min(byteOffset + byteCount, tableEnd)
        let l1Entry = cache.withLock { $0.l1.indices.contains(l1Index) ? $0.l1[l1Index] : 0 }
        guard l1Entry & Self.offsetMask != 0 else { return (.unallocated, Int64(end - byteOffset)) }
        let first = try runKind(ofGuestCluster: firstCluster)
        var cluster = firstCluster + 1
        if first != .compressed {
            var expected = first.following(clusterSize: UInt64(clusterSize))
            while cluster << clusterShift < end, try runKind(ofGuestCluster: cluster) == expected {
                expected = expected.following(clusterSize: UInt64(clusterSize))
                cluster += 1
            }
        }
        return (first, Int64(min(cluster << clusterShift, end) - byteOffset))
    }

    private func runKind(ofGuestCluster cluster: UInt64) throws(BlockError) -> RunKind {
        let entry = try l2Entry(ofGuestCluster: cluster)
        switch try checkedMapping(ofEntry: entry, cluster: cluster) {
        case .unallocated: return .unallocated
        case .data(let hostOffset): return .data(hostOffset: hostOffset)
        case .compressed: return .compressed
        case .zeroes:
            let hostOffset = entry & Self.offsetMask
            guard hostOffset != 0 else { return .zeroes(hostOffset: nil) }
            guard hostOffset & UInt64(clusterSize - 1) == 0 else {
                throw signalCorruption("Cluster allocation offset 0x\(String(hostOffset, radix: 16)) unaligned (guest cluster \(cluster))")
            }
            return .zeroes(hostOffset: hostOffset)
        }
    }

    /// An unallocated run: the backing image's status, up to its end; zeroes past it or without one.
    private func backingStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        guard let backing else { return .unallocatedZeroes(byteCount: byteCount) }
        let backingLength = try backing.driver.length()
        guard byteOffset < backingLength else { return .unallocatedZeroes(byteCount: byteCount) }
        return try backing.driver.blockStatus(at: byteOffset, byteCount: min(byteCount, backingLength - byteOffset)).inBacking()
    }
}
