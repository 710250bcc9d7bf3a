// Qcow2Writer: writes to a qcow2 image, in the order that makes a crash leave leaks but never
// corruption (QEMU's order):
//
//   1. the new data cluster, complete (a partial write copies the rest of the cluster in first:
//      from the backing image, a compressed cluster, or zeroes);
//   2. the refcounts of every cluster allocated (allocating a refcount block if the range has
//      none — the new block counts itself);
//   3. a new L2 table, if the range had none, with the new entry already in it;
//   4. flush — everything a table will point to is on disk before any table points to it;
//   5. the L2 entry (or, for a new L2 table, the L1 entry) that makes the new cluster live.
//
// A crash before step 5 leaves clusters counted but unused: leaks, which `qemu-img check -r
// leaks` repairs. A cluster whose L2 entry carries COPIED (refcount exactly 1) is overwritten in
// place. New clusters are appended at the end of the file.
//
// Not handled yet, refused with exit 69 rather than done wrong: images with internal snapshots
// (their clusters are shared and need copy-on-write with refcounts above 1), refcount widths
// other than 16 bits, dirty images (lazy refcounts: repair first), and a full refcount table.
import BlockLayer

/// What the writer keeps between writes; guarded by `Qcow2Driver.writer`, which also makes
/// allocating writes one at a time.
struct Qcow2WriterState {
    var refcountTable: [UInt64]?
    var nextFreeCluster: UInt64 = 0
    var autoclearCleared = false
}

extension Qcow2Driver {
    static let copiedBit: UInt64 = 1 << 63

    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state)
            let clusterSize = Int64(header.clusterSize)
            var done = 0
            while done < buffer.count {
                let offset = byteOffset + Int64(done)
                let inCluster = Int(offset % clusterSize)
                let count = min(buffer.count - done, Int(clusterSize) - inCluster)
                try writeCluster(UInt64(offset / clusterSize), at: inCluster,
                                 UnsafeRawBufferPointer(rebasing: buffer[done..<done + count]), &state)
                done += count
            }
        }
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
    private func prepareForWriting(_ state: inout Qcow2WriterState) throws(BlockError) {
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

    private func writeCluster(_ cluster: UInt64, at inCluster: Int, _ bytes: UnsafeRawBufferPointer,
                              _ state: inout Qcow2WriterState) throws(BlockError) {
        let clusterSize = header.clusterSize
        let l2Entries = UInt64(header.l2Entries)
        let l1Index = Int(cluster / l2Entries)
        let l2Index = Int(cluster % l2Entries)
        let l1Entry = l1Table.withLock { $0.indices.contains(l1Index) ? $0[l1Index] : 0 }
        let l2Offset = l1Entry & Self.offsetMask
        let entry = l2Offset == 0 ? 0 : try l2Table(at: l2Offset)[l2Index]
        let current = try Self.mapping(ofEntry: entry, cluster: cluster, header: header)

        if case .data(let hostOffset) = current, entry & Self.copiedBit != 0 {
            try file.driver.write(at: Int64(hostOffset) + Int64(inCluster), from: bytes)
            return
        }

        // 1. The whole new cluster: what the guest sees now, with the new bytes over it.
        let content = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        defer { content.deallocate() }
        if bytes.count < clusterSize {
            try read(at: Int64(cluster) * Int64(clusterSize), into: content)
        }
        UnsafeMutableRawBufferPointer(rebasing: content[inCluster..<inCluster + bytes.count]).copyMemory(from: bytes)
        let dataCluster = try allocateCluster(&state)
        try file.driver.write(at: Int64(dataCluster), from: UnsafeRawBufferPointer(content))

        // 2–3. A new L2 table if the range has none, holding the new entry.
        var newTable: UInt64?
        if l2Offset == 0 {
            let table = try allocateCluster(&state)
            var tableBytes = [UInt8](repeating: 0, count: clusterSize)
            tableBytes.setBigEndian(dataCluster | Self.copiedBit, at: l2Index * 8)
            try writeBytes(tableBytes, at: table)
            newTable = table
        }
        // 4. Everything the tables will point to is durable first.
        try file.driver.flush()

        // 5. Make it live.
        if let table = newTable {
            try writeBigEndian(table | Self.copiedBit, at: header.l1TableOffset + UInt64(l1Index) * 8)
            l1Table.withLock { $0[l1Index] = table | Self.copiedBit }
        } else {
            try writeBigEndian(dataCluster | Self.copiedBit, at: l2Offset + UInt64(l2Index) * 8)
            try updateCachedEntry(table: l2Offset, index: l2Index, to: dataCluster | Self.copiedBit)
        }
        // The cluster the entry pointed to before (compressed) loses its reference; a crash
        // before this point leaves it counted once too often: a leak.
        if case .compressed(let hostOffset, let byteCount) = current {
            try releaseCompressed(hostOffset: hostOffset, byteCount: byteCount, &state)
        }
    }

    private func updateCachedEntry(table: UInt64, index: Int, to value: UInt64) throws(BlockError) {
        var entries = try l2Table(at: table)
        entries[index] = value
        cache.withLock { $0.replace(entries, at: table) }
    }

    /// A fresh cluster at the end of the file, counted (refcount 1) before it is returned.
    private func allocateCluster(_ state: inout Qcow2WriterState) throws(BlockError) -> UInt64 {
        let cluster = state.nextFreeCluster
        state.nextFreeCluster += 1
        try setRefcount(ofCluster: cluster, to: 1, &state)
        return cluster * UInt64(header.clusterSize)
    }

    /// 16-bit refcounts: a block of one cluster counts clusterSize / 2 clusters.
    private func setRefcount(ofCluster cluster: UInt64, to value: UInt16, _ state: inout Qcow2WriterState) throws(BlockError) {
        let perBlock = UInt64(header.clusterSize / 2)
        let tableIndex = Int(cluster / perBlock)
        guard var table = state.refcountTable else { return }
        guard tableIndex < table.count else {
            throw BlockError(.unsupported, "the image needs a larger refcount table, which this build of blk cannot grow yet")
        }
        var block = table[tableIndex] & Self.offsetMask
        if block == 0 {
            // A new refcount block, at the end of the file; zeroed, hooked into the table, then
            // counted — in itself when it covers its own cluster, else by a block of its own.
            let blockCluster = state.nextFreeCluster
            state.nextFreeCluster += 1
            block = blockCluster * UInt64(header.clusterSize)
            try writeBytes([UInt8](repeating: 0, count: header.clusterSize), at: block)
            try file.driver.flush()
            try writeBigEndian(block, at: header.refcountTableOffset + UInt64(tableIndex) * 8)
            table[tableIndex] = block
            state.refcountTable = table
            try setRefcount(ofCluster: blockCluster, to: 1, &state)
        }
        try writeBigEndian(value, at: block + (cluster % perBlock) * 2)
    }

    /// Writes a 16-bit refcount into the block that already covers `cluster` (for repairs).
    func storeRefcount(_ value: UInt16, ofCluster cluster: UInt64) throws(BlockError) {
        let perBlock = UInt64(header.clusterSize / 2)
        let entry = try Self.readBytes(file, at: header.refcountTableOffset + cluster / perBlock * 8, count: 8)
        let block = entry.bigEndian(UInt64.self, at: 0) & Self.offsetMask
        guard block != 0 else { return }
        try writeBigEndian(value, at: block + (cluster % perBlock) * 2)
    }

    private func refcount(ofCluster cluster: UInt64, _ state: Qcow2WriterState) throws(BlockError) -> UInt16 {
        let perBlock = UInt64(header.clusterSize / 2)
        guard let table = state.refcountTable, Int(cluster / perBlock) < table.count else { return 0 }
        let block = table[Int(cluster / perBlock)] & Self.offsetMask
        guard block != 0 else { return 0 }
        return try Self.readBytes(file, at: block + (cluster % perBlock) * 2, count: 2).bigEndian(UInt16.self, at: 0)
    }

    /// Drops one reference from each host cluster a compressed cluster's bytes touch.
    private func releaseCompressed(hostOffset: UInt64, byteCount: Int, _ state: inout Qcow2WriterState) throws(BlockError) {
        let clusterSize = UInt64(header.clusterSize)
        let first = hostOffset / clusterSize
        let last = (hostOffset + UInt64(byteCount) - 1) / clusterSize
        for cluster in first...last {
            let count = try refcount(ofCluster: cluster, state)
            if count > 0 { try setRefcount(ofCluster: cluster, to: count - 1, &state) }
        }
    }

    private func writeBigEndian<T: FixedWidthInteger>(_ value: T, at offset: UInt64) throws(BlockError) {
        var bytes = [UInt8](repeating: 0, count: MemoryLayout<T>.size)
        bytes.setBigEndian(value, at: 0)
        try writeBytes(bytes, at: offset)
    }

    private func writeBytes(_ bytes: [UInt8], at offset: UInt64) throws(BlockError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: bytes)
        try file.driver.write(at: Int64(offset), from: UnsafeRawBufferPointer(buffer))
    }
}
