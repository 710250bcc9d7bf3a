// Qcow2MakeEmpty: dropping every cluster of an image, so it reads as its backing image does —
// QEMU's qcow2_make_empty, which `qemu-img commit` runs on the overlay once the base holds its
// data. As QEMU, two ways:
//
// Completely empty (version 3, no snapshots, no bitmaps: nothing but the active L1 table holds
// clusters) — the image keeps its header, refcount table, refcount block 0 and L1 table where
// they are, and loses the rest:
//   1. whatever is dirty is written back; fdatasync;
//   2. the L1 table becomes zeroes (one write): every L2 table and data cluster is now a leak;
//      fdatasync;
//   3. refcount table entries 1 and up become zeroes (one write): the blocks they named count
//      only leaked clusters, and themselves; fdatasync;
//   4. refcount block 0 is rewritten counting only what is kept (one write): the leaks it
//      counted are free; fdatasync;
//   5. the file is cut after the last cluster kept; fdatasync.
// A crash tears each of those writes at worst: a torn L1 table leaves some L2 tables referenced
// (the image partly not yet emptied, which reads the same, as its base holds the data), a torn
// table or block 0 leaves leaks. It is taken only where every kept structure lies in the range
// block 0 counts, and every other refcount block counts itself or lies in that range — else
// dropping one block's entry could uncount another block still referenced. QEMU rebuilds the
// metadata at fixed places under the dirty bit instead, which a crash leaves for a repair.
//
// Discard every cluster (everything else: version 2, snapshots, bitmaps, another layout) — each
// allocated L2 entry becomes 0 through the writer (Qcow2Writer.swift's order: entries written,
// fdatasync, then the clusters they named lose their reference), leaks at worst. The L2 tables
// stay, as QEMU's qcow2_cluster_discard leaves them.
import BlockGraph

extension Qcow2Driver {
    /// Drops every cluster of the active image in one of the two ways above; durable on return.
    public func makeEmpty() throws(BlockError) {
        try refuseWithDataFile("emptying the image")
        try refuseWritesIfCorrupt()
        try markBitmaps(at: 0, byteCount: try length())
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state)
            try writeBackMetadata(&state)
            if let kept = try completelyEmptiableLayout(&state) {
                try emptyCompletely(keeping: kept, &state)
            } else {
                try discardEveryCluster(&state)
            }
        }
    }

    /// The clusters the completely empty image keeps (header, refcount table, refcount block 0,
    /// L1 table), when the image and its layout allow the in-place way; nil otherwise.
    private func completelyEmptiableLayout(_ state: inout Qcow2WriterState) throws(BlockError) -> Set<UInt64>? {
        guard hasZeroClusters, header.snapshotCount == 0, header.bitmapDirectory == nil,
              let table = state.refcountTable, let firstBlock = table.first.map({ $0 & Self.offsetMask }), firstBlock != 0 else {
            return nil
        }
        let clusterSize = UInt64(self.clusterSize)
        let perBlock = refcountWidth.entriesPerBlock(clusterSize: self.clusterSize)
        let l1Count = UInt64(cache.withLock { $0.l1.count })
        let l1Clusters = (l1Count * 8 + clusterSize - 1) / clusterSize
        var kept: Set<UInt64> = [0, firstBlock / clusterSize]
        kept.formUnion(state.refcountTableOffset / clusterSize..<state.refcountTableOffset / clusterSize + state.refcountTableClusters)
        kept.formUnion(state.l1TableOffset / clusterSize..<state.l1TableOffset / clusterSize + l1Clusters)
        guard kept.allSatisfy({ $0 < perBlock }) else { return nil }
        for (index, entry) in table.enumerated().dropFirst() where entry & Self.offsetMask != 0 {
            let holder = (entry & Self.offsetMask) / clusterSize / perBlock
            guard holder == UInt64(index) || holder == 0 else { return nil }
        }
        return kept
    }

    /// Steps 2–5 of the completely empty way; memory then mirrors the new image.
    private func emptyCompletely(keeping kept: Set<UInt64>, _ state: inout Qcow2WriterState) throws(BlockError) {
        let clusterSize = UInt64(self.clusterSize)
        let l1Count = cache.withLock { $0.l1.count }
        if l1Count > 0 {
            try file.during(.l1Update) { () throws(BlockError) in
                try writeBytes([UInt8](repeating: 0, count: l1Count * 8), at: state.l1TableOffset)
                try file.driver.flush()
            }
        }
        cache.withLock { cache in
            for index in cache.l1.indices where cache.l1[index] != 0 { cache.setL1Entry(0, at: index) }
        }
        let tableBytes = Int(state.refcountTableClusters * clusterSize)
        try file.during(.reftableUpdate) { () throws(BlockError) in
            try writeBytes([UInt8](repeating: 0, count: tableBytes - 8), at: state.refcountTableOffset + 8)
            try file.driver.flush()
        }
        let firstBlock = state.refcountTable![0] & Self.offsetMask
        var counts = [UInt8](repeating: 0, count: self.clusterSize)
        for cluster in kept { refcountWidth.set(1, in: &counts, at: Int(cluster)) }
        try file.during(.refblockUpdate) { () throws(BlockError) in
            try writeBytes(counts, at: firstBlock)
            try file.driver.flush()
        }
        let end = (kept.max()! + 1) * clusterSize
        if UInt64(try file.driver.length()) > end {
            try file.driver.truncate(to: Int64(end))
            try file.driver.flush()
        }
        // The refcount table and blocks are read again by the next write; the L1 table above
        // is all zeroes, so no cached L2 table is reached any more.
        state.refcountTable = nil
        state.refcountBlocks = [:]
        state.compressedTail = nil
    }

    /// Every allocated L2 entry of the active image becomes 0, an L2 table at a time.
    private func discardEveryCluster(_ state: inout Qcow2WriterState) throws(BlockError) {
        let l1 = cache.withLock { $0.l1 }
        for (l1Index, l1Entry) in l1.enumerated() where l1Entry & Self.offsetMask != 0 {
            let table = try l2Table(at: l1Entry & Self.offsetMask)
            // Extended entries: a standard entry and its bitmap word, both cleared.
            let wordsPerEntry = extendedL2 ? 2 : 1
            for l2Index in stride(from: 0, to: table.count, by: wordsPerEntry) where table[l2Index..<l2Index + wordsPerEntry].contains(where: { $0 != 0 }) {
                try publish(0, forGuestCluster: UInt64(l1Index) << UInt64(l2Bits) | UInt64(l2Index / wordsPerEntry), &state)
                try writeBackIfCacheIsFull(&state)
            }
        }
        try writeBackMetadata(&state)
        try trimGrowth(&state)
        try file.driver.flush()
    }
}
