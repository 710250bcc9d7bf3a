// Qcow2SnapshotUpdate: creating, applying and deleting internal snapshots (QEMU's
// qcow2_snapshot_create, _goto and _delete), each switched in by one header write:
//
//   0. what this open holds in memory is written back (Qcow2Writer.swift's order), so the file
//      is the image as it is;
//   1. the new metadata is worked out in memory and checked — the tables the operation walks,
//      every refcount it changes (none may fall below zero or pass the width's maximum) —
//      before anything is written;
//   2. new clusters past the last one in use receive, in this order: copies of the active L2
//      tables whose COPIED flags change, the new active L1 table, the new snapshot table, a copy
//      of every refcount block that changes (counting the new clusters, and with what the image
//      no longer reaches at zero), and a new refcount table naming those copies; fdatasync;
//   3. the header's bytes 24–71 — size, L1 size and offset, refcount table offset and clusters,
//      snapshot count and offset — in one write inside one sector; fdatasync.
//
// Nothing the old header reaches is written: a crash before 3 leaves exactly the old image (the
// new clusters have refcount 0 in it: free), after 3 exactly the new one — clean either way, not
// even a leak. QEMU changes refcounts and COPIED flags in place; that cannot be ordered for a
// crash, since a refcount of 2 beside a set COPIED flag, or 1 beside a clear one, is corruption to
// qemu-img check whichever reaches the disk first. So the active image gets copies instead:
// creating, the snapshot keeps the active L1 and L2 tables as they were and the active image
// moves to copies with COPIED clear; applying and deleting, the active image moves to a new L1
// table, and to copies of the L2 tables whose flags change. What the image no longer reaches is
// free afterwards: blk appends and does not reuse it, qemu-img does.
//
// Refcounts count, for each cluster, the L1 tables that reach it (qcow2.rst; QEMU's
// qcow2_update_snapshot_refcount): a snapshot adds one to each L2 table its L1 names and to each
// cluster those tables name, once per naming entry, and deleting it takes them away.
import BlockGraph

extension Qcow2Driver {
    /// Takes a snapshot of the image as it is now, named `name` (QEMU keeps 255 bytes of it), with
    /// the next numeric ID as QEMU picks it; returns it as listed.
    public func createSnapshot(name: String, dateSeconds: UInt32, dateNanoseconds: UInt32) throws(BlockError) -> SnapshotInfo {
        try refuseWithDataFile("internal snapshots")
        return try writer.withLock { (state) throws(BlockError) -> SnapshotInfo in
            let context = try beginSnapshotChange(&state)
            let table = try Qcow2Snapshot.readTable(of: self, at: snapshotTableLocation(state))
            guard table.entries.count < Qcow2Snapshot.maxCount else {
                throw BlockError(.noSpace, "qcow2: the image has \(table.entries.count) snapshots, QEMU's maximum")
            }
            let highest = table.entries.map { entry in UInt64(entry.id.prefix { $0.isASCII && $0.isNumber }) ?? 0 }.max() ?? 0
            let activeL1 = cache.withLock { $0.l1 }
            let snapshot = Qcow2Snapshot(id: String(highest + 1), name: String(decoding: name.utf8.prefix(255), as: UTF8.self),
                                         l1TableOffset: state.l1TableOffset, l1Size: UInt32(activeL1.count),
                                         dateSeconds: dateSeconds, dateNanoseconds: dateNanoseconds, diskSize: UInt64(try length()))
            var refcounts = context.refcounts
            try addReferences(of: activeL1, 1, to: &refcounts, below: context.end)
            try switchImage(SnapshotChange(activeL1: activeL1, virtualSize: snapshot.diskSize!, snapshots: table.entries + [snapshot],
                                           oldSnapshotTableBytes: table.tableBytes, releasesActiveL1: false), refcounts, &state)
            return SnapshotInfo(id: snapshot.id, name: snapshot.name, vmStateSize: 0, dateSeconds: dateSeconds,
                                dateNanoseconds: dateNanoseconds, vmClockNanoseconds: 0, icount: 0)
        }
    }

    /// Makes the snapshot with ID `id` the active image, its size included.
    public func applySnapshot(id: String) throws(BlockError) {
        // Everything may change: every granule is marked first.
        try markBitmaps(at: 0, byteCount: try length())
        try writer.withLock { (state) throws(BlockError) in
            let context = try beginSnapshotChange(&state)
            let table = try Qcow2Snapshot.readTable(of: self, at: snapshotTableLocation(state))
            guard let snapshot = table.entries.first(where: { $0.id == id }) else {
                throw BlockError(.notFound, "Failed to load snapshot: No such file or directory")
            }
            let snapshotL1 = try readSnapshotL1(snapshot, below: context.end)
            // A snapshot without a recorded size has the image's (QEMU's reading of old tables).
            var size = UInt64(try length())
            if let diskSize = snapshot.diskSize { size = diskSize }
            let bytesPerL1Entry = UInt64(clusterSize) * UInt64(l2Entries)
            let needed = size / bytesPerL1Entry + (size % bytesPerL1Entry == 0 ? 0 : 1)
            let count = max(UInt64(snapshotL1.count), needed)
            guard count * 8 <= Qcow2Header.maxL1Bytes, size <= UInt64(Int64.max) else {
                throw BlockError(.corrupt, "qcow2: snapshot \(id) has a disk size of \(size) bytes, too large for its L1 table")
            }
            // Bitmap tables are sized for the image, as QEMU refuses too.
            let currentSize = UInt64(try length()), hasBitmaps = try !bitmapState().bitmaps.isEmpty
            guard size == currentSize || !hasBitmaps else {
                throw BlockError(.unsupported, "qcow2: applying a snapshot of another size to an image with persistent dirty bitmaps")
            }
            var refcounts = context.refcounts
            let activeL1 = cache.withLock { $0.l1 }
            try addReferences(of: snapshotL1, 1, to: &refcounts, below: context.end)
            try addReferences(of: activeL1, -1, to: &refcounts, below: context.end)
            try switchImage(SnapshotChange(activeL1: snapshotL1 + [UInt64](repeating: 0, count: Int(count) - snapshotL1.count),
                                           virtualSize: size, snapshots: nil, oldSnapshotTableBytes: table.tableBytes,
                                           releasesActiveL1: true), refcounts, &state)
        }
    }

    /// Deletes the snapshot with ID `id`, freeing what only it reached.
    public func deleteSnapshot(id: String) throws(BlockError) {
        try writer.withLock { (state) throws(BlockError) in
            let context = try beginSnapshotChange(&state)
            let table = try Qcow2Snapshot.readTable(of: self, at: snapshotTableLocation(state))
            guard let index = table.entries.firstIndex(where: { $0.id == id }) else {
                throw BlockError(.notFound, "Failed to delete snapshot: No such file or directory")
            }
            let snapshot = table.entries[index]
            let snapshotL1 = try readSnapshotL1(snapshot, below: context.end)
            var refcounts = context.refcounts
            try addReferences(of: snapshotL1, -1, to: &refcounts, below: context.end)
            let clusterSize = UInt64(self.clusterSize)
            let l1Clusters = (UInt64(snapshotL1.count) * 8 + clusterSize - 1) / clusterSize
            for cluster in snapshot.l1TableOffset / clusterSize..<snapshot.l1TableOffset / clusterSize + l1Clusters {
                try refcounts.add(-1, toCluster: cluster)
            }
            var remaining = table.entries
            remaining.remove(at: index)
            try switchImage(SnapshotChange(activeL1: cache.withLock { $0.l1 }, virtualSize: UInt64(try length()), snapshots: remaining,
                                           oldSnapshotTableBytes: table.tableBytes, releasesActiveL1: true), refcounts, &state)
        }
    }

    /// What an operation leaves, for `switchImage`.
    private struct SnapshotChange {
        /// The active image's L1 entries afterwards; their COPIED flags are set by `switchImage`.
        var activeL1: [UInt64]
        var virtualSize: UInt64
        /// The snapshot table afterwards; nil when it stays.
        var snapshots: [Qcow2Snapshot]?
        var oldSnapshotTableBytes: UInt64
        /// Whether the current active L1 table is dropped (apply, delete) rather than kept as the
        /// new snapshot's (create).
        var releasesActiveL1: Bool
    }

    /// Step 0, and the refcounts as the file has them, with the first cluster past those in use.
    private func beginSnapshotChange(_ state: inout Qcow2WriterState) throws(BlockError) -> (refcounts: Qcow2SnapshotRefcounts, end: UInt64) {
        try refuseWritesIfCorrupt()
        // The snapshot steps walk L2 tables as 8-byte entries; a bitmap word is not one.
        if extendedL2 {
            throw BlockError(.notSupportedByFormat, "qcow2: blk does not change the internal snapshots of images with extended L2 entries")
        }
        try prepareForWriting(&state)
        try writeBackMetadata(&state)
        let refcounts = Qcow2SnapshotRefcounts(width: refcountWidth, clusterSize: clusterSize, table: state.refcountTable!,
                                               file: file, fileLength: state.nextFreeCluster * UInt64(clusterSize))
        return (refcounts, state.nextFreeCluster)
    }

    /// A snapshot's L1 table, checked to lie inside the clusters in use.
    private func readSnapshotL1(_ snapshot: Qcow2Snapshot, below end: UInt64) throws(BlockError) -> [UInt64] {
        let bytes = UInt64(snapshot.l1Size) * 8
        let (tableEnd, overflow) = snapshot.l1TableOffset.addingReportingOverflow(bytes)
        guard snapshot.l1TableOffset % UInt64(clusterSize) == 0, snapshot.l1TableOffset >= UInt64(clusterSize) || bytes == 0,
              !overflow, tableEnd <= end * UInt64(clusterSize) else {
            throw BlockError(.corrupt, "qcow2: Snapshot L1 table offset invalid (snapshot \(snapshot.id), 0x\(String(snapshot.l1TableOffset, radix: 16)))")
        }
        return try Self.readBytes(file, at: snapshot.l1TableOffset, count: Int(bytes)).bigEndianEntries
    }

    /// An L2 table read from the file (the active ones were written back), checked to lie
    /// inside the clusters in use; not cached, so a table a hostile L1 names costs nothing after.
    private func readL2TableForSnapshot(_ offset: UInt64, below end: UInt64) throws(BlockError) -> [UInt64] {
        guard offset % UInt64(clusterSize) == 0, offset >= UInt64(clusterSize), offset / UInt64(clusterSize) < end else {
            throw BlockError(.corrupt, "qcow2: L2 table offset 0x\(String(offset, radix: 16)) unaligned or outside the image file")
        }
        return try Self.readBytes(file, at: offset, count: clusterSize).bigEndianEntries
    }

    /// The host clusters an L2 entry holds, if any: a data cluster (or a preallocated zero
    /// cluster), or those a compressed cluster's bytes touch.
    private func clusters(ofL2Entry entry: UInt64, below end: UInt64) throws(BlockError) -> ClosedRange<UInt64>? {
        let clusterSize = UInt64(self.clusterSize)
        let range: ClosedRange<UInt64>
        if case .compressed(let hostOffset, let byteCount) = try mapping(ofEntry: entry, cluster: 0) {
            range = hostOffset / clusterSize...(hostOffset + UInt64(byteCount) - 1) / clusterSize
        } else {
            let hostOffset = entry & Self.offsetMask
            guard hostOffset != 0 else { return nil }
            guard hostOffset % clusterSize == 0 else {
                throw BlockError(.corrupt, "qcow2: Cluster allocation offset 0x\(String(hostOffset, radix: 16)) unaligned")
            }
            range = hostOffset / clusterSize...hostOffset / clusterSize
        }
        guard range.lowerBound > 0, range.upperBound < end else {
            throw BlockError(.corrupt, "qcow2: a cluster at 0x\(String(range.lowerBound * clusterSize, radix: 16)) is outside the image file")
        }
        return range
    }

    /// Adds `delta` to the refcount of each L2 table `l1` names and each cluster those name, once
    /// per naming entry.
    private func addReferences(of l1: [UInt64], _ delta: Int, to refcounts: inout Qcow2SnapshotRefcounts, below end: UInt64) throws(BlockError) {
        for l1Entry in l1 {
            let table = l1Entry & Self.offsetMask
            guard table != 0 else { continue }
            let entries = try readL2TableForSnapshot(table, below: end)
            try refcounts.add(delta, toCluster: table / UInt64(clusterSize))
            for entry in entries {
                guard let held = try clusters(ofL2Entry: entry, below: end) else { continue }
                for cluster in held { try refcounts.add(delta, toCluster: cluster) }
            }
        }
    }

    /// `entries` with the COPIED flag of each data entry as its refcount says: set for 1.
    private func withCopiedFlags(_ entries: [UInt64], _ refcounts: inout Qcow2SnapshotRefcounts) throws(BlockError) -> [UInt64] {
        var flagged = entries
        for (index, entry) in entries.enumerated() where entry & Self.compressedBit == 0 && entry & Self.offsetMask != 0 {
            let exclusive = try refcounts.refcount(ofCluster: (entry & Self.offsetMask) / UInt64(clusterSize)) == 1
            flagged[index] = exclusive ? entry | Self.copiedBit : entry & ~Self.copiedBit
        }
        return flagged
    }

    /// Steps 1 (the rest) to 3 of the order above, then this open's picture of the image.
    private func switchImage(_ change: SnapshotChange, _ start: Qcow2SnapshotRefcounts, _ state: inout Qcow2WriterState) throws(BlockError) {
        var refcounts = start
        let clusterSize = UInt64(self.clusterSize)
        let first = state.nextFreeCluster
        var next = first
        // Active L2 tables whose flags change are copied; the copy is the active image's alone.
        var copies: [(index: Int, from: UInt64, to: UInt64)] = []
        for (index, l1Entry) in change.activeL1.enumerated() where l1Entry & Self.offsetMask != 0 {
            let table = l1Entry & Self.offsetMask
            let entries = try readL2TableForSnapshot(table, below: first)
            guard try withCopiedFlags(entries, &refcounts) != entries else { continue }
            try refcounts.add(-1, toCluster: table / clusterSize)
            copies.append((index, table, next * clusterSize))
            next += 1
        }
        var l1 = change.activeL1
        for (index, entry) in l1.enumerated() where entry & Self.offsetMask != 0 {
            let exclusive = try refcounts.refcount(ofCluster: (entry & Self.offsetMask) / clusterSize) == 1
            l1[index] = exclusive ? entry | Self.copiedBit : entry & ~Self.copiedBit
        }
        for copy in copies { l1[copy.index] = copy.to | Self.copiedBit }
        let l1Offset = next * clusterSize, l1Clusters = max(1, (UInt64(l1.count) * 8 + clusterSize - 1) / clusterSize)
        next += l1Clusters
        if change.releasesActiveL1 && state.l1TableOffset != 0 {
            let oldL1Clusters = max(1, (UInt64(cache.withLock { $0.l1.count }) * 8 + clusterSize - 1) / clusterSize)
            let oldL1 = state.l1TableOffset / clusterSize
            for cluster in oldL1..<oldL1 + oldL1Clusters { try refcounts.add(-1, toCluster: cluster) }
        }
        var snapshotTable = snapshotTableLocation(state), snapshotBytes: [UInt8] = []
        if let snapshots = change.snapshots {
            if snapshotTable.count > 0 && change.oldSnapshotTableBytes > 0 {
                let old = snapshotTable.offset / clusterSize
                for cluster in old..<old + (change.oldSnapshotTableBytes + clusterSize - 1) / clusterSize { try refcounts.add(-1, toCluster: cluster) }
            }
            snapshotBytes = Qcow2Snapshot.tableBytes(snapshots)
            guard snapshotBytes.count <= Qcow2Snapshot.maxTableBytes else {
                throw BlockError(.noSpace, "qcow2: the snapshot table would pass QEMU's limit of \(Qcow2Snapshot.maxTableBytes >> 20) MiB")
            }
            snapshotTable = Qcow2SnapshotTableLocation(count: UInt32(snapshots.count), offset: snapshots.isEmpty ? 0 : next * clusterSize)
            next += (UInt64(snapshotBytes.count) + clusterSize - 1) / clusterSize
        }
        let oldTable = state.refcountTableOffset / clusterSize
        for cluster in oldTable..<oldTable + state.refcountTableClusters { try refcounts.add(-1, toCluster: cluster) }

        // The refcount blocks: a copy of each that changes or counts a new cluster, each copy
        // itself a new cluster, whose old cluster is freed — until the count settles.
        let contentEnd = next
        var blockCount = 0, tableClusters = state.refcountTableClusters, released = Set<Int>()
        while true {
            let end = contentEnd + UInt64(blockCount) + tableClusters
            for index in refcounts.blockIndex(ofCluster: first)...refcounts.blockIndex(ofCluster: end - 1) { try refcounts.load(index) }
            while let index = refcounts.indices.first(where: { !released.contains($0) && refcounts.diskOffset(ofBlock: $0) != 0 }) {
                released.insert(index)
                try refcounts.add(-1, toCluster: refcounts.diskOffset(ofBlock: index) / clusterSize)
            }
            let entries = UInt64(max(state.refcountTable!.count, refcounts.indices.max()! + 1))
            let neededTable = max(tableClusters, (entries * 8 + clusterSize - 1) / clusterSize)
            if refcounts.indices.count == blockCount && neededTable == tableClusters { break }
            blockCount = refcounts.indices.count
            tableClusters = neededTable
        }
        guard tableClusters * clusterSize <= Qcow2Header.maxRefcountTableBytes else {
            throw BlockError(.noSpace, "qcow2: the refcount table would pass QEMU's limit of \(Qcow2Header.maxRefcountTableBytes >> 20) MiB")
        }
        let end = contentEnd + UInt64(blockCount) + tableClusters
        for cluster in first..<end { try refcounts.set(1, ofCluster: cluster) }
        var refcountTable = state.refcountTable! + [UInt64](repeating: 0, count: Int(tableClusters * clusterSize / 8) - state.refcountTable!.count)
        let blockIndices = refcounts.indices.sorted()
        for (number, index) in blockIndices.enumerated() { refcountTable[index] = (contentEnd + UInt64(number)) * clusterSize }
        let refcountTableOffset = (contentEnd + UInt64(blockCount)) * clusterSize

        state.fileEnd = max(state.fileEnd, end * clusterSize) // a failed attempt's clusters are trimmed by the next flush
        try file.during(.l2Update) { () throws(BlockError) in
            for copy in copies {
                try writeL2Table(try withCopiedFlags(try readL2TableForSnapshot(copy.from, below: first), &refcounts), at: copy.to)
            }
        }
        try file.during(.l1Update) { () throws(BlockError) in
            var bytes = [UInt8](repeating: 0, count: Int(l1Clusters * clusterSize))
            for (index, entry) in l1.enumerated() { bytes.setBigEndian(entry, at: index * 8) }
            try writeBytes(bytes, at: l1Offset)
        }
        if !snapshotBytes.isEmpty { try writeBytes(snapshotBytes, at: snapshotTable.offset) }
        try file.during(.refblockUpdate) { () throws(BlockError) in
            for (number, index) in blockIndices.enumerated() {
                try writeBytes(refcounts.block(index)!, at: (contentEnd + UInt64(number)) * clusterSize)
            }
        }
        try file.during(.reftableUpdate) { () throws(BlockError) in
            var bytes = [UInt8](repeating: 0, count: Int(tableClusters * clusterSize))
            for (index, entry) in refcountTable.enumerated() where entry != 0 { bytes.setBigEndian(entry, at: index * 8) }
            try writeBytes(bytes, at: refcountTableOffset)
            try file.driver.flush()
        }
        var header = [UInt8](repeating: 0, count: 48) // bytes 24–71
        header.setBigEndian(change.virtualSize, at: 0)
        header.setBigEndian(self.header.cryptMethod, at: 8)
        header.setBigEndian(UInt32(l1.count), at: 12)
        header.setBigEndian(l1Offset, at: 16)
        header.setBigEndian(refcountTableOffset, at: 24)
        header.setBigEndian(UInt32(tableClusters), at: 32)
        header.setBigEndian(snapshotTable.count, at: 36)
        header.setBigEndian(snapshotTable.offset, at: 40)
        do throws(BlockError) {
            try file.during(.headerUpdate) { () throws(BlockError) in
                try writeBytes(header, at: 24)
                try file.driver.flush()
            }
        } catch {
            // Which header is on disk is unknown now (both images are whole): this open writes
            // nothing more, so neither is overwritten from a stale picture of the other.
            state.failure = BlockError(.ioError, "qcow2: switching to the new snapshot metadata failed, so this open writes no more: \(error.message)",
                                       cause: error.cause)
            throw state.failure!
        }
        state.refcountTable = refcountTable
        state.refcountTableOffset = refcountTableOffset
        state.refcountTableClusters = tableClusters
        state.refcountBlocks = [:]
        state.nextFreeCluster = end
        state.l1TableOffset = l1Offset
        state.snapshotTable = snapshotTable
        cache.withLock { $0.replaceL1(with: l1) }
        virtualSize.store(Int64(change.virtualSize), ordering: .releasing)
    }

    private func writeL2Table(_ entries: [UInt64], at offset: UInt64) throws(BlockError) {
        var bytes = [UInt8](repeating: 0, count: clusterSize)
        for (index, entry) in entries.enumerated() where entry != 0 { bytes.setBigEndian(entry, at: index * 8) }
        try writeBytes(bytes, at: offset)
    }
}
