// Qcow2Shrink: making a qcow2 image smaller, with QEMU 7.2's semantics (qcow2_co_truncate,
// qcow2_shrink_l1_table) in an order where a crash anywhere leaves the image as it was or as it
// is to be, for the range that survives — with leaks at worst:
//
//   0. checks, before anything is written: not a version 2 image with snapshots (QEMU's words),
//      and every L2 table and entry past the new end readable and sane; what is dirty is
//      written back;
//   1. the header's size, bytes 24–31, one write inside one sector; fdatasync. With persistent
//      bitmaps, their tables shrink with it in Qcow2BitmapResize.swift's order. From here on no
//      reader sees the range past the end — the old image's clusters there are still counted
//      and still named, which qemu-img check calls clean;
//   2. in the L2 table the new end falls inside, the entries past the end become 0 through the
//      writer (Qcow2Writer.swift: the table written — a copy first if a snapshot shares it —
//      fdatasync, then the clusters they named lose this image's reference);
//   3. the L1 entries of tables wholly past the end become 0 in one write; fdatasync; then each
//      such table, and every cluster it names, loses this image's reference (refcounts count a
//      reference per L1 table that reaches a cluster, so a table a snapshot shares, and its
//      clusters, keep the snapshot's); written and flushed. The L1 table keeps its size, as
//      QEMU's does;
//   4. refcount blocks that count nothing but themselves (QEMU's qcow2_shrink_reftable): their
//      refcount table entries become 0, one 8-byte write each; fdatasync; then a block counted
//      in another block loses that reference. A block that counts itself is free the moment
//      its entry is gone (its own count went with it); any subset of the writes is a state
//      with leaks at worst;
//   5. the file is cut after the last cluster whose refcount is not 0 (fdatasync): after 3 and
//      4, nothing on disk names a cluster past it. A failure here only warns, as QEMU's does.
//      With an external data file, that file is cut to the new size instead (QEMU passes the
//      truncation on to it).
//
// A torn write in 3 leaves some L1 entries naming their tables, whose entries past the end are
// still there: the image reads the same and counts them, at most leaking what 3 already
// released from memory. A crash before a release is durable leaks it. The cluster the new end
// falls inside is kept whole, as QEMU keeps it. QEMU writes the header's size last, after
// discarding: a crash in between leaves an image of the old size whose tail reads as zeroes;
// blk hides the tail first. A failed write or flush in 3 or 4 leaves this open writing no more:
// memory cannot tell which of the entries the file has.
import BlockGraph

extension Qcow2Driver {
    /// Steps 0–5 of the order above, down to `byteCount`, under the writer lock; returns the
    /// warning step 5 left, if any.
    func shrink(to byteCount: Int64, _ state: inout Qcow2WriterState) throws(BlockError) -> String? {
        guard byteCount % 512 == 0 else { throw BlockError(.invalidRequest, "The new size must be a multiple of 512") }
        try refuseWritesIfCorrupt()
        try prepareForWriting(&state)
        let clusterSize = UInt64(self.clusterSize)
        let firstCluster = (UInt64(byteCount) + clusterSize - 1) / clusterSize
        let keptTables = Int(min((firstCluster + (1 << UInt64(l2Bits)) - 1) >> UInt64(l2Bits), UInt64(Int.max)))
        try checkTablesPastEnd(from: firstCluster)
        try writeBackMetadata(&state)

        if try bitmapState().bitmaps.isEmpty {
            try file.during(.headerUpdate) { () throws(BlockError) in
                try writeBigEndian(UInt64(byteCount), at: 24)
                try file.driver.flush()
            }
            virtualSize.store(byteCount, ordering: .releasing)
        } else {
            var fields = [UInt8](repeating: 0, count: 24) // bytes 24–47, the L1 table's as they are
            fields.setBigEndian(UInt64(byteCount), at: 0)
            fields.setBigEndian(UInt32(cache.withLock { $0.l1.count }), at: 12)
            fields.setBigEndian(state.l1TableOffset, at: 16)
            try switchSize(fields, to: byteCount, &state)
        }

        if keptTables > 0, firstCluster & ((1 << UInt64(l2Bits)) - 1) != 0 {
            let l1Index = keptTables - 1
            let l1Entry = cache.withLock { $0.l1.indices.contains(l1Index) ? $0.l1[l1Index] : 0 }
            if l1Entry & Self.offsetMask != 0 {
                let table = try l2Table(at: l1Entry & Self.offsetMask)
                let wordsPerEntry = extendedL2 ? 2 : 1
                for word in stride(from: 0, to: table.count, by: wordsPerEntry) where table[word..<word + wordsPerEntry].contains(where: { $0 != 0 }) {
                    let cluster = UInt64(l1Index) << UInt64(l2Bits) | UInt64(word / wordsPerEntry)
                    guard cluster >= firstCluster else { continue }
                    try publish(0, forGuestCluster: cluster, &state)
                }
            }
            try writeBackMetadata(&state)
        }

        try dropTables(from: keptTables, &state)
        try dropUnusedRefcountBlocks(&state)
        state.compressedTail = nil
        return try cutTail(to: byteCount, &state)
    }

    /// Step 0's reading: each table past the end is read and each entry in it mapped (hostile
    /// offsets, compressed sizes and the like are corruption), so that a bad one stops the
    /// shrink before the header changes.
    private func checkTablesPastEnd(from firstCluster: UInt64) throws(BlockError) {
        let l1 = cache.withLock { $0.l1 }
        let firstTable = Int(min(firstCluster >> UInt64(l2Bits), UInt64(l1.count)))
        let wordsPerEntry = extendedL2 ? 2 : 1
        for l1Index in firstTable..<l1.count where l1[l1Index] & Self.offsetMask != 0 {
            let table = try l2Table(at: l1[l1Index] & Self.offsetMask)
            for word in stride(from: 0, to: table.count, by: wordsPerEntry) where table[word] != 0 {
                let cluster = UInt64(l1Index) << UInt64(l2Bits) | UInt64(word / wordsPerEntry)
                if cluster >= firstCluster { _ = try checkedMapping(ofEntry: table[word], cluster: cluster) }
            }
        }
    }

    /// Step 3: the L1 entries from `keptTables` on are zeroed on disk, then their tables and the
    /// clusters those name lose a reference, a table at a time.
    private func dropTables(from keptTables: Int, _ state: inout Qcow2WriterState) throws(BlockError) {
        let l1 = cache.withLock { $0.l1 }
        guard keptTables < l1.count, let first = (keptTables..<l1.count).first(where: { l1[$0] & Self.offsetMask != 0 }) else { return }
        do throws(BlockError) {
            try file.during(.l1Update) { () throws(BlockError) in
                try writeBytes([UInt8](repeating: 0, count: (l1.count - first) * 8), at: state.l1TableOffset + UInt64(first) * 8)
                try file.driver.flush()
            }
        } catch {
            // Which of the entries the file has zeroed is unknown: this open writes nothing more,
            // so no table is changed in memory that the file no longer names.
            state.failure = BlockError(.ioError, "qcow2: shrinking failed while zeroing L1 entries, so this open writes no more: \(error.message)",
                                       cause: error.cause)
            throw state.failure!
        }
        let clusterSize = UInt64(self.clusterSize)
        let wordsPerEntry = extendedL2 ? 2 : 1
        for l1Index in first..<l1.count where l1[l1Index] & Self.offsetMask != 0 {
            let tableOffset = l1[l1Index] & Self.offsetMask
            let table = try l2Table(at: tableOffset)
            cache.withLock { cache in
                cache.setL1Entry(0, at: l1Index)
                cache.forgetTable(at: tableOffset)
            }
            state.pendingReleases.append(tableOffset / clusterSize)
            // A data file's clusters have no refcounts.
            if dataFile == nil {
                for word in stride(from: 0, to: table.count, by: wordsPerEntry) where table[word] != 0 {
                    let cluster = UInt64(l1Index) << UInt64(l2Bits) | UInt64(word / wordsPerEntry)
                    switch try checkedMapping(ofEntry: table[word], cluster: cluster) {
                    case .data(let hostOffset):
                        state.pendingReleases.append(hostOffset / clusterSize)
                    case .compressed(let hostOffset, let byteCount):
                        state.pendingReleases += Array(hostOffset / clusterSize...(hostOffset + UInt64(byteCount) - 1) / clusterSize)
                    case .zeroes where table[word] & Self.offsetMask != 0:
                        state.pendingReleases.append((table[word] & Self.offsetMask) / clusterSize)
                    case .unallocated, .zeroes:
                        break
                    }
                }
            }
            if state.pendingReleases.count >= l2Entries * 4 { try writeBackMetadata(&state) }
        }
        try writeBackMetadata(&state)
    }

    /// Step 4: the refcount blocks that count nothing but themselves leave the refcount table;
    /// a block another block counts then loses that reference.
    private func dropUnusedRefcountBlocks(_ state: inout Qcow2WriterState) throws(BlockError) {
        guard let table = state.refcountTable else { return }
        let clusterSize = UInt64(self.clusterSize)
        let perBlock = refcountWidth.entriesPerBlock(clusterSize: self.clusterSize)
        var unused: [Int] = []
        for (index, entry) in table.enumerated() where entry & Self.offsetMask != 0 {
            let blockCluster = (entry & Self.offsetMask) / clusterSize
            let first = UInt64(index) * perBlock
            var countsOthers = false
            for cluster in first..<first + perBlock where cluster != blockCluster {
                if try refcount(ofCluster: cluster, &state) != 0 {
                    countsOthers = true
                    break
                }
            }
            if !countsOthers { unused.append(index) }
        }
        guard !unused.isEmpty else { return }
        do throws(BlockError) {
            try file.during(.reftableUpdate) { () throws(BlockError) in
                for index in unused { try writeBigEndian(UInt64(0), at: state.refcountTableOffset + UInt64(index) * 8) }
                try file.driver.flush()
            }
        } catch {
            // Which entries the file has zeroed is unknown: a refcount written into a block it
            // no longer names would be lost, so this open writes nothing more.
            state.failure = BlockError(.ioError, "qcow2: shrinking failed while dropping refcount blocks, so this open writes no more: \(error.message)",
                                       cause: error.cause)
            throw state.failure!
        }
        for index in unused {
            let block = table[index] & Self.offsetMask
            state.refcountTable![index] = 0
            state.refcountBlocks[block] = nil
            // A block that counts itself went with its entry; one counted elsewhere is a leak now.
            if (block / clusterSize) / perBlock != UInt64(index) { state.pendingReleases.append(block / clusterSize) }
        }
        try writeBackMetadata(&state)
    }

    /// Step 5: the file ends after its last cluster in use; a data file at the new size.
    private func cutTail(to byteCount: Int64, _ state: inout Qcow2WriterState) throws(BlockError) -> String? {
        if let dataFile {
            do throws(BlockError) {
                try dataFile.driver.truncate(to: byteCount)
                try dataFile.driver.flush()
            } catch {
                return "Failed to truncate the external data file: \(error.message)"
            }
            return nil
        }
        // Released clusters still wait for in-place writes planned before the shrink: their
        // refcounts, not yet 0, keep them.
        var last = state.nextFreeCluster
        while last > 0, try refcount(ofCluster: last - 1, &state) == 0 { last -= 1 }
        let end = last * UInt64(clusterSize)
        guard end < UInt64(try file.driver.length()) else { return nil }
        do throws(BlockError) {
            try file.driver.truncate(to: Int64(end))
            try file.driver.flush()
        } catch {
            return "Failed to truncate the tail of the image: \(error.message)"
        }
        state.nextFreeCluster = last
        state.fileEnd = end
        return nil
    }
}
