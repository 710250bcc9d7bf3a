// Qcow2Resize: resizing a qcow2 image. Shrinking is Qcow2Shrink.swift's. Growing: when the L1
// table already covers the new size only the header's size changes; otherwise a larger L1 table
// is written at the end of the file first:
//
//   1. the new L1 table (the old entries, then zeroes) and its refcounts; fdatasync;
//   2. the header's size, L1 size and L1 offset — bytes 24–47, one write inside one sector;
//      fdatasync. Persistent bitmaps whose tables must grow change with it
//      (Qcow2BitmapResize.swift);
//   3. the old L1 table's clusters lose their reference (then written and flushed).
//
// A crash before 2 leaves the new table as a leak and the image as it was; after 2, the old
// table is at worst a leak. Resizing a version 2 image with snapshots is refused, as QEMU
// refuses it (version 2 did not require a snapshot to record its size).
import BlockGraph

extension Qcow2Driver {
    /// Grows the image, moving the L1 table to a larger one when needed, or shrinks it
    /// (Qcow2Shrink.swift).
    public func truncate(to byteCount: Int64) throws(BlockError) {
        if header.hasRawExternalData { try refuseWithDataFile("resizing an image whose data file is raw") }
        try writer.withLock { (state) throws(BlockError) in
            let current = try length()
            guard byteCount != current else { return }
            let onDisk = try currentHeader()
            if onDisk.version < 3 && onDisk.snapshotCount > 0 {
                throw BlockError(.unsupported, "Can't resize a v2 image which has snapshots")
            }
            if byteCount < current {
                if let warning = try shrink(to: byteCount, &state) { resizeWarnings.withLock { $0.append(warning) } }
                return
            }
            try prepareForWriting(&state)
            try checkBitmapsCover(byteCount)
            try writeBackMetadata(&state)
            let clusterSize = UInt64(self.clusterSize)
            let bytesPerL1Entry = clusterSize * UInt64(l2Entries)
            let needed = (UInt64(byteCount) + bytesPerL1Entry - 1) / bytesPerL1Entry
            let oldL1 = cache.withLock { $0.l1 }
            var headerFields = [UInt8](repeating: 0, count: 24) // bytes 24–47
            headerFields.setBigEndian(UInt64(byteCount), at: 0)
            if needed > UInt64(oldL1.count) {
                guard needed * 8 <= Qcow2Header.maxL1Bytes else {
                    throw BlockError(.invalidRequest, "Image size too large for this cluster size (the L1 table would pass 32 MiB)")
                }
                let tableClusters = (needed * 8 + clusterSize - 1) / clusterSize
                let newOffset = try allocateClusters(tableClusters, &state)
                var table = [UInt8](repeating: 0, count: Int(tableClusters * clusterSize))
                for (index, entry) in oldL1.enumerated() { table.setBigEndian(entry, at: index * 8) }
                try writeBytes(table, at: newOffset)
                try writeBackMetadata(&state) // the table and its refcounts are durable
                headerFields.setBigEndian(UInt32(needed), at: 12)
                headerFields.setBigEndian(newOffset, at: 16)
                try switchSize(headerFields, to: byteCount, &state)
                let oldClusters = (UInt64(oldL1.count) * 8 + clusterSize - 1) / clusterSize
                if state.l1TableOffset != 0 { // an empty L1 table may have no cluster of its own
                    state.pendingReleases += Array(state.l1TableOffset / clusterSize..<state.l1TableOffset / clusterSize + max(oldClusters, 1))
                }
                state.l1TableOffset = newOffset
                cache.withLock { $0.growL1(to: Int(needed)) }
                try writeBackMetadata(&state)
            } else {
                headerFields.setBigEndian(UInt32(oldL1.count), at: 12)
                headerFields.setBigEndian(state.l1TableOffset, at: 16)
                try switchSize(headerFields, to: byteCount, &state)
            }
        }
    }

    /// What resizes left to say that did not fail them (a shrink whose file tail stayed), once.
    public func takeWarnings() -> [String] {
        resizeWarnings.withLock { warnings in
            defer { warnings = [] }
            return warnings
        }
    }
}
