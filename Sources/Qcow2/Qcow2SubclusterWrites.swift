// Qcow2SubclusterWrites: writes and zeroes into an image with extended L2 entries
// (Qcow2Subclusters.swift).
//
// Writes, as QEMU's: a partial write into a cluster with no host cluster allocates one and
// writes only the subclusters it touches (their untouched edges copied in from what the guest
// reads there now); the other subclusters keep their state and go on reading from the backing
// image. A cluster this image owns is written in place, with the bitmap updated when the write
// reaches subclusters that were not allocated. Data a compressed or shared cluster holds is
// copied to the new host cluster over the whole range of allocated subclusters. Zeroing whole
// subclusters only sets their zero bits.
//
// Order: the writer's (Qcow2Writer.swift). Data goes to the file first; the entry and bitmap
// change in memory, together (one change of the cache), and reach the disk with their table at
// the next write-back, after the fdatasync that made the data durable. A 16-byte entry never
// straddles a 512-byte sector, so a torn table write leaves each entry old or new, never an
// entry with another's bitmap. A bitmap that marks fewer subclusters allocated than the file
// holds is a crash's only trace: those read as before.
import BlockGraph

extension Qcow2Driver {
    /// The bitmap of a guest cluster's entry, for the writer (under its lock), given the L1
    /// entry its entry was found through: 0 where the range has no L2 table.
    func subclusterBitmap(ofGuestCluster cluster: UInt64, l1Entry: UInt64) throws(BlockError) -> UInt64 {
        let l2Offset = l1Entry & Self.offsetMask
        guard l2Offset != 0 else { return 0 }
        return try l2Entry(tableIndices(ofGuestCluster: cluster).l2Index + 1, ofTableAt: l2Offset)
    }

    /// The bitmap beside `entry`, corruption signalled when the two make an invalid entry.
    private func checkedSubclusterBitmap(ofGuestCluster cluster: UInt64, entry: UInt64, l1Entry: UInt64) throws(BlockError) -> UInt64 {
        let bitmap = try subclusterBitmap(ofGuestCluster: cluster, l1Entry: l1Entry)
        if let problem = Self.subclusterBitmapProblem(entry: entry, bitmap: bitmap) {
            throw signalCorruption("Invalid cluster entry found (guest cluster \(cluster)): \(problem)")
        }
        return bitmap
    }

    /// Whether a whole-cluster write may go in place without a bitmap change: always with
    /// standard entries; with extended ones when every subcluster is allocated already.
    func allSubclustersAllocated(_ l1Entry: UInt64, forGuestCluster cluster: UInt64) throws(BlockError) -> Bool {
        guard extendedL2 else { return true }
        return try subclusterBitmap(ofGuestCluster: cluster, l1Entry: l1Entry) == Self.allAllocatedBitmap
    }

    /// Part of one cluster of an image with extended entries: in place when this image owns the
    /// cluster and every subcluster the write touches is allocated; otherwise, under the writer
    /// lock, the touched subclusters (widened over a compressed or shared cluster's allocated
    /// ones) are written whole, their edges as the guest reads them now, and the bitmap marks
    /// them allocated.
    func writeSubclusters(_ cluster: UInt64, at inCluster: Int, _ bytes: UnsafeRawBufferPointer) throws(BlockError) {
        let first = inCluster >> subclusterBits, last = (inCluster + bytes.count - 1) >> subclusterBits
        let touched = Self.subclusterMask(first..<last + 1)
        let inPlace = try writer.withLock { (state) throws(BlockError) -> UInt64? in
            try prepareForWriting(&state)
            let current = try entry(ofGuestCluster: cluster)
            let bitmap = try checkedSubclusterBitmap(ofGuestCluster: cluster, entry: current.raw, l1Entry: current.l1Entry)
            let allocated = UInt32(truncatingIfNeeded: bitmap), zeroes = UInt32(truncatingIfNeeded: bitmap >> 32)
            var range = first..<last + 1
            // Bytes of the range not to write: an allocated first or last subcluster of a cluster
            // written in place keeps its edges untouched — a write in place beside this one may
            // be changing them.
            var keptEdges = (head: false, tail: false)
            let target: UInt64
            switch current.mapping {
            case .data(let hostOffset) where current.isExclusive:
                if allocated & touched == touched {
                    inPlaceWrites.add(1, ordering: .relaxed)
                    return hostOffset + UInt64(inCluster)
                }
                keptEdges = (allocated >> UInt32(first) & 1 != 0, allocated >> UInt32(last) & 1 != 0)
                target = hostOffset
            case .data:
                if allocated != 0 {
                    range = min(first, allocated.trailingZeroBitCount)..<max(last + 1, 32 - allocated.leadingZeroBitCount)
                }
                target = try allocateClusters(1, &state)
            case .compressed:
                range = 0..<Self.subclustersPerCluster
                target = try allocateClusters(1, &state)
            case .unallocated, .zeroes:
                target = try allocateClusters(1, &state)
            }
            let start = keptEdges.head ? inCluster : range.lowerBound << subclusterBits
            let stop = keptEdges.tail ? inCluster + bytes.count : range.upperBound << subclusterBits
            try writeClusterRange(start..<stop, of: cluster, with: bytes, at: inCluster, to: target)
            let written = Self.subclusterMask(range)
            let newBitmap = UInt64(zeroes & ~written) << 32 | UInt64(allocated | written)
            try publish(target | Self.copiedBit, bitmap: newBitmap, forGuestCluster: cluster, &state)
            try writeBackIfCacheIsFull(&state)
            return nil
        }
        if let inPlace {
            defer { inPlaceWrites.subtract(1, ordering: .releasing) }
            try file.during(.dataWrite) { () throws(BlockError) in try file.driver.write(at: Int64(inPlace), from: bytes) }
        }
    }

    /// Writes bytes `range` of guest cluster `cluster` to host cluster `target`: `bytes` at
    /// `inCluster`, around them what the guest reads there now.
    private func writeClusterRange(_ range: Range<Int>, of cluster: UInt64, with bytes: UnsafeRawBufferPointer, at inCluster: Int,
                                   to target: UInt64) throws(BlockError) {
        let start = range.lowerBound, stop = range.upperBound
        let content = UnsafeMutableRawBufferPointer.allocate(byteCount: stop - start, alignment: 4096)
        defer { content.deallocate() }
        let guestStart = Int64(cluster) * Int64(clusterSize) + Int64(start)
        if inCluster > start {
            try read(at: guestStart, into: UnsafeMutableRawBufferPointer(rebasing: content[0..<inCluster - start]))
        }
        let writtenEnd = inCluster + bytes.count - start
        if writtenEnd < content.count {
            try read(at: guestStart + Int64(writtenEnd), into: UnsafeMutableRawBufferPointer(rebasing: content[writtenEnd...]))
        }
        UnsafeMutableRawBufferPointer(rebasing: content[inCluster - start..<writtenEnd]).copyMemory(from: bytes)
        try file.during(.copyOnWrite) { () throws(BlockError) in
            try file.driver.write(at: Int64(target) + Int64(start), from: UnsafeRawBufferPointer(content))
        }
    }

    /// Zeroing with extended entries, a cluster at a time (QEMU's zero_in_l2_slice and
    /// zero_l2_subclusters): whole subclusters get their zero bits, a whole cluster all of them —
    /// a compressed or shared cluster's entry is dropped then, an owned one keeps its host
    /// cluster (see writeZeroes). Parts of subclusters, and subclusters of a compressed cluster
    /// it does not cover whole, get zeroes written where they do not read as zeroes already.
    func zeroSubclusters(_ range: Range<Int64>, writingZeroes: Bool) throws(BlockError) {
        let size = Int64(clusterSize), subclusterSize = size / Int64(Self.subclustersPerCluster)
        var offset = range.lowerBound
        while offset < range.upperBound {
            let clusterStart = offset - offset % size
            let pieceEnd = min(clusterStart + size, range.upperBound)
            let wholeStart = min((offset + subclusterSize - 1) / subclusterSize * subclusterSize, pieceEnd)
            let wholeEnd = max(pieceEnd / subclusterSize * subclusterSize, wholeStart)
            let subclusters = Int((wholeStart - clusterStart) / subclusterSize)..<Int((wholeEnd - clusterStart) / subclusterSize)
            let zeroedBits = try zeroWholeSubclusters(subclusters, ofGuestCluster: UInt64(clusterStart / size))
            let rest = zeroedBits ? [offset..<wholeStart, wholeEnd..<pieceEnd] : [offset..<pieceEnd]
            for part in rest where !part.isEmpty {
                guard try !readsAsZeroes(at: part.lowerBound, byteCount: Int64(part.count)) else { continue }
                guard writingZeroes else {
                    throw BlockError(.notSupportedByFormat, "qcow2: zeroing \(part.count) bytes at \(part.lowerBound) would write zeroes")
                }
                let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: part.count, alignment: 16)
                defer { zeroes.deallocate() }
                zeroes.initializeMemory(as: UInt8.self, repeating: 0)
                try write(at: part.lowerBound, from: UnsafeRawBufferPointer(zeroes))
            }
            offset = pieceEnd
        }
    }

    /// Sets the zero bits of `subclusters` (clearing their allocated bits); false, changing
    /// nothing, when the cluster is compressed and not covered whole — its data cannot be split.
    private func zeroWholeSubclusters(_ subclusters: Range<Int>, ofGuestCluster cluster: UInt64) throws(BlockError) -> Bool {
        guard !subclusters.isEmpty else { return true }
        return try writer.withLock { (state) throws(BlockError) -> Bool in
            try prepareForWriting(&state)
            let current = try entry(ofGuestCluster: cluster)
            let bitmap = try checkedSubclusterBitmap(ofGuestCluster: cluster, entry: current.raw, l1Entry: current.l1Entry)
            let whole = subclusters.count == Self.subclustersPerCluster
            var newEntry = current.raw
            switch current.mapping {
            case .compressed where !whole:
                return false
            case .compressed:
                newEntry = 0 // covered whole: nothing of the compressed data is read any more
            case .data where !current.isExclusive && whole:
                newEntry = 0 // the data is not this entry's alone to keep
            case .unallocated where backing == nil && current.l1Entry & Self.offsetMask == 0:
                return true // reads as zeroes, and marking it would take a new L2 table
            default:
                break
            }
            let mask = UInt64(Self.subclusterMask(subclusters))
            let newBitmap = newEntry == 0 && whole ? Self.allZeroesBitmap : (bitmap | mask << 32) & ~mask
            guard newEntry != current.raw || newBitmap != bitmap else { return true }
            try publish(newEntry, bitmap: newBitmap, forGuestCluster: cluster, &state)
            try writeBackIfCacheIsFull(&state)
            return true
        }
    }
}
