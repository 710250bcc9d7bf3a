// Qcow2Subclusters: extended L2 entries (qcow2.rst, "Extended L2 Entries"; incompatible bit 4).
// Each L2 entry is 16 bytes: the standard entry, then a bitmap word splitting the cluster into
// 32 subclusters —
//
//   bits  0–31  allocated: the subcluster's data is at its place in the host cluster
//   bits 32–63  reads as zeroes (never together with its allocated bit)
//   neither     unallocated: read from the backing image, or zeroes without one
//
// Bit 0 of the standard entry is unused (the bitmap says "zeroes"); a compressed entry's bitmap
// must be 0. As QEMU's qcow2_get_subcluster_type, an entry is invalid — corruption — when a
// subcluster is both allocated and zero, or is allocated while the entry has no host cluster.
//
// Writes are in Qcow2SubclusterWrites.swift.
import BlockGraph

extension Qcow2Driver {
    /// What one subcluster reads as.
    enum SubclusterState: Equatable {
        case data
        case zeroes
        case unallocated
    }

    static let subclustersPerCluster = 32
    /// Every subcluster allocated, none zero.
    static let allAllocatedBitmap: UInt64 = 0xffff_ffff
    /// Every subcluster zero, none allocated.
    static let allZeroesBitmap: UInt64 = 0xffff_ffff << 32

    var subclusterBits: Int { clusterBits - 5 }

    /// The bitmap a whole-cluster entry gets: a data cluster has every subcluster allocated; a
    /// compressed or empty entry none.
    static func wholeClusterBitmap(for entry: UInt64) -> UInt64 {
        entry & compressedBit == 0 && entry & offsetMask != 0 ? allAllocatedBitmap : 0
    }

    /// The bits of subclusters `range` in one half of a bitmap.
    static func subclusterMask(_ range: Range<Int>) -> UInt32 {
        guard !range.isEmpty else { return 0 }
        let upper: UInt32 = range.upperBound >= 32 ? .max : (1 << UInt32(range.upperBound)) - 1
        return upper & ~((1 << UInt32(range.lowerBound)) - 1)
    }

    /// Subcluster `index`'s state, and where its run of subclusters in that state ends.
    static func subclusterRun(_ bitmap: UInt64, from index: Int) -> (state: SubclusterState, end: Int) {
        let allocated = UInt32(truncatingIfNeeded: bitmap), zeroes = UInt32(truncatingIfNeeded: bitmap >> 32)
        let before = subclusterMask(0..<index)
        if zeroes >> UInt32(index) & 1 != 0 { return (.zeroes, (~(zeroes | before)).trailingZeroBitCount) }
        if allocated >> UInt32(index) & 1 != 0 { return (.data, (~(allocated | before)).trailingZeroBitCount) }
        return (.unallocated, ((allocated | zeroes) & ~before).trailingZeroBitCount)
    }

    /// Why an extended entry is invalid (QEMU's QCOW2_SUBCLUSTER_INVALID), nil when it is not.
    static func subclusterBitmapProblem(entry: UInt64, bitmap: UInt64) -> String? {
        guard entry & compressedBit == 0 else { return nil }
        let allocated = UInt32(truncatingIfNeeded: bitmap), zeroes = UInt32(truncatingIfNeeded: bitmap >> 32)
        if entry & offsetMask == 0 {
            return allocated != 0 ? "unallocated cluster with allocated subclusters" : nil
        }
        return allocated & zeroes != 0 ? "subclusters both allocated and zero" : nil
    }

    /// An extended entry and its bitmap, seen together.
    func extendedL2Entry(ofGuestCluster cluster: UInt64) throws(BlockError) -> (entry: UInt64, bitmap: UInt64) {
        let (l1Index, l2Index) = tableIndices(ofGuestCluster: cluster)
        if let pair = readIndex.entryPair(l1Index: l1Index, entryIndex: l2Index) { return pair }
        while true {
            let (l1Entry, cached, generation) = cache.withLock { (cache) -> (UInt64, (entry: UInt64, bitmap: UInt64)?, UInt64) in
                let found = cache.lookup(l1Index: l1Index, entryIndex: l2Index)
                guard let entry = found.entry else { return (found.l1Entry, nil, found.generation) }
                let bitmap = cache.entry(l2Index + 1, ofTableAt: found.l1Entry & Self.offsetMask) ?? 0
                return (found.l1Entry, (entry, bitmap), found.generation)
            }
            let l2Offset = l1Entry & Self.offsetMask
            guard l2Offset != 0 else { return (0, 0) }
            if let cached { return cached }
            if let table = try loadL2Table(at: l2Offset, readAt: generation) { return (table[l2Index], table[l2Index + 1]) }
        }
    }

    /// An extended entry and what it maps to, corruption signalled for an invalid one.
    private func checkedExtendedEntry(ofGuestCluster cluster: UInt64) throws(BlockError) -> (bitmap: UInt64, mapping: ClusterMapping, host: UInt64?) {
        let (entry, bitmap) = try extendedL2Entry(ofGuestCluster: cluster)
        let mapping = try checkedMapping(ofEntry: entry, cluster: cluster)
        if let problem = Self.subclusterBitmapProblem(entry: entry, bitmap: bitmap) {
            throw signalCorruption("Invalid cluster entry found (guest cluster \(cluster), entry 0x\(String(entry, radix: 16)), "
                                   + "bitmap 0x\(String(bitmap, radix: 16)): \(problem))")
        }
        // The host cluster a zero or unallocated subcluster's cluster keeps (QEMU's *_ALLOC).
        let host = entry & Self.compressedBit == 0 && entry & Self.offsetMask != 0 ? entry & Self.offsetMask : nil
        return (bitmap, mapping, host)
    }

    /// One cluster's piece of a read, a run of subclusters of one state at a time.
    func readSubclusters(_ cluster: UInt64, at inCluster: Int, guestOffset: Int64, into target: UnsafeMutableRawBufferPointer) throws(BlockError) {
        let (bitmap, mapping, host) = try checkedExtendedEntry(ofGuestCluster: cluster)
        if case .compressed(let hostOffset, let byteCount) = mapping {
            return try readCompressed(hostOffset: hostOffset, byteCount: byteCount, at: inCluster, into: target)
        }
        var done = 0
        while done < target.count {
            let position = inCluster + done
            let (state, runEnd) = Self.subclusterRun(bitmap, from: position >> subclusterBits)
            let count = min(target.count, (runEnd << subclusterBits) - inCluster) - done
            let piece = UnsafeMutableRawBufferPointer(rebasing: target[done..<done + count])
            switch state {
            case .data: try readHost(at: host.unsafelyUnwrapped + UInt64(position), into: piece)
            case .zeroes: piece.initializeMemory(as: UInt8.self, repeating: 0)
            case .unallocated: try readBacking(at: guestOffset + Int64(done), into: piece)
            }
            done += count
        }
    }

    /// Block status by subclusters (QEMU's count_contiguous_subclusters): a run is subclusters of
    /// one state, on across clusters while each continues it from its first subcluster, at
    /// consecutive host offsets where the clusters have one, and within one L2 table.
    func subclusterStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        let offset = UInt64(byteOffset), clusterShift = UInt64(clusterBits), clusterBytes = UInt64(clusterSize)
        let firstCluster = offset >> clusterShift
        let l1Index = tableIndices(ofGuestCluster: firstCluster).l1Index
        let tableEnd = (UInt64(l1Index) + 1) << (UInt64(l2Bits) + clusterShift)
        let end = min(offset + UInt64(byteCount), tableEnd)
        let l1Entry = cache.withLock { $0.l1.indices.contains(l1Index) ? $0.l1[l1Index] : 0 }
        guard l1Entry & Self.offsetMask != 0 else { return try backingStatus(at: byteOffset, byteCount: Int64(end - offset)) }
        let (bitmap, mapping, host) = try checkedExtendedEntry(ofGuestCluster: firstCluster)
        let inCluster = offset & (clusterBytes - 1)
        if case .compressed = mapping {
            let runEnd = min(end, (firstCluster + 1) << clusterShift)
            return BlockStatus(byteCount: Int64(runEnd - offset), isData: true, isZero: false, isAllocated: true, isCompressed: true)
        }
        let (state, firstEnd) = Self.subclusterRun(bitmap, from: Int(inCluster) >> subclusterBits)
        var runEnd = firstCluster << clusterShift + UInt64(firstEnd << subclusterBits)
        var cluster = firstCluster + 1
        while firstEnd == Self.subclustersPerCluster && cluster << clusterShift < end {
            let next = try checkedExtendedEntry(ofGuestCluster: cluster)
            if case .compressed = next.mapping { break }
            let expectedHost = host.map { $0 + (cluster - firstCluster) * clusterBytes }
            let (nextState, nextEnd) = Self.subclusterRun(next.bitmap, from: 0)
            guard nextState == state, next.host == expectedHost else { break }
            runEnd = cluster << clusterShift + UInt64(nextEnd << subclusterBits)
            guard nextEnd == Self.subclustersPerCluster else { break }
            cluster += 1
        }
        let runBytes = Int64(min(runEnd, end) - offset)
        let hostOffset = host.map { Int64($0 + inCluster) }
        switch state {
        case .data:
            var status = BlockStatus(byteCount: runBytes, isData: true, isZero: false, isAllocated: true, hostOffset: hostOffset, file: fileName)
            // As for standard entries (Qcow2BlockStatus.swift): a preallocated image's holes
            // refine the answer, which is not an error when the file cannot give it.
            if isMetadataPreallocated, let hostOffset, let inFile = try? file.driver.blockStatus(at: hostOffset, byteCount: runBytes) {
                status.byteCount = inFile.byteCount
                status.isZero = inFile.isZero
            }
            return status
        case .zeroes:
            return BlockStatus(byteCount: runBytes, isData: false, isZero: true, isAllocated: true, hostOffset: hostOffset,
                               file: host == nil ? nil : fileName)
        case .unallocated:
            // QEMU reports the host cluster an unallocated subcluster's cluster keeps, which
            // qemu-img map shows where no backing image answers instead.
            guard backing == nil, let hostOffset else { return try backingStatus(at: byteOffset, byteCount: runBytes) }
            return BlockStatus(byteCount: runBytes, isData: false, isZero: true, isAllocated: false, hostOffset: hostOffset, file: fileName)
        }
    }
}

extension Qcow2Driver {
    /// What `blk check` reports for an extended entry's bitmap, in qemu-img check's words: each
    /// is a corruption.
    static func subclusterFinding(entry: UInt64, bitmap: UInt64, index: Int) -> String? {
        let allocated = UInt32(truncatingIfNeeded: bitmap), zeroes = UInt32(truncatingIfNeeded: bitmap >> 32)
        if entry & compressedBit != 0 {
            guard bitmap != 0 else { return nil }
            return "ERROR compressed cluster \(index) with non-zero subcluster allocation bitmap, entry=0x\(String(entry, radix: 16))"
        }
        if entry & offsetMask == 0 {
            return allocated != 0 ? "ERROR: Unallocated cluster has non-zero subcluster allocation map" : nil
        }
        guard allocated & zeroes != 0 else { return nil }
        return "ERROR offset=\(String(entry & offsetMask, radix: 16)): Allocated cluster has corrupted subcluster allocation bitmap"
    }
}
