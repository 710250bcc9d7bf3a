// Qcow2Writer: writes to a qcow2 image, in the order that makes a crash leave leaks but never
// corruption (QEMU's order, kept with a write-back metadata cache as QEMU keeps it):
//
//   on each write   the new data cluster, complete (a partial write copies the rest of the
//                   cluster in first: from the backing image, a compressed cluster, a cluster
//                   shared with a snapshot, or zeroes), goes to the file; its refcount, the L2
//                   entry that points to it, and a new L2 table if the range had none or its table
//                   is shared with a snapshot, change only in memory (dirty);
//   on flush        1. the dirty refcount blocks are written; fdatasync: data and refcounts
//   (or when too       are durable; new refcount table entries, fdatasync;
//   many tables     2. the dirty L2 tables are written;
//   are dirty)      3. fdatasync, then the L1 entries of new L2 tables;
//                   4. fdatasync, then the references that replaced clusters and tables lose
//                      (written, and flushed, at once); a last fdatasync.
//
// A table is written only after everything it points to is durable, and a reference is dropped
// only after nothing on disk points through it any more: a crash anywhere leaves clusters
// counted but unused — leaks, which `qemu-img check -r leaks` repairs — and loses at most the
// writes since the last flush, as with any disk cache.
//
// Snapshots share clusters and L2 tables with the active image (refcount above 1, COPIED clear,
// qcow2.rst): a write never changes a shared cluster or table in place. It gets a copy with
// COPIED set, and the shared one loses this image's reference in step 4 — so the snapshot keeps
// exactly what it had. Clusters whose L1 and L2 entries both carry COPIED are overwritten in place.
import BlockGraph

/// What the writer keeps between writes; guarded by `Qcow2Driver.writer`, which also makes
/// allocating writes one at a time.
struct Qcow2WriterState {
    /// Where the active L1 table and the refcount table are now (resize and refcount-table
    /// growth move them).
    var l1TableOffset: UInt64
    var refcountTableOffset: UInt64
    var refcountTableClusters: UInt64
    /// The refcount table, read on the first write.
    var refcountTable: [UInt64]?
    var nextFreeCluster: UInt64 = 0
    /// How far the file reaches: grown ahead of allocation in large steps, trimmed by flush.
    var fileEnd: UInt64 = 0
    /// False once growing ahead failed (a block device, a file system that refuses): appending
    /// writes then extend the file themselves.
    var growsAhead = true
    /// Where the next compressed cluster may start: inside the last cluster allocated, which
    /// compressed clusters share as QEMU packs them.
    var compressedTail: UInt64?
    var autoclearCleared = false
    /// L1 entries of new L2 tables, written after the tables themselves.
    var pendingL1: [Int: UInt64] = [:]
    /// Host clusters that lose a reference once the L2 entries no longer point to them.
    var pendingReleases: [UInt64] = []
    /// Refcount blocks read or changed, by offset.
    var refcountBlocks: [UInt64: RefcountBlock] = [:]
    /// Refcount table entries of new blocks, written once the blocks are durable.
    var pendingRefcountTable: [Int: UInt64] = [:]
    /// The snapshot table once a snapshot operation of this open moved it (the header as
    /// opened says where it was).
    var snapshotTable: Qcow2SnapshotTableLocation?
    /// Set when a metadata update failed halfway in a way memory cannot mirror: every later
    /// write and write-back fails with it rather than write from a stale picture.
    var failure: BlockError?
}

/// A refcount block in memory, and whether it changed since it was last written.
struct RefcountBlock {
    var bytes: [UInt8]
    var isDirty: Bool
}

extension Qcow2Driver {
    static let copiedBit: UInt64 = 1 << 63

    /// Writes runs of whole clusters and partial clusters. A run of whole clusters that need new
    /// host clusters gets them side by side and goes to the file in one write, outside the writer
    /// lock — only allocating the clusters and publishing their entries take it — so writes run
    /// in parallel; partial clusters copy the rest of the cluster in under the lock.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try refuseWritesIfCorrupt()
        try markBitmaps(at: byteOffset, byteCount: Int64(buffer.count))
        var done = 0
        while done < buffer.count {
            let offset = byteOffset + Int64(done)
            let inCluster = Int(offset % Int64(clusterSize))
            let wholeClusters = inCluster == 0 ? (buffer.count - done) / clusterSize : 0
            if wholeClusters > 0 {
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[done..<done + wholeClusters * clusterSize])
                done += try writeWholeClusters(from: UInt64(offset / Int64(clusterSize)), bytes) * clusterSize
            } else {
                let piece = min(buffer.count - done, clusterSize - inCluster)
                try writePartialCluster(UInt64(offset / Int64(clusterSize)), at: inCluster,
                                        UnsafeRawBufferPointer(rebasing: buffer[done..<done + piece]))
                done += piece
            }
        }
    }

    /// Called where metadata changed: overwrites in place change none, so they never take the
    /// writer lock a second time.
    func writeBackIfCacheIsFull(_ state: inout Qcow2WriterState) throws(BlockError) {
        let (dirtyCount, capacity) = cache.withLock { ($0.dirty.count, $0.capacity) }
        if dirtyCount >= capacity / 2 || state.refcountBlocks.count >= refcountBlockCapacity { try writeBackMetadata(&state) }
    }

    /// Writes the leading clusters of `bytes` (whole clusters from guest cluster `first`) that
    /// can go together in one system call — clusters this image owns that lie side by side in
    /// the file, overwritten in place, or every cluster up to the next owned one, each given a
    /// new host cluster — and returns how many it wrote.
    private func writeWholeClusters(from first: UInt64, _ bytes: UnsafeRawBufferPointer) throws(BlockError) -> Int {
        let available = bytes.count / clusterSize
        enum Plan { case inPlace(UInt64, Int), newClusters(UInt64, Int) }
        let plan = try writer.withLock { (state) throws(BlockError) -> Plan in
            try prepareForWriting(&state)
            func ownedHostOffset(_ cluster: UInt64) throws(BlockError) -> UInt64? {
                let current = try entry(ofGuestCluster: cluster)
                guard case .data(let hostOffset) = current.mapping, current.isExclusive,
                      try allSubclustersAllocated(current.l1Entry, forGuestCluster: cluster) else { return nil }
                return hostOffset
            }
            var count = 1
            if let hostOffset = try ownedHostOffset(first) {
                while count < available, try ownedHostOffset(first + UInt64(count)) == hostOffset + UInt64(count * clusterSize) {
                    count += 1
                }
                inPlaceWrites.add(1, ordering: .relaxed)
                return .inPlace(hostOffset, count)
            }
            while count < available, try ownedHostOffset(first + UInt64(count)) == nil { count += 1 }
            return .newClusters(try allocateDataClusters(UInt64(count), from: first, &state), count)
        }
        switch plan {
        case .inPlace(let hostOffset, let count):
            defer { inPlaceWrites.subtract(1, ordering: .releasing) }
            try dataNode.during(.dataWrite) { () throws(BlockError) in
                try dataDriver.write(at: Int64(hostOffset), from: UnsafeRawBufferPointer(rebasing: bytes[0..<count * clusterSize]))
            }
            return count
        case .newClusters(let hostOffset, let count):
            try dataNode.during(.dataWrite) { () throws(BlockError) in
                try dataDriver.write(at: Int64(hostOffset), from: UnsafeRawBufferPointer(rebasing: bytes[0..<count * clusterSize]))
            }
            try writer.withLock { (state) throws(BlockError) in
                for index in 0..<count {
                    let host = hostOffset + UInt64(index * clusterSize)
                    try publish(host | Self.copiedBit, forGuestCluster: first + UInt64(index), &state)
                }
                try writeBackIfCacheIsFull(&state)
            }
            return count
        }
    }

    /// Part of one cluster: in place when this image owns the cluster, else the whole cluster
    /// as the guest sees it now, with the new bytes over it, goes to a new host cluster.
    private func writePartialCluster(_ cluster: UInt64, at inCluster: Int, _ bytes: UnsafeRawBufferPointer) throws(BlockError) {
        if extendedL2 { return try writeSubclusters(cluster, at: inCluster, bytes) }
        let inPlace = try writer.withLock { (state) throws(BlockError) -> UInt64? in
            try prepareForWriting(&state)
            let current = try entry(ofGuestCluster: cluster)
            if case .data(let hostOffset) = current.mapping, current.isExclusive {
                inPlaceWrites.add(1, ordering: .relaxed)
                return hostOffset + UInt64(inCluster)
            }
            let dataCluster = try allocateDataClusters(1, from: cluster, &state)
            let content = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
            defer { content.deallocate() }
            try read(at: Int64(cluster) * Int64(clusterSize), into: content)
            UnsafeMutableRawBufferPointer(rebasing: content[inCluster..<inCluster + bytes.count]).copyMemory(from: bytes)
            try dataNode.during(.copyOnWrite) { () throws(BlockError) in
                try dataDriver.write(at: Int64(dataCluster), from: UnsafeRawBufferPointer(content))
            }
            try publish(dataCluster | Self.copiedBit, forGuestCluster: cluster, &state)
            try writeBackIfCacheIsFull(&state)
            return nil
        }
        if let inPlace {
            defer { inPlaceWrites.subtract(1, ordering: .releasing) }
            try dataNode.during(.dataWrite) { () throws(BlockError) in try dataDriver.write(at: Int64(inPlace), from: bytes) }
        }
    }

    /// Writes back the metadata and trims what the file was grown ahead by, so that after a
    /// flush the file ends where the image does (as qemu-img check reports it).
    public func flush() throws(BlockError) {
        try writer.withLock { (state) throws(BlockError) in
            try writeBackMetadata(&state)
            try trimGrowth(&state)
        }
        try file.driver.flush()
        try flushDataFile()
    }

    /// Steps 1–4 of the order above.
    func writeBackMetadata(_ state: inout Qcow2WriterState) throws(BlockError) {
        if let failure = state.failure { throw failure }
        let dirty = cache.withLock { cache in cache.dirty.map { ($0, cache.table(at: $0)!) } }
        let releasing = !state.pendingReleases.isEmpty && inPlaceWrites.load(ordering: .acquiring) == 0
        guard !dirty.isEmpty || !state.pendingL1.isEmpty || releasing
              || state.refcountBlocks.values.contains(where: \.isDirty) else { return }
        try flushDataFile()
        try file.during(.refblockUpdate) { () throws(BlockError) in
            try writeRefcountBlocks(&state)
            try file.driver.flush()
        }
        // New refcount table entries, in dependency order: a new block's own refcount may sit in
        // another new block, and an entry that became durable before that block's entry would
        // make a referenced cluster with no reachable refcount — corruption, where a crash may
        // only leak. So entries whose refcount holder is already reachable (or themselves) go
        // first, then a flush, then the ones that depended on them. (Found by Qcow2CrashTests.)
        let perBlock = refcountWidth.entriesPerBlock(clusterSize: clusterSize)
        try file.during(.reftableUpdate) { () throws(BlockError) in
            var pending = state.pendingRefcountTable
            while !pending.isEmpty {
                var round = pending.filter { index, block in
                    let holder = Int(block / UInt64(clusterSize) / perBlock)
                    return holder == index || pending[holder] == nil
                }
                if round.isEmpty { round = pending }
                for (index, block) in round.sorted(by: { $0.key < $1.key }) {
                    try writeBigEndian(block, at: state.refcountTableOffset + UInt64(index) * 8)
                    state.pendingRefcountTable[index] = nil
                }
                pending = pending.filter { round[$0.key] == nil }
                try file.driver.flush()
            }
        }
        try file.during(.l2Update) { () throws(BlockError) in
            for (offset, table) in dirty {
                var bytes = [UInt8](repeating: 0, count: clusterSize)
                for (index, entry) in table.enumerated() where entry != 0 { bytes.setBigEndian(entry, at: index * 8) }
                try writeBytes(bytes, at: offset)
                cache.withLock { $0.markClean(offset) }
            }
        }
        if !state.pendingL1.isEmpty {
            try file.during(.l1Update) { () throws(BlockError) in
                try file.driver.flush()
                for (index, entry) in state.pendingL1 { try writeBigEndian(entry, at: state.l1TableOffset + UInt64(index) * 8) }
                state.pendingL1 = [:]
            }
        }
        if releasing {
            try file.during(.clusterFree) { () throws(BlockError) in
                try file.driver.flush()
                // Each release leaves the list as it is applied: after an error, none is applied
                // twice (one not applied is a leak).
                while let cluster = state.pendingReleases.popLast() {
                    let count = try refcount(ofCluster: cluster, &state)
                    if count > 0 { try setRefcount(ofCluster: cluster, to: count - 1, &state) }
                }
                try writeRefcountBlocks(&state)
            }
        }
        try file.driver.flush()
    }

    /// Zeroes a cluster at a time: a whole cluster by its L2 entry alone (a zero cluster, in
    /// version 3 images), part of one by writing zeroes where it does not already read as zeroes,
    /// so zeroing unallocated space allocates nothing. `mayUnmap` is not used: a cluster this
    /// image owns keeps its host cluster (a preallocated zero cluster), because a write planned
    /// in place before the zeroing may still be on its way to it, and a freed cluster could by
    /// then hold another guest cluster's data.
    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try zero(byteOffset..<byteOffset + byteCount, writingZeroes: true)
    }

    /// Fast where every part of the range is a whole cluster of a version 3 image (a whole
    /// subcluster with extended L2 entries) or already reads as zeroes; otherwise refused
    /// before anything changes.
    public func writeZeroesWithoutFallback(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        let size = Int64(extendedL2 ? clusterSize / 32 : clusterSize), end = byteOffset + byteCount
        var slowParts = [byteOffset..<end]
        if hasZeroClusters || extendedL2 {
            let headEnd = min((byteOffset + size - 1) / size * size, end)
            slowParts = [byteOffset..<headEnd, max(end / size * size, headEnd)..<end]
        }
        for part in slowParts where !part.isEmpty {
            guard try readsAsZeroes(at: part.lowerBound, byteCount: Int64(part.count)) else {
                throw BlockError(.notSupportedByFormat, "qcow2: zeroing \(part.count) bytes at \(part.lowerBound) would write zeroes")
            }
        }
        try zero(byteOffset..<end, writingZeroes: false)
    }

    /// Whole clusters become zero clusters, an L2 table's worth per hold of the writer lock;
    /// parts of clusters get zeroes written where they do not read as zeroes already, unless
    /// `writingZeroes` is false (the caller checked that they do).
    private func zero(_ range: Range<Int64>, writingZeroes: Bool) throws(BlockError) {
        try refuseWritesIfCorrupt()
        try markBitmaps(at: range.lowerBound, byteCount: Int64(range.count))
        if extendedL2 { return try zeroSubclusters(range, writingZeroes: writingZeroes) }
        let size = Int64(clusterSize)
        var zeroes: UnsafeMutableRawBufferPointer?
        defer { zeroes?.deallocate() }
        var offset = range.lowerBound
        while offset < range.upperBound {
            let pieceEnd = min(offset - offset % size + size, range.upperBound)
            if hasZeroClusters && offset % size == 0 && pieceEnd - offset == size {
                let count = min((range.upperBound - offset) / size, Int64(l2Entries))
                try zeroClusters(from: UInt64(offset / size), count: Int(count))
                offset += count * size
                continue
            }
            if writingZeroes, try !readsAsZeroes(at: offset, byteCount: pieceEnd - offset) {
                if zeroes == nil {
                    zeroes = .allocate(byteCount: clusterSize, alignment: 16)
                    zeroes!.initializeMemory(as: UInt8.self, repeating: 0)
                }
                try write(at: offset, from: UnsafeRawBufferPointer(rebasing: zeroes![0..<Int(pieceEnd - offset)]))
            }
            offset = pieceEnd
        }
    }

    /// Points `count` guest clusters from `first` at zeroes, those that do not read as zeroes yet.
    private func zeroClusters(from first: UInt64, count: Int) throws(BlockError) {
        try zeroRawDataFile(from: first, count: count)
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state)
            for cluster in first..<first + UInt64(count) {
                let current = try entry(ofGuestCluster: cluster)
                switch current.mapping {
                case .zeroes:
                    continue
                case .unallocated where backing == nil:
                    continue
                case .data(let hostOffset) where current.isExclusive:
                    try publish(hostOffset | Self.copiedBit | Self.zeroBit, forGuestCluster: cluster, &state)
                default:
                    try publish(Self.zeroBit, forGuestCluster: cluster, &state)
                }
                try writeBackIfCacheIsFull(&state)
            }
        }
    }

    /// Checks once that this image can be written: clears the autoclear bits it does not know
    /// (all but the bitmaps'), as qcow2.rst asks of a writer that does not know them, and repairs the refcounts of a dirty image (one
    /// that lazy refcounts left unfinished), as QEMU does when it opens one read-write.
    func prepareForWriting(_ state: inout Qcow2WriterState) throws(BlockError) {
        if let failure = state.failure { throw failure }
        if amended.load(ordering: .acquiring) {
            throw BlockError(.stale, "qcow2: the image's format options were amended; open it again to write")
        }
        guard state.refcountTable == nil else { return }
        // Bitmaps blk keeps up to date keep their autoclear bit, as does a raw data file blk
        // keeps raw; a hostile directory or table refuses the write before anything changes.
        _ = try bitmapState()
        let keptAutoclear = header.autoclearFeatures & (Qcow2Bitmap.autoclearBit | honouredAutoclearBits)
        if header.autoclearFeatures != keptAutoclear && !state.autoclearCleared {
            try file.during(.headerUpdate) { () throws(BlockError) in
                try writeBigEndian(keptAutoclear, at: 88)
                try file.driver.flush()
            }
            state.autoclearCleared = true
        }
        try loadRefcountTable(&state)
        if header.incompatibleFeatures & Qcow2Header.dirtyBit != 0 && !openedForRepair && !dirtyBitCleared.load(ordering: .acquiring) {
            _ = try checkAndRepair(.all, &state)
        }
    }

    /// An active cluster's L2 entry (0 when its range has no L2 table), what it maps to, whether
    /// this image alone owns it and its L2 table (COPIED on both), so it may change in place,
    /// and the L1 entry it was found through. Both entries come from one hold of the cache's
    /// lock when the table is cached, as it usually is for a write beside the one before.
    func entry(ofGuestCluster cluster: UInt64) throws(BlockError) -> (raw: UInt64, mapping: ClusterMapping, isExclusive: Bool, l1Entry: UInt64) {
        let (l1Index, l2Index) = tableIndices(ofGuestCluster: cluster)
        let (l1Entry, cached, _) = cache.withLock { $0.lookup(l1Index: l1Index, entryIndex: l2Index) }
        let l2Offset = l1Entry & Self.offsetMask
        let entry: UInt64
        if l2Offset == 0 {
            entry = 0
        } else if let cached {
            entry = cached
        } else {
            entry = try l2Entry(l2Index, ofTableAt: l2Offset)
        }
        let mapping = try checkedMapping(ofEntry: entry, cluster: cluster)
        return (entry, mapping, l1Entry & Self.copiedBit != 0 && entry & Self.copiedBit != 0, l1Entry)
    }

    /// Points the guest cluster at `newEntry`, in memory (writeBackMetadata puts it on disk),
    /// with a new L2 table if its range has none, or a copy of its table if a snapshot shares it.
    /// Whatever the entry pointed to before — a compressed cluster, a shared one, or one a racing
    /// write published first — loses a reference once the new entry is durable. With extended
    /// entries, `bitmap` goes beside it: by default every subcluster of a data cluster allocated.
    func publish(_ newEntry: UInt64, bitmap: UInt64? = nil, forGuestCluster cluster: UInt64, _ state: inout Qcow2WriterState) throws(BlockError) {
        let newBitmap = bitmap ?? Self.wholeClusterBitmap(for: newEntry)
        let (l1Index, l2Index) = tableIndices(ofGuestCluster: cluster)
        let replaced = try entry(ofGuestCluster: cluster)
        let l1Entry = replaced.l1Entry
        let l2Offset = l1Entry & Self.offsetMask
        let clusterSize = UInt64(self.clusterSize)
        if l2Offset == 0 || l1Entry & Self.copiedBit == 0 {
            var entries = l2Offset == 0 ? [UInt64](repeating: 0, count: self.clusterSize / 8) : try l2Table(at: l2Offset)
            entries[l2Index] = newEntry
            if extendedL2 { entries[l2Index + 1] = newBitmap }
            let table = try allocateClusters(1, &state)
            cache.withLock { $0.insertDirty(entries, at: table) }
            state.pendingL1[l1Index] = table | Self.copiedBit
            cache.withLock { $0.setL1Entry(table | Self.copiedBit, at: l1Index) }
            if l2Offset != 0 { state.pendingReleases.append(l2Offset / clusterSize) }
        } else if !cache.withLock({ cache in
            extendedL2 ? cache.setEntryPair(newEntry, bitmap: newBitmap, at: l2Index, ofTableAt: l2Offset)
                : cache.setEntry(newEntry, at: l2Index, ofTableAt: l2Offset)
        }) {
            var entries = try l2Table(at: l2Offset)
            entries[l2Index] = newEntry
            if extendedL2 { entries[l2Index + 1] = newBitmap }
            cache.withLock { $0.insertDirty(entries, at: l2Offset) }
        }
        // A data file's clusters have no refcounts: nothing to release.
        guard dataFile == nil else { return }
        switch replaced.mapping {
        case .data(let hostOffset) where newEntry & Self.offsetMask == hostOffset:
            break // still this entry's: zeroed in place, not freed
        case .compressed(let hostOffset, let byteCount):
            state.pendingReleases += Array(hostOffset / clusterSize...(hostOffset + UInt64(byteCount) - 1) / clusterSize)
        case .data(let hostOffset):
            state.pendingReleases.append(hostOffset / clusterSize)
        case .zeroes where replaced.raw & Self.offsetMask != 0:
            // A preallocated zero cluster owns its host cluster.
            state.pendingReleases.append((replaced.raw & Self.offsetMask) / clusterSize)
        case .unallocated, .zeroes:
            break
        }
    }

    func writeBigEndian<T: FixedWidthInteger>(_ value: T, at offset: UInt64) throws(BlockError) {
        var bytes = [UInt8](repeating: 0, count: MemoryLayout<T>.size)
        bytes.setBigEndian(value, at: 0)
        try writeBytes(bytes, at: offset)
    }

    func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(BlockError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        try file.driver.write(at: Int64(offset), from: UnsafeRawBufferPointer(buffer))
    }
}
