// Qcow2BlockStatus: block status from the L2 entries (QEMU's qcow2_co_block_status over
// qcow2_get_host_offset). A run is clusters of one kind in a row — data at consecutive host
// offsets, zeroes with consecutive kept clusters or with none, unallocated — and never passes
// the end of the L2 table its first cluster is in, so one status costs at most one table read;
// a compressed cluster is a run of its own. An unallocated run is the backing image's status
// there, one node deeper, and reads as zeroes where there is no backing image or it has ended.
// In an image whose metadata was preallocated, data clusters over holes of the file read as
// zeroes too, as QEMU reports them.
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

    /// From the L2 entries, one table at a time: normal, zero, compressed and unallocated clusters,
    /// with unallocated runs answered by the backing child one level deeper.
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        if extendedL2 { return try subclusterStatus(at: byteOffset, byteCount: byteCount) }
        let (kind, runBytes) = try run(at: UInt64(byteOffset), byteCount: UInt64(byteCount))
        let inCluster = UInt64(byteOffset) & UInt64(clusterSize - 1)
        switch kind {
        case .data(let hostOffset):
            var status = BlockStatus(byteCount: runBytes, isData: true, isZero: false, isAllocated: true,
                                     hostOffset: Int64(hostOffset + inCluster), file: dataFileName)
            // QEMU's BDRV_BLOCK_RECURSE: in an image whose clusters were allocated ahead of its
            // data, the file's holes say which data clusters still read as zeroes. The file's
            // answer only refines this one, so a file that cannot give one is not an error.
            if isMetadataPreallocated, let inFile = try? dataDriver.blockStatus(at: Int64(hostOffset + inCluster), byteCount: runBytes) {
                status.byteCount = inFile.byteCount
                status.isZero = inFile.isZero
            }
            return status
        case .compressed:
            return BlockStatus(byteCount: runBytes, isData: true, isZero: false, isAllocated: true, isCompressed: true)
        case .zeroes(let hostOffset):
            return BlockStatus(byteCount: runBytes, isData: false, isZero: true, isAllocated: true,
                               hostOffset: hostOffset.map { Int64($0 + inCluster) }, file: hostOffset == nil ? nil : dataFileName)
        case .unallocated:
            return try backingStatus(at: byteOffset, byteCount: runBytes)
        }
    }

    /// Whether the image was created with its metadata preallocated, as QEMU's
    /// qcow2_detect_metadata_preallocation decides it once per open: more clusters have a
    /// refcount than the file has blocks allocated (by a ninth, and at least two).
    var isMetadataPreallocated: Bool {
        metadataPreallocation.withLock { known in
            if let known { return known }
            let detected = (try? detectMetadataPreallocation()) ?? false
            known = detected
            return detected
        }
    }

    /// Counts clusters with a refcount, from the start of the file, until the count passes what
    /// the allocated blocks account for: one refcount block in memory at a time.
    private func detectMetadataPreallocation() throws(BlockError) -> Bool {
        guard let allocated = try file.driver.allocatedBytes() else { return false }
        let clusterSize = UInt64(self.clusterSize)
        let fileLength = UInt64(try fileDriver.length())
        let realClusters = UInt64(allocated) / clusterSize
        let threshold = max(realClusters * 10 / 9, realClusters + 2)
        let endCluster = fileLength / clusterSize + (fileLength % clusterSize == 0 ? 0 : 1)
        let perBlock = refcountWidth.entriesPerBlock(clusterSize: self.clusterSize)
        let (tableOffset, tableClusters) = writer.withLock { ($0.refcountTableOffset, $0.refcountTableClusters) }
        var counted: UInt64 = 0
        var cluster: UInt64 = 0
        while cluster < endCluster && counted < threshold {
            let tableIndex = cluster / perBlock
            guard tableIndex < tableClusters * clusterSize / 8 else { break }
            let blockOffset = try Self.readBytes(file, at: tableOffset + tableIndex * 8, count: 8).bigEndian(UInt64.self, at: 0) & Self.offsetMask
            let blockEnd = min(endCluster, (tableIndex + 1) * perBlock)
            if blockOffset != 0 {
                guard blockOffset % clusterSize == 0, blockOffset + clusterSize <= fileLength else { return false }
                let block = try Self.readBytes(file, at: blockOffset, count: self.clusterSize)
                while cluster < blockEnd && counted < threshold {
                    if refcountWidth.value(in: block, at: Int(cluster % perBlock)) != 0 { counted += 1 }
                    cluster += 1
                }
            }
            cluster = max(cluster, blockEnd)
        }
        return counted >= threshold
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
    func backingStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        guard let backing else { return .unallocatedZeroes(byteCount: byteCount) }
        let backingLength = try backing.driver.length()
        guard byteOffset < backingLength else { return .unallocatedZeroes(byteCount: byteCount, pastBackingEnd: true) }
        return try backing.driver.blockStatus(at: byteOffset, byteCount: min(byteCount, backingLength - byteOffset)).inBacking()
    }
}
