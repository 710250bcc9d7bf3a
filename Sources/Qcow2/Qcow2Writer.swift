// Qcow2Writer: writes to a qcow2 image, in the order that makes a crash leave leaks but never
// corruption (QEMU's order, kept with a write-back metadata cache as QEMU keeps it):
//
//   on each write   the new data cluster, complete (a partial write copies the rest of the
//                   cluster in first: from the backing image, a compressed cluster, or zeroes),
//                   goes to the file; its refcount (in a refcount block, a new one if the range
//                   has none — the new block counts itself), the L2 entry that points to it, and
//                   a new L2 table if the range had none, change only in memory (dirty);
//   on flush        1. the dirty refcount blocks are written; fdatasync: data and refcounts
//   (or when too       are durable; new refcount table entries, fdatasync;
//   many tables     2. the dirty L2 tables are written;
//   are dirty)      3. fdatasync, then the L1 entries of new L2 tables;
//                   4. fdatasync, then the references that overwritten compressed clusters
//                      lose (written, and flushed, at once); a last fdatasync.
//
// A table is written only after everything it points to is durable, and a reference is dropped
// only after nothing on disk points through it any more: a crash anywhere leaves clusters
// counted but unused — leaks, which `qemu-img check -r leaks` repairs — and loses at most the
// writes since the last flush, as with any disk cache. A cluster whose L2 entry carries COPIED
// (refcount exactly 1) is overwritten in place. New clusters are appended at the end of the file.
//
// Not handled yet, refused with exit 69 rather than done wrong: images with internal snapshots
// (their clusters are shared and need copy-on-write with refcounts above 1), refcount widths
// other than 16 bits, dirty images (lazy refcounts: repair first), and a full refcount table.
import BlockLayer

/// What the writer keeps between writes; guarded by `Qcow2Driver.writer`, which also makes
/// allocating writes one at a time.
struct Qcow2WriterState {
    /// Where the active L1 table is now (a resize may move it).
    var l1TableOffset: UInt64
    var refcountTable: [UInt64]?
    var nextFreeCluster: UInt64 = 0
    var autoclearCleared = false
    /// L1 entries of new L2 tables, written after the tables themselves.
    var pendingL1: [Int: UInt64] = [:]
    /// Host clusters that lose a reference once the L2 entries no longer point to them.
    var pendingReleases: [UInt64] = []
    /// Refcount blocks read or changed, by offset, and which of them are changed.
    var refcountBlocks: [UInt64: [UInt8]] = [:]
    var dirtyRefcountBlocks: Set<UInt64> = []
    /// Refcount table entries of new blocks, written once the blocks are durable.
    var pendingRefcountTable: [Int: UInt64] = [:]
}

extension Qcow2Driver {
    static let copiedBit: UInt64 = 1 << 63

    /// Writes cluster by cluster. Whole clusters that need a new host cluster are written outside
    /// the writer lock — only allocating the cluster and publishing its entry take it — so writes
    /// run in parallel; partial ones copy the rest of the cluster in under the lock.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try forEachCluster(at: byteOffset, count: buffer.count) { (cluster, inCluster, range) throws(BlockError) in
            try writeCluster(cluster, at: inCluster, UnsafeRawBufferPointer(rebasing: buffer[range]))
        }
        try writer.withLock { (state) throws(BlockError) in
            let (dirtyCount, capacity) = cache.withLock { ($0.dirty.count, $0.capacity) }
            if dirtyCount >= capacity / 2 || state.dirtyRefcountBlocks.count >= capacity { try writeBackMetadata(&state) }
        }
    }

    private enum ClusterWrite {
        case inPlace(hostOffset: UInt64)
        case newCluster(hostOffset: UInt64)
        case done
    }

    private func writeCluster(_ cluster: UInt64, at inCluster: Int, _ bytes: UnsafeRawBufferPointer) throws(BlockError) {
        let plan = try writer.withLock { (state) throws(BlockError) -> ClusterWrite in
            try prepareForWriting(&state)
            let (entry, current) = try entry(ofGuestCluster: cluster)
            if case .data(let hostOffset) = current, entry & Self.copiedBit != 0 {
                return .inPlace(hostOffset: hostOffset + UInt64(inCluster))
            }
            let dataCluster = try allocateCluster(&state)
            guard bytes.count == header.clusterSize else {
                // What the guest sees now, with the new bytes over it, as one whole cluster.
                let content = UnsafeMutableRawBufferPointer.allocate(byteCount: header.clusterSize, alignment: 4096)
                defer { content.deallocate() }
                try read(at: Int64(cluster) * Int64(header.clusterSize), into: content)
                UnsafeMutableRawBufferPointer(rebasing: content[inCluster..<inCluster + bytes.count]).copyMemory(from: bytes)
                try file.driver.write(at: Int64(dataCluster), from: UnsafeRawBufferPointer(content))
                try publish(dataCluster, forGuestCluster: cluster, &state)
                return .done
            }
            return .newCluster(hostOffset: dataCluster)
        }
        switch plan {
        case .inPlace(let hostOffset):
            try file.driver.write(at: Int64(hostOffset), from: bytes)
        case .newCluster(let hostOffset):
            try file.driver.write(at: Int64(hostOffset), from: bytes)
            try writer.withLock { (state) throws(BlockError) in try publish(hostOffset, forGuestCluster: cluster, &state) }
        case .done:
            break
        }
    }

    public func flush() throws(BlockError) {
        try writer.withLock { (state) throws(BlockError) in try writeBackMetadata(&state) }
        try file.driver.flush()
    }

    /// Steps 1–4 of the order above.
    func writeBackMetadata(_ state: inout Qcow2WriterState) throws(BlockError) {
        let dirty = cache.withLock { cache in cache.dirty.map { ($0, cache.table(at: $0)!) } }
        guard !dirty.isEmpty || !state.pendingL1.isEmpty || !state.pendingReleases.isEmpty
              || !state.dirtyRefcountBlocks.isEmpty else { return }
        try writeRefcountBlocks(&state)
        try file.driver.flush()
        if !state.pendingRefcountTable.isEmpty {
            for (index, block) in state.pendingRefcountTable {
                try writeBigEndian(block, at: header.refcountTableOffset + UInt64(index) * 8)
            }
            state.pendingRefcountTable = [:]
            try file.driver.flush()
        }
        for (offset, table) in dirty {
            var bytes = [UInt8](repeating: 0, count: header.clusterSize)
            for (index, entry) in table.enumerated() where entry != 0 { bytes.setBigEndian(entry, at: index * 8) }
            try writeBytes(bytes, at: offset)
            cache.withLock { $0.markClean(offset) }
        }
        if !state.pendingL1.isEmpty {
            try file.driver.flush()
            for (index, entry) in state.pendingL1 { try writeBigEndian(entry, at: state.l1TableOffset + UInt64(index) * 8) }
            state.pendingL1 = [:]
        }
        if !state.pendingReleases.isEmpty {
            try file.driver.flush()
            for cluster in state.pendingReleases {
                let count = try refcount(ofCluster: cluster, &state)
                if count > 0 { try setRefcount(ofCluster: cluster, to: count - 1, &state) }
            }
            state.pendingReleases = []
            try writeRefcountBlocks(&state)
        }
        try file.driver.flush()
    }

    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        // Ranges that already read as zeroes need nothing; the rest gets zeroes written.
        let chunk = Int64(header.clusterSize)
        var offset = byteOffset
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: header.clusterSize, alignment: 16)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        while offset < byteOffset + byteCount {
            let count = min(chunk - offset % chunk, byteOffset + byteCount - offset)
            if try !readsAsZeroes(at: offset, byteCount: count) {
                try write(at: offset, from: UnsafeRawBufferPointer(rebasing: zeroes[0..<Int(count)]))
            }
            offset += count
        }
    }

    /// Checks once that this image can be written, and clears unknown autoclear bits first, as
    /// qcow2.rst asks of a writer that does not know them.
    func prepareForWriting(_ state: inout Qcow2WriterState) throws(BlockError) {
        guard state.refcountTable == nil else { return }
        if header.snapshotCount > 0 {
            throw BlockError(.unsupported, "writing to qcow2 images with internal snapshots is not supported by this build of blk yet")
        }
        guard header.refcountOrder == 4 else {
            throw BlockError(.unsupported, "writing to qcow2 images with \(1 << header.refcountOrder)-bit refcounts is not supported by this build of blk yet")
        }
        if header.incompatibleFeatures & Qcow2Header.dirtyBit != 0 {
            throw BlockError(.unsupported, "qcow2: the image is dirty (lazy refcounts); repair it with qemu-img check -r all before writing")
        }
        if header.autoclearFeatures != 0 && !state.autoclearCleared {
            try writeBigEndian(UInt64(0), at: 88)
            try file.driver.flush()
            state.autoclearCleared = true
        }
        let clusterSize = UInt64(header.clusterSize)
        let raw = try Self.readBytes(file, at: header.refcountTableOffset, count: Int(UInt64(header.refcountTableClusters) * clusterSize))
        state.refcountTable = (0..<raw.count / 8).map { raw.bigEndian(UInt64.self, at: $0 * 8) }
        let fileLength = UInt64(try file.driver.length())
        state.nextFreeCluster = (fileLength + clusterSize - 1) / clusterSize
    }

    /// The raw L2 entry of a guest cluster (0 when its range has no L2 table) and what it maps to.
    private func entry(ofGuestCluster cluster: UInt64) throws(BlockError) -> (UInt64, ClusterMapping) {
        let l2Entries = UInt64(header.l2Entries)
        let l1Index = Int(cluster / l2Entries)
        let l2Offset = cache.withLock { $0.l1.indices.contains(l1Index) ? $0.l1[l1Index] : 0 } & Self.offsetMask
        let entry = l2Offset == 0 ? 0 : try l2Table(at: l2Offset)[Int(cluster % l2Entries)]
        return (entry, try Self.mapping(ofEntry: entry, cluster: cluster, header: header))
    }

    /// Points the guest cluster at `dataCluster`, in memory (writeBackMetadata puts it on disk),
    /// with a new L2 table if its range has none. Whatever the entry pointed to before — a
    /// compressed cluster, a shared one, or one a racing write published first — loses a
    /// reference once the new entry is durable.
    private func publish(_ dataCluster: UInt64, forGuestCluster cluster: UInt64, _ state: inout Qcow2WriterState) throws(BlockError) {
        let l2Entries = UInt64(header.l2Entries)
        let l1Index = Int(cluster / l2Entries)
        let l2Index = Int(cluster % l2Entries)
        let (replacedEntry, replaced) = try entry(ofGuestCluster: cluster)
        let l2Offset = cache.withLock { $0.l1[l1Index] } & Self.offsetMask
        if l2Offset == 0 {
            let table = try allocateCluster(&state)
            var entries = [UInt64](repeating: 0, count: header.l2Entries)
            entries[l2Index] = dataCluster | Self.copiedBit
            cache.withLock { $0.insertDirty(entries, at: table) }
            state.pendingL1[l1Index] = table | Self.copiedBit
            cache.withLock { $0.l1[l1Index] = table | Self.copiedBit }
        } else if !cache.withLock({ $0.setEntry(dataCluster | Self.copiedBit, at: l2Index, ofTableAt: l2Offset) }) {
            var entries = try l2Table(at: l2Offset)
            entries[l2Index] = dataCluster | Self.copiedBit
            cache.withLock { $0.insertDirty(entries, at: l2Offset) }
        }
        let clusterSize = UInt64(header.clusterSize)
        switch replaced {
        case .compressed(let hostOffset, let byteCount):
            state.pendingReleases += Array(hostOffset / clusterSize...(hostOffset + UInt64(byteCount) - 1) / clusterSize)
        case .data(let hostOffset):
            state.pendingReleases.append(hostOffset / clusterSize)
        case .zeroes where replacedEntry & Self.offsetMask != 0:
            // A preallocated zero cluster owns its host cluster.
            state.pendingReleases.append((replacedEntry & Self.offsetMask) / clusterSize)
        case .unallocated, .zeroes:
            break
        }
    }

    /// A fresh cluster at the end of the file, counted (refcount 1) before it is returned.
    private func allocateCluster(_ state: inout Qcow2WriterState) throws(BlockError) -> UInt64 {
        let cluster = state.nextFreeCluster
        state.nextFreeCluster += 1
        try setRefcount(ofCluster: cluster, to: 1, &state)
        return cluster * UInt64(header.clusterSize)
    }

    /// 16-bit refcounts: a block of one cluster counts clusterSize / 2 clusters. Changes stay in
    /// memory until writeBackMetadata writes them, before anything that relies on them.
    private func setRefcount(ofCluster cluster: UInt64, to value: UInt16, _ state: inout Qcow2WriterState) throws(BlockError) {
        let perBlock = UInt64(header.clusterSize / 2)
        let tableIndex = Int(cluster / perBlock)
        guard var table = state.refcountTable else { return }
        guard tableIndex < table.count else {
            throw BlockError(.unsupported, "the image needs a larger refcount table, which this build of blk cannot grow yet")
        }
        var block = table[tableIndex] & Self.offsetMask
        if block == 0 {
            // A new refcount block, at the end of the file, zeroed; the table entry waits until the
            // block is durable. It is counted in itself when it covers its own cluster, else by a
            // block of its own.
            let blockCluster = state.nextFreeCluster
            state.nextFreeCluster += 1
            block = blockCluster * UInt64(header.clusterSize)
            state.refcountBlocks[block] = [UInt8](repeating: 0, count: header.clusterSize)
            state.dirtyRefcountBlocks.insert(block)
            table[tableIndex] = block
            state.refcountTable = table
            state.pendingRefcountTable[tableIndex] = block
            try setRefcount(ofCluster: blockCluster, to: 1, &state)
        }
        try loadRefcountBlock(block, &state)
        state.refcountBlocks[block]!.setBigEndian(value, at: Int(cluster % perBlock) * 2)
        state.dirtyRefcountBlocks.insert(block)
    }

    /// Reserves `count` consecutive clusters at the end of the file and counts them.
    func allocateClusters(_ count: UInt64, _ state: inout Qcow2WriterState) throws(BlockError) -> UInt64 {
        let first = state.nextFreeCluster
        state.nextFreeCluster += count
        for cluster in first..<first + count { try setRefcount(ofCluster: cluster, to: 1, &state) }
        return first * UInt64(header.clusterSize)
    }

    private func loadRefcountBlock(_ block: UInt64, _ state: inout Qcow2WriterState) throws(BlockError) {
        if state.refcountBlocks[block] == nil {
            state.refcountBlocks[block] = try Self.readBytes(file, at: block, count: header.clusterSize)
        }
    }

    private func writeRefcountBlocks(_ state: inout Qcow2WriterState) throws(BlockError) {
        for block in state.dirtyRefcountBlocks.sorted() { try writeBytes(state.refcountBlocks[block]!, at: block) }
        state.dirtyRefcountBlocks = []
        // Clean blocks are dropped so memory stays bounded; the next allocation reads one back.
        state.refcountBlocks = [:]
    }

    /// Writes a 16-bit refcount into the block that already covers `cluster` (for repairs).
    func storeRefcount(_ value: UInt16, ofCluster cluster: UInt64) throws(BlockError) {
        let perBlock = UInt64(header.clusterSize / 2)
        let entry = try Self.readBytes(file, at: header.refcountTableOffset + cluster / perBlock * 8, count: 8)
        let block = entry.bigEndian(UInt64.self, at: 0) & Self.offsetMask
        guard block != 0 else { return }
        try writeBigEndian(value, at: block + (cluster % perBlock) * 2)
    }

    private func refcount(ofCluster cluster: UInt64, _ state: inout Qcow2WriterState) throws(BlockError) -> UInt16 {
        let perBlock = UInt64(header.clusterSize / 2)
        guard let table = state.refcountTable, Int(cluster / perBlock) < table.count else { return 0 }
        let block = table[Int(cluster / perBlock)] & Self.offsetMask
        guard block != 0 else { return 0 }
        try loadRefcountBlock(block, &state)
        return state.refcountBlocks[block]!.bigEndian(UInt16.self, at: Int(cluster % perBlock) * 2)
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
