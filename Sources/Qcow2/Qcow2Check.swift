// Qcow2Check: `blk check` for qcow2 (QEMU's qcow2_check_refcounts and check_oflag_copied). Every
// cluster the metadata references is counted — the header, each L1 table (active and snapshot),
// every L2 table and data cluster they reach (once per L1 entry that names them, as snapshots
// share them), compressed clusters' host clusters, the refcount table and blocks, the snapshot
// table — and compared with the refcount the image stores:
//
//   stored > counted   a leak: space wasted, no harm to data (repair: lower the refcount)
//   stored < counted   corruption: a cluster in use could be handed out again (repair, with
//                      -r all: raise the refcount)
//   COPIED set on an active L1 or L2 entry exactly when its cluster's refcount is 1, never on
//                      a compressed entry — otherwise corruption (-r all: set it right)
//   a reference a cluster or more past the end of the file, or unaligned, or a refcount block
//                      the refcount table names twice: corruption, reported only
//
// Memory follows the metadata and the file's length, never what the metadata claims: a count
// byte per cluster of the file (ClusterReferenceCounts) and a bit for "stored refcount is 1",
// no list per cluster; findings are counted and the first thousand of each kind kept
// (ImageCheckResult). Each distinct L1 and L2 table is read once, however many entries name it,
// and what it references is counted once per naming entry: a table named by 4 million L1 entries
// costs one read, and its refcount of 1 against 4 million references is the corruption reported.
// The passes: (1) which clusters have refcount 1, for the COPIED checks; (2) the references;
// (3) stored against counted, refcount block by refcount block. Refcount repairs happen in (3),
// as qemu-img's do in its comparison, so no list of them is kept.
//
// Repairs go through the writer (Qcow2Allocation.swift), so they are ordered as every write is;
// refcounts first, then the COPIED flags judged by the repaired refcounts. A clean result of -r
// all clears the dirty and corrupt bits, as QEMU does.
import BlockGraph

extension Qcow2Driver {
    /// 2^28 clusters: a file of 128 GiB in 512-byte clusters, 16 TiB in 64 KiB ones; 256 MiB of
    /// counts at most (touched only where references land) and 32 MiB of refcount-is-1 bits.
    static let maxCheckedClusters: UInt64 = 1 << 28

    /// Counts references and compares them with the stored refcounts; with `repair`, fixes what
    /// it may (the image must be open read-write).
    public func check(repair: RepairMode?) throws(BlockError) -> ImageCheckResult {
        try writer.withLock { (state) throws(BlockError) in try checkAndRepair(repair, &state) }
    }

    /// What one pass of the check repairs as it finds it.
    private struct CheckFixes: OptionSet {
        let rawValue: Int
        static let leaks = CheckFixes(rawValue: 1)
        static let refcountErrors = CheckFixes(rawValue: 2)
        static let copiedFlags = CheckFixes(rawValue: 4)
    }

    func checkAndRepair(_ repair: RepairMode?, _ state: inout Qcow2WriterState) throws(BlockError) -> ImageCheckResult {
        // What this open still holds in memory goes to disk first, so the check sees it.
        try writeBackMetadata(&state)
        guard let repair else { return try analyse(&state, fixing: []) }
        try prepareForWriting(&state)
        var result = try analyse(&state, fixing: repair == .all ? [.leaks, .refcountErrors] : .leaks)
        try writeBackMetadata(&state)
        guard repair == .all else { return result }
        result.corruptionsFixed += try analyse(&state, fixing: .copiedFlags).corruptionsFixed
        try writeBackMetadata(&state)
        if try analyse(&state, fixing: []).corruptionCount == 0 {
            let features = try incompatibleFeaturesOnDisk()
            if header.version >= 3 && features & (Qcow2Header.dirtyBit | Qcow2Header.corruptBit) != 0 {
                try file.during(.headerUpdate) { () throws(BlockError) in
                    try writeBigEndian(features & ~(Qcow2Header.dirtyBit | Qcow2Header.corruptBit), at: 72)
                    try file.driver.flush()
                }
            }
            dirtyBitCleared.store(true, ordering: .releasing)
            corruptionMarked.store(false, ordering: .releasing)
        }
        return result
    }

    /// Sets the COPIED bit of an active L1 entry (`l2TableOffset` nil) or L2 entry as its
    /// cluster's refcount says: set for a refcount of 1, clear otherwise and on compressed entries.
    private func fixCopiedFlag(_ entry: UInt64, at index: Int, ofTableAt l2TableOffset: UInt64?, refcountIsOne: Bool,
                               _ state: inout Qcow2WriterState) throws(BlockError) {
        let fixed = entry & Self.compressedBit != 0 || !refcountIsOne ? entry & ~Self.copiedBit : entry | Self.copiedBit
        guard let table = l2TableOffset else {
            state.pendingL1[index] = fixed
            cache.withLock { $0.setL1Entry(fixed, at: index) }
            return
        }
        if !cache.withLock({ $0.setEntry(fixed, at: index, ofTableAt: table) }) {
            var entries = try l2Table(at: table)
            entries[index] = fixed
            cache.withLock { $0.insertDirty(entries, at: table) }
        }
    }

    /// One pass of the check, reading the image as it is on disk (and the refcount blocks this
    /// pass repaired, as they are in memory), repairing what `fixes` names as it goes.
    private func analyse(_ state: inout Qcow2WriterState, fixing fixes: CheckFixes) throws(BlockError) -> ImageCheckResult {
        var result = ImageCheckResult()
        let clusterSize = UInt64(self.clusterSize)
        let fileLength = UInt64(try file.driver.length())
        let fileClusters = fileLength / clusterSize + (fileLength % clusterSize == 0 ? 0 : 1)
        // A count per cluster of the file: a (sparse) file too large for that is refused, not
        // allowed to exhaust memory.
        guard fileClusters <= Self.maxCheckedClusters else {
            throw BlockError(.unsupported, "qcow2: the image file has \(fileClusters) clusters, more than this check counts (\(Self.maxCheckedClusters))")
        }
        // One cluster more than the file has: a reference may end less than a cluster past the
        // end of the file (below), into the cluster after its last.
        guard let counts = ClusterReferenceCounts(clusters: fileClusters + 1) else {
            throw BlockError(.noSpace, "qcow2: no memory to count the references of \(fileClusters) clusters")
        }

        // QEMU's rule (qcow2_inc_refcounts_imrt): the last cluster of an image may be only partly
        // allocated, so a region that ends less than a cluster past the end of the file is
        // counted; one that ends further is corruption, reported each time it is referenced
        // and not counted.
        func reference(_ offset: UInt64, bytes: UInt64, times: UInt64 = 1) {
            guard bytes > 0, times > 0 else { return }
            let (end, overflow) = offset.addingReportingOverflow(bytes)
            guard !overflow, end < fileLength + clusterSize else {
                let listed = min(times, UInt64(ImageCheckResult.listedFindings))
                for _ in 0..<listed { result.otherErrors.append(Qcow2CheckFinding.pastTheEnd(offset: offset, byteCount: bytes)) }
                if times > listed { result.otherErrors.countUnlisted(Int(times - listed)) }
                return
            }
            for cluster in offset / clusterSize...(end - 1) / clusterSize { counts.add(times, to: cluster) }
        }

        // The refcount table (at most 8 MiB, checked at open) and its blocks, read through one
        // function: the block this pass repaired is in memory, the last one read is kept, as a
        // hostile table may name one block for every entry.
        let width = refcountWidth
        let perBlock = width.entriesPerBlock(clusterSize: self.clusterSize)
        let refcountTableBytes = state.refcountTableClusters * clusterSize
        let refcountTable = try Self.readBytes(file, at: state.refcountTableOffset, count: Int(refcountTableBytes))
            .bigEndianEntries.map { $0 & Self.offsetMask }
        func isValidBlock(_ block: UInt64) -> Bool { block % clusterSize == 0 && block + clusterSize <= fileLength }
        var lastBlockRead: (offset: UInt64, bytes: [UInt8])?
        func refcountBlock(_ block: UInt64) throws(BlockError) -> [UInt8] {
            if let repaired = state.refcountBlocks[block] { return repaired.bytes }
            if let lastBlockRead, lastBlockRead.offset == block { return lastBlockRead.bytes }
            let bytes = try Self.readBytes(file, at: block, count: self.clusterSize)
            lastBlockRead = (block, bytes)
            return bytes
        }
        /// The stored refcount of one cluster, for the few findings that print it.
        func storedRefcount(_ cluster: UInt64) -> UInt64 {
            let tableIndex = cluster / perBlock
            guard tableIndex < UInt64(refcountTable.count), case let block = refcountTable[Int(tableIndex)],
                  block != 0, isValidBlock(block), let bytes = try? refcountBlock(block) else { return 0 }
            return width.value(in: bytes, at: Int(cluster % perBlock))
        }
        /// Calls `body` with runs of at most `longestRun` of the first `clusterCount` clusters in
        /// order, and their stored refcounts (nil where no refcount block counts them: all 0),
        /// decoded a run at a time.
        let longestRun = min(1 << 16, fileClusters)
        func forEachRun(upTo clusterCount: UInt64,
                        _ body: (_ first: UInt64, _ count: Int, _ stored: [UInt64]?) throws(BlockError) -> Void) throws(BlockError) {
            var first: UInt64 = 0
            while first < clusterCount {
                let tableIndex = first / perBlock
                let count = min(longestRun, clusterCount - first, perBlock - first % perBlock)
                let block = tableIndex < UInt64(refcountTable.count) ? refcountTable[Int(tableIndex)] : 0
                let stored = block != 0 && isValidBlock(block)
                    ? width.values(in: try refcountBlock(block), from: Int(first % perBlock), count: Int(count)) : nil
                try body(first, Int(count), stored)
                first += count
            }
        }

        // (1) Which clusters of the file have refcount 1.
        var refcountIsOneBits = [UInt64](repeating: 0, count: Int((fileClusters + 63) / 64))
        try forEachRun(upTo: fileClusters) { (first, count, stored) throws(BlockError) in
            guard let stored else { return }
            for index in 0..<count where stored[index] == 1 {
                let cluster = Int(first) + index
                refcountIsOneBits[cluster / 64] |= 1 << UInt64(cluster % 64)
            }
        }
        let refcountIsOne = refcountIsOneBits
        func storedIsOne(_ offset: UInt64) -> Bool {
            let cluster = offset / clusterSize
            return cluster < fileClusters && refcountIsOne[Int(cluster / 64)] >> (cluster % 64) & 1 != 0
        }

        // (2) The references. Snapshots' L1 tables that are one table (same offset and size) are
        // read once, counted as often as they are named.
        reference(0, bytes: clusterSize)
        var l1Tables = [(offset: state.l1TableOffset, entries: cache.withLock { $0.l1.count }, name: "active L1 table", times: UInt64(1), isActive: true)]
        let snapshotTable = snapshotTableLocation(state)
        if snapshotTable.count > 0 {
            let snapshots = try Qcow2Snapshot.readTable(of: self, at: snapshotTable)
            reference(snapshotTable.offset, bytes: snapshots.tableBytes)
            var tableAt = [state.l1TableOffset: 0]
            for (number, snapshot) in snapshots.entries.enumerated() {
                if let same = tableAt[snapshot.l1TableOffset], l1Tables[same].entries == Int(snapshot.l1Size) {
                    l1Tables[same].times += 1
                } else {
                    tableAt[snapshot.l1TableOffset] = tableAt[snapshot.l1TableOffset] ?? l1Tables.count
                    l1Tables.append((snapshot.l1TableOffset, Int(snapshot.l1Size), "snapshot \(number + 1) L1 table", 1, false))
                }
            }
        }
        // The persistent bitmaps' directory, tables and data clusters, each referenced once.
        try forEachBitmapCluster { (offset, bytes) throws(BlockError) in reference(offset, bytes: bytes) }
        // Every L2 table the L1 entries name: its offset, with bit 0 set when the entries are
        // active (offsets are cluster-aligned), how many entries name it, and how many references
        // they make (each entry as often as its L1 table is named). Sorted, the names of one table
        // lie together.
        var l2Names: [(key: UInt64, entries: UInt64, times: UInt64)] = []
        for table in l1Tables {
            reference(table.offset, bytes: UInt64(table.entries) * 8, times: table.times)
            let (l1End, overflow) = table.offset.addingReportingOverflow(UInt64(table.entries) * 8)
            guard table.offset % clusterSize == 0, !overflow, l1End <= fileLength else {
                result.otherErrors.append(Qcow2CheckFinding.invalidL1Table(name: table.name, offset: table.offset))
                continue
            }
            let l1 = try Self.readBytes(file, at: table.offset, count: table.entries * 8).bigEndianEntries
            for (index, l1Entry) in l1.enumerated() {
                let l2Offset = l1Entry & Self.offsetMask
                guard l2Offset != 0 else { continue }
                guard l2Offset % clusterSize == 0, l2Offset + clusterSize <= fileLength else {
                    result.otherErrors.append(Qcow2CheckFinding.invalidL2Table(offset: l2Offset, l1Table: table.name, index: index))
                    continue
                }
                // An entry naming the table the entry before it named adds to that one's count.
                let key = table.isActive ? l2Offset | 1 : l2Offset
                if l2Names.last?.key == key {
                    l2Names[l2Names.count - 1].entries += 1
                    l2Names[l2Names.count - 1].times += table.times
                } else {
                    l2Names.append((key, 1, table.times))
                }
                guard table.isActive, storedIsOne(l2Offset) != (l1Entry & Self.copiedBit != 0) else { continue }
                result.flagErrors.append(Qcow2CheckFinding.copiedFlag(l2TableOffset: nil, index: index, entry: l1Entry,
                                                                      refcount: storedRefcount(l2Offset / clusterSize)))
                if fixes.contains(.copiedFlags) {
                    try fixCopiedFlag(l1Entry, at: index, ofTableAt: nil, refcountIsOne: storedIsOne(l2Offset), &state)
                    result.corruptionsFixed += 1
                }
            }
        }
        l2Names.sort { $0.key < $1.key }
        var nameIndex = 0
        while nameIndex < l2Names.count {
            let l2Offset = l2Names[nameIndex].key & ~1
            var times: UInt64 = 0, activeTimes: UInt64 = 0
            while nameIndex < l2Names.count && l2Names[nameIndex].key & ~1 == l2Offset {
                times += l2Names[nameIndex].times
                if l2Names[nameIndex].key & 1 != 0 { activeTimes += l2Names[nameIndex].entries }
                nameIndex += 1
            }
            reference(l2Offset, bytes: clusterSize, times: times)
            let l2 = try Self.readBytes(file, at: l2Offset, count: self.clusterSize).bigEndianEntries
            // qemu-img's figures, within each table (fragmentation restarts with each), counted
            // once per active entry that names the table.
            var allocated: UInt64 = 0, fragmented: UInt64 = 0, compressed: UInt64 = 0, nextContiguous: UInt64 = 0
            for (entryIndex, entry) in l2.enumerated() where !extendedL2 || entryIndex % 2 == 0 {
                if extendedL2, let finding = Self.subclusterFinding(entry: entry, bitmap: l2[entryIndex + 1], index: entryIndex / 2) {
                    result.otherErrors.append(finding)
                    // As qemu-img: a compressed entry with a bitmap is not followed any further.
                    if entry & Self.compressedBit != 0 { continue }
                }
                // A data file's clusters have no refcounts (and may start at offset 0): they are
                // counted as allocated, never as references, and their COPIED flag is always set.
                var hostOffset: UInt64? = nil
                switch try? mapping(ofEntry: entry, cluster: UInt64(entryIndex)) {
                case .data(let offset)?:
                    hostOffset = offset
                    if dataFile == nil { reference(offset, bytes: clusterSize, times: times) }
                case .compressed(let offset, let count)?:
                    reference(offset, bytes: UInt64(count), times: times)
                    // Fragmented by nature, as qemu-img counts them: neighbours share sectors.
                    allocated += 1
                    compressed += 1
                    fragmented += 1
                    guard activeTimes > 0, entry & Self.copiedBit != 0 else { continue }
                    result.flagErrors.append(Qcow2CheckFinding.copiedFlag(l2TableOffset: l2Offset, index: entryIndex, entry: entry, refcount: 0))
                    if fixes.contains(.copiedFlags) {
                        try fixCopiedFlag(entry, at: entryIndex, ofTableAt: l2Offset, refcountIsOne: false, &state)
                        result.corruptionsFixed += 1
                    }
                case .zeroes?:
                    // A preallocated zero cluster still owns its host cluster.
                    let kept = entry & Self.offsetMask
                    if kept != 0 { hostOffset = kept }
                    if kept != 0 && dataFile == nil { reference(kept, bytes: clusterSize, times: times) }
                case .unallocated?:
                    break
                case nil:
                    result.otherErrors.append(Qcow2CheckFinding.unalignedCluster(offset: entry & Self.offsetMask))
                }
                guard let host = hostOffset else { continue }
                allocated += 1
                if nextContiguous != 0 && host != nextContiguous { fragmented += 1 }
                nextContiguous = host + clusterSize
                let refcountIsOne = dataFile != nil || storedIsOne(host)
                guard activeTimes > 0, refcountIsOne != (entry & Self.copiedBit != 0) else { continue }
                result.flagErrors.append(Qcow2CheckFinding.copiedFlag(l2TableOffset: l2Offset, index: entryIndex, entry: entry,
                                                                      refcount: dataFile != nil ? 1 : storedRefcount(host / clusterSize)))
                if fixes.contains(.copiedFlags) {
                    try fixCopiedFlag(entry, at: entryIndex, ofTableAt: l2Offset, refcountIsOne: refcountIsOne, &state)
                    result.corruptionsFixed += 1
                }
            }
            result.allocatedClusters += allocated * activeTimes
            result.fragmentedClusters += fragmented * activeTimes
            result.compressedClusters += compressed * activeTimes
        }
        l2Names = []

        reference(state.refcountTableOffset, bytes: refcountTableBytes)
        for (tableIndex, block) in refcountTable.enumerated() where block != 0 {
            guard isValidBlock(block) else {
                result.otherErrors.append(Qcow2CheckFinding.invalidRefcountBlock(index: tableIndex, offset: block))
                continue
            }
            reference(block, bytes: clusterSize)
            // As qemu-img: a block named twice (or also named as something else) is corruption.
            let named = counts[block / clusterSize]
            if named > 1 { result.otherErrors.append(Qcow2CheckFinding.refcountBlockNamedAgain(index: tableIndex, references: named)) }
        }

        // (3) Stored against counted. Each run counts in local variables, as a hostile image makes
        // every cluster of the file a finding.
        var highestUsedCluster: UInt64?
        let noRefcounts = [UInt64](repeating: 0, count: Int(longestRun))
        // The cluster past the file's last, as QEMU compares it too once a reference reached it.
        let comparedClusters = fileClusters + (counts[fileClusters] > 0 ? 1 : 0)
        let fixesLeaks = fixes.contains(.leaks), fixesRefcounts = fixes.contains(.refcountErrors)
        try forEachRun(upTo: comparedClusters) { (first, count, stored) throws(BlockError) in
            let stored = stored ?? noRefcounts
            var highestInRun: Int?, unlistedLeaks = 0, leaksListFull = result.leaks.isFull
            defer {
                result.leaks.countUnlisted(unlistedLeaks)
                if let highestInRun { highestUsedCluster = first + UInt64(highestInRun) }
            }
            for index in 0..<count {
                let cluster = first + UInt64(index)
                let storedCount = stored[index], counted = counts[cluster]
                if storedCount > 0 || counted > 0 { highestInRun = index }
                if storedCount > counted {
                    if leaksListFull && !fixesLeaks {
                        unlistedLeaks += 1
                        continue
                    }
                    result.leaks.append(.init(cluster: cluster, refcount: storedCount, references: counted))
                    leaksListFull = result.leaks.isFull
                    guard fixesLeaks else { continue }
                    try setRefcount(ofCluster: cluster, to: counted, &state)
                    result.leaksFixed += 1
                } else if storedCount < counted {
                    result.refcountErrors.append(.init(cluster: cluster, refcount: storedCount, references: counted))
                    // A count past the refcount width cannot be stored; it stays an error.
                    guard fixesRefcounts, counted <= width.maximum else { continue }
                    try setRefcount(ofCluster: cluster, to: counted, &state)
                    result.corruptionsFixed += 1
                } else {
                    continue
                }
                // A repair may have written blocks (refcount table growth): read them again.
                lastBlockRead = nil
            }
        }
        result.totalClusters = (UInt64(try length()) + clusterSize - 1) / clusterSize
        // As qemu-img: the end of the last cluster in use, which the file may stop short of.
        result.imageEndOffset = highestUsedCluster.map { ($0 + 1) * clusterSize } ?? 0
        return result
    }
}
