// Qcow2RefcountOrder: a new refcount width (`amend -o refcount_bits=N`, QEMU's
// qcow2_change_refcount_order). The refcount table and blocks are rebuilt for the new width
// beside the old ones, which stay live until one header write switches over:
//
//   1. the old refcounts are read, a block at a time, to find which new blocks will count
//      anything — and refused, before anything is written, if one does not fit the new width;
//   2. the new table and blocks go at the end of the file, and count themselves: allocating them
//      may need more blocks (and a longer table), which may need more still, so the layout is
//      worked out to a fixed point first, as QEMU's walk over the table does;
//   3. each new block — the old refcounts in the new width, plus 1 for each new cluster — then
//      the new table; fdatasync;
//   4. refcount_table_offset, refcount_table_clusters and refcount_order: bytes 48–99 (the
//      fields between them rewritten as they are), one write inside the first sector; fdatasync;
//   5. the old table's and blocks' clusters lose their reference in the new blocks; fdatasync.
//
// Before 4 the new structures are clusters the old refcounts call free, past everything in use:
// the image is as it was. After 4 it is the new one, and until 5 is done the old structures are
// leaks. Memory holds the set of new blocks and one old and one new block at a time, never the
// refcounts of the whole file.
import BlockGraph

/// The old refcounts, read a block at a time.
private struct OldRefcounts {
    let table: [UInt64]
    let width: RefcountWidth
    let perBlock: UInt64
    var lastBlock: (index: Int, values: [UInt64])?

    /// The refcounts of `count` clusters from `first`, all under one old block.
    mutating func values(from first: UInt64, count: Int, of driver: Qcow2Driver) throws(BlockError) -> ArraySlice<UInt64> {
        let index = Int(first / perBlock)
        guard index < table.count, table[index] & Qcow2Driver.offsetMask != 0 else { return ArraySlice(repeating: 0, count: count) }
        if lastBlock?.index != index {
            let offset = table[index] & Qcow2Driver.offsetMask
            let fileLength = UInt64(try driver.file.driver.length())
            guard offset % UInt64(driver.clusterSize) == 0, offset + UInt64(driver.clusterSize) <= fileLength else {
                throw BlockError(.corrupt, "qcow2: Refblock offset 0x\(String(offset, radix: 16)) is invalid")
            }
            let block = try Qcow2Driver.readBytes(driver.file, at: offset, count: driver.clusterSize)
            lastBlock = (index, width.values(in: block, from: 0, count: Int(perBlock)))
        }
        let start = Int(first % perBlock)
        return lastBlock!.values[start..<start + count]
    }
}

extension Qcow2Driver {
    /// Step 1 alone, from the structures on disk: amend refuses before its first change.
    func checkRefcountsFit(_ width: RefcountWidth) throws(BlockError) {
        let onDisk = try currentHeader()
        let table = try Self.readBytes(file, at: onDisk.refcountTableOffset, count: Int(onDisk.refcountTableClusters) * clusterSize).bigEndianEntries
        _ = try usedClusters(table: table, newWidth: width)
    }

    /// Which new blocks count a used cluster, and the first cluster past every used one.
    private func usedClusters(table: [UInt64], newWidth: RefcountWidth) throws(BlockError) -> (blocks: Set<UInt64>, end: UInt64) {
        var old = OldRefcounts(table: table, width: refcountWidth, perBlock: refcountWidth.entriesPerBlock(clusterSize: clusterSize))
        let newPerBlock = newWidth.entriesPerBlock(clusterSize: clusterSize)
        var blocks = Set<UInt64>(), end: UInt64 = 0
        for (index, entry) in table.enumerated() where entry & Self.offsetMask != 0 {
            let first = UInt64(index) * old.perBlock
            for (slot, value) in try old.values(from: first, count: Int(old.perBlock), of: self).enumerated() where value != 0 {
                let cluster = first + UInt64(slot)
                guard value <= newWidth.maximum else {
                    throw BlockError(.unsupported, "Cannot decrease refcount entry width to \(newWidth.bits) bits: Cluster at offset 0x\(String(cluster * UInt64(clusterSize), radix: 16)) has a refcount of \(value)")
                }
                blocks.insert(cluster / newPerBlock)
                end = cluster + 1
            }
        }
        return (blocks, end)
    }

    /// Steps 1–5 of the order above, under the writer lock, with everything written back and
    /// this open already retired from writing (`amended`).
    func changeRefcountWidth(to order: UInt32, _ state: inout Qcow2WriterState, progress: (Double) -> Void) throws(BlockError) {
        let clusterSize = UInt64(self.clusterSize)
        let newWidth = RefcountWidth(order: order)
        let newPerBlock = newWidth.entriesPerBlock(clusterSize: self.clusterSize)
        let oldTable = try Self.readBytes(file, at: state.refcountTableOffset, count: Int(state.refcountTableClusters * clusterSize)).bigEndianEntries
        let oldTableOffset = state.refcountTableOffset, oldTableClusters = state.refcountTableClusters
        state.refcountTable = nil
        state.refcountBlocks = [:]

        // 1–2. The new structures start past every used cluster and the end of the file.
        let (used, usedEnd) = try usedClusters(table: oldTable, newWidth: newWidth)
        let fileClusters = (UInt64(try file.driver.length()) + clusterSize - 1) / clusterSize
        let start = max(usedEnd, fileClusters)
        var tableClusters: UInt64 = 1, blockCount = 0
        var blocks: [UInt64] = []
        while true {
            let added = Set((start / newPerBlock)...((start + tableClusters + UInt64(blockCount) - 1) / newPerBlock))
            blocks = used.union(added).sorted()
            let neededTable = ((blocks.last! + 1) * 8 + clusterSize - 1) / clusterSize
            if blocks.count == blockCount && neededTable <= tableClusters { break }
            blockCount = blocks.count
            tableClusters = max(tableClusters, neededTable)
        }
        guard tableClusters * clusterSize <= Qcow2Header.maxRefcountTableBytes else {
            throw BlockError(.unsupported, "qcow2: the refcount table would pass QEMU's limit of \(Qcow2Header.maxRefcountTableBytes >> 20) MiB")
        }
        let newClusters = start..<start + tableClusters + UInt64(blockCount)
        let firstBlockCluster = start + tableClusters

        // 3. The blocks, then the table that names them.
        var old = OldRefcounts(table: oldTable, width: refcountWidth, perBlock: refcountWidth.entriesPerBlock(clusterSize: self.clusterSize))
        var table = [UInt8](repeating: 0, count: Int(tableClusters * clusterSize))
        try file.during(.refblockUpdate) { () throws(BlockError) in
            for (position, blockIndex) in blocks.enumerated() {
                var block = [UInt8](repeating: 0, count: self.clusterSize)
                var cluster = blockIndex * newPerBlock
                let blockEnd = cluster + newPerBlock
                while cluster < blockEnd {
                    let run = min(blockEnd, (cluster / old.perBlock + 1) * old.perBlock) - cluster
                    for (slot, value) in try old.values(from: cluster, count: Int(run), of: self).enumerated() {
                        let at = cluster + UInt64(slot)
                        let count = value + (newClusters.contains(at) ? 1 : 0)
                        if count != 0 { newWidth.set(count, in: &block, at: Int(at % newPerBlock)) }
                    }
                    cluster += run
                }
                let offset = (firstBlockCluster + UInt64(position)) * clusterSize
                try writeBytes(block, at: offset)
                table.setBigEndian(offset, at: Int(blockIndex) * 8)
                progress(Double(position + 1) / Double(blocks.count + 1))
            }
        }
        try file.during(.reftableUpdate) { () throws(BlockError) in
            try writeBytes(table, at: start * clusterSize)
            try file.driver.flush()
        }

        // 4. The switch.
        try file.during(.headerUpdate) { () throws(BlockError) in
            var fields = try Self.readBytes(file, at: 48, count: 52)
            fields.setBigEndian(start * clusterSize, at: 0)
            fields.setBigEndian(UInt32(tableClusters), at: 8)
            fields.setBigEndian(order, at: 48)
            try writeBytes(fields, at: 48)
            try file.driver.flush()
        }
        state.refcountTableOffset = start * clusterSize
        state.refcountTableClusters = tableClusters

        // 5. The old structures, now leaks, are freed block by new block.
        var released: [UInt64: [UInt64]] = [:]
        let oldClusters = Array(oldTableOffset / clusterSize..<oldTableOffset / clusterSize + oldTableClusters)
            + oldTable.filter { $0 & Self.offsetMask != 0 }.map { ($0 & Self.offsetMask) / clusterSize }
        for cluster in oldClusters { released[cluster / newPerBlock, default: []].append(cluster) }
        try file.during(.clusterFree) { () throws(BlockError) in
            for (blockIndex, clusters) in released.sorted(by: { $0.key < $1.key }) {
                let offset = table.bigEndian(UInt64.self, at: Int(blockIndex) * 8)
                var block = try Self.readBytes(file, at: offset, count: self.clusterSize)
                for cluster in clusters {
                    let slot = Int(cluster % newPerBlock)
                    let count = newWidth.value(in: block, at: slot)
                    if count > 0 { newWidth.set(count - 1, in: &block, at: slot) }
                }
                try writeBytes(block, at: offset)
            }
            try file.driver.flush()
        }
        progress(1)
    }
}
