// Qcow2BitmapResize: the size switch of an image that has persistent dirty bitmaps (step 2 of
// Qcow2Resize.swift's order, step 1 of Qcow2Shrink.swift's). A consistent bitmap's table must have
// exactly the entries the image's size needs — QEMU's load_bitmap_data refuses any other count,
// and QEMU then cannot open the image — so where a table must change, the size and the tables
// change together:
//
//   1. each consistent bitmap whose table needs another number of entries gets a new table past
//      the end of the file. Growing: its entries, then zeroes (the new granules start clean, as
//      QEMU leaves them). Shrinking: its first entries, the last one naming a copy of its data
//      cluster with the marks of granules past the new end cleared, as QEMU clears them (a
//      table that keeps its size is copied too when that cluster changes). A new directory
//      names the new tables; the writer's write-back makes them and their refcounts durable
//      (fdatasync);
//   2. the switch. Where the bitmaps extension lies in sector 0 beside the size, as blk writes
//      the header, one write from byte 24 to the extension's end carries the size, the L1
//      fields and the directory; fdatasync. Where it lies past sector 0 (after QEMU's feature
//      name table: the extension's fields at bytes 512–535), no one write carries both, and no
//      state between them is one QEMU would load with those bitmaps consistent, so QEMU's own
//      way is taken: a directory marking the changing bitmaps in use, each with the table that
//      covers both sizes (the new one growing, the old one shrinking), is switched in
//      (Qcow2BitmapUpdate.swift's order), then the size (bytes 24–47), then the directory with
//      the new tables and without the mark. A crash inside that window leaves those bitmaps
//      inconsistent — what QEMU leaves after any crash — never wrong;
//   3. the old tables and directory, and the data clusters of granules past a new end, lose
//      their reference.
//
// Bitmaps whose tables already cover a larger size keep them (their granules past the old end
// are clear: bits are only set for writes inside the image, and a shrink clears the rest), and so
// do bitmaps QEMU left in use.
import BlockGraph

extension Qcow2Driver {
    /// Throws, before anything is written, when a consistent bitmap's table could not cover
    /// `newSize` bytes within QEMU's limits.
    func checkBitmapsCover(_ newSize: Int64) throws(BlockError) {
        for bitmap in try bitmapState().bitmaps where !bitmap.isInUse {
            let needed = Qcow2Bitmap.tableSize(virtualSize: UInt64(newSize), granularityBits: bitmap.granularityBits, clusterSize: clusterSize)
            guard needed <= UInt64(Qcow2Bitmap.maxTableSize), needed * UInt64(clusterSize) <= Qcow2Bitmap.maxDataBytes else {
                throw BlockError(.invalidRequest,
                                 "qcow2: bitmap '\(bitmap.name)' cannot cover \(newSize) bytes at its granularity of \(bitmap.granularity) bytes")
            }
        }
    }

    /// Switches the header to `fields` (bytes 24–47: size, L1 size, L1 offset) for an image of
    /// `newSize` bytes, growing or shrinking the bitmaps' tables with it in the order above.
    func switchSize(_ fields: [UInt8], to newSize: Int64, _ state: inout Qcow2WriterState) throws(BlockError) {
        let live = try bitmapState()
        var bitmaps = live.bitmaps
        // `covering` is each changing bitmap with whichever table covers both sizes: the one a
        // directory marking it in use names while the size switches.
        var covering = bitmaps
        var grown: [(offset: UInt64, bytes: [UInt8])] = [], shrunk: [(offset: UInt64, bytes: [UInt8])] = []
        var releasedGrowing: [UInt64] = [], releasedShrinking: [UInt64] = []
        var changing: [Int] = []
        let fileLength = UInt64(try fileDriver.length())
        let shrinking = newSize < (try length())
        for index in bitmaps.indices where !bitmaps[index].isInUse {
            let bitmap = bitmaps[index]
            let needed = UInt32(max(1, Qcow2Bitmap.tableSize(virtualSize: UInt64(newSize), granularityBits: bitmap.granularityBits,
                                                               clusterSize: clusterSize)))
            // Shrinking, even a table that keeps its size may have marks past the new end.
            guard needed != bitmap.tableSize || shrinking else { continue }
            var entries = try Qcow2BitmapTable.read(bitmap, in: file, clusterSize: clusterSize, fileLength: fileLength)
            var released: [UInt64] = []
            if needed < bitmap.tableSize {
                for entry in entries[Int(needed)...] where entry & Qcow2BitmapTable.offsetMask != 0 {
                    released.append((entry & Qcow2BitmapTable.offsetMask) / UInt64(clusterSize))
                }
                entries.removeSubrange(Int(needed)...)
            }
            if shrinking, let copy = try clearingPastEnd(entries[Int(needed) - 1], index: Int(needed) - 1, of: bitmap, size: newSize, &state) {
                let replaced = entries[Int(needed) - 1] & Qcow2BitmapTable.offsetMask
                if replaced != 0 { released.append(replaced / UInt64(clusterSize)) }
                entries[Int(needed) - 1] = copy
            } else if needed == bitmap.tableSize {
                continue
            }
            let first = bitmap.tableOffset / UInt64(clusterSize)
            released += Array(first..<first + tableClusters(bitmap.tableSize))
            var bytes = [UInt8](repeating: 0, count: Int(needed) * 8)
            for (entry, value) in entries.enumerated() { bytes.setBigEndian(value, at: entry * 8) }
            let table = try allocateClusters(tableClusters(needed), &state)
            bitmaps[index].tableOffset = table
            bitmaps[index].tableSize = needed
            if needed > bitmap.tableSize {
                grown.append((table, bytes))
                releasedGrowing += released
                covering[index] = bitmaps[index]
            } else {
                shrunk.append((table, bytes))
                releasedShrinking += released
            }
            changing.append(index)
        }
        guard let old = live.location, !changing.isEmpty else {
            try writeBytes(fields, at: 24)
            try file.driver.flush()
            virtualSize.store(newSize, ordering: .releasing)
            return
        }
        let headerBytes = Int(min(Int64(clusterSize), try fileDriver.length()))
        let headerArea = try Qcow2HeaderUpdate(cluster: try Self.readBytes(file, at: 0, count: headerBytes))
        guard let existing = headerArea.extensions.first(where: { $0.type == Qcow2Header.bitmapsExtension }),
              existing.data.count == 24 else {
            throw BlockError(.corrupt, "qcow2: the bitmaps extension changed under this open")
        }
        let fieldsEnd = existing.start + 32
        guard fieldsEnd > Qcow2HeaderUpdate.sectorBytes else {
            try switchSizeAndDirectory(fields, to: newSize, bitmaps: bitmaps, tables: grown + shrunk,
                                       releasing: releasedGrowing + releasedShrinking + clusters(of: old),
                                       header: Array(headerArea.cluster[24..<fieldsEnd]), extensionFields: existing.start + 8 - 24, &state)
            return
        }
        for index in changing { covering[index].flags |= Qcow2Bitmap.inUseFlag }
        try switchBitmaps(to: covering, writing: grown, releasing: releasedGrowing, from: old, &state)
        try writeBytes(fields, at: 24)
        try file.driver.flush()
        virtualSize.store(newSize, ordering: .releasing)
        let markedLocation = try bitmapState().location
        try switchBitmaps(to: bitmaps, writing: shrunk, releasing: releasedShrinking, from: markedLocation, &state)
    }

    /// The last data cluster a shrinking bitmap keeps, with the bits of granules past `size`
    /// cleared, as QEMU clears them: a new entry naming a copy (or none when nothing is left),
    /// or nil when no bit past the end is set. A copy, because until the size switches the old
    /// cluster still holds marks of granules inside the image.
    private func clearingPastEnd(_ entry: UInt64, index: Int, of bitmap: Qcow2Bitmap, size: Int64,
                                 _ state: inout Qcow2WriterState) throws(BlockError) -> UInt64? {
        let granules = (UInt64(size) + UInt64(bitmap.granularity) - 1) >> UInt64(bitmap.granularityBits)
        let perCluster = UInt64(clusterSize) * 8
        let firstGone = Int(granules - UInt64(index) * perCluster)
        guard firstGone < Int(perCluster) else { return nil }
        let host = entry & Qcow2BitmapTable.offsetMask
        var bytes: [UInt8]
        if host != 0 {
            bytes = try Self.readBytes(file, at: host, count: clusterSize)
        } else if entry & Qcow2BitmapTable.allOnes != 0 {
            bytes = [UInt8](repeating: 0xff, count: clusterSize)
        } else {
            return nil
        }
        guard Qcow2BitmapTable.clear(firstGone..<Int(perCluster), in: &bytes) else { return nil }
        guard bytes.contains(where: { $0 != 0 }) else { return 0 }
        let copy = try allocateClusters(1, &state)
        try writeBytes(bytes, at: copy)
        return copy
    }

    /// Steps 1–3 when the extension shares sector 0 with the size: `header` is bytes 24 to the
    /// extension's end as on disk, `extensionFields` where the extension's 24 bytes start in it.
    private func switchSizeAndDirectory(_ fields: [UInt8], to newSize: Int64, bitmaps: [Qcow2Bitmap],
                                        tables: [(offset: UInt64, bytes: [UInt8])], releasing: [UInt64],
                                        header: [UInt8], extensionFields: Int, _ state: inout Qcow2WriterState) throws(BlockError) {
        var location = Qcow2Header.BitmapDirectory(count: UInt32(bitmaps.count), byteCount: 0, offset: 0)
        try file.during(.bitmapUpdate) { () throws(BlockError) in
            for table in tables { try writeBytes(table.bytes, at: table.offset) }
            let directory = Qcow2BitmapDirectory.encode(bitmaps)
            location.byteCount = UInt64(directory.count)
            location.offset = try allocateClusters(clusterCount(ofBytes: UInt64(directory.count)), &state)
            try writeBytes(directory, at: location.offset)
            try writeBackMetadata(&state)
            try file.driver.flush()
            var switched = header
            switched.replaceSubrange(0..<24, with: fields)
            switched.setBigEndian(location.count, at: extensionFields)
            switched.setBigEndian(location.byteCount, at: extensionFields + 8)
            switched.setBigEndian(location.offset, at: extensionFields + 16)
            try writeBytes(switched, at: 24)
            try file.driver.flush()
            state.pendingReleases += releasing
            try writeBackMetadata(&state)
        }
        virtualSize.store(newSize, ordering: .releasing)
        let reloaded = try loadBitmapState(location)
        self.bitmaps.withLock { $0 = reloaded }
    }

    /// The clusters of the directory at `location`.
    private func clusters(of location: Qcow2Header.BitmapDirectory) -> [UInt64] {
        let first = location.offset / UInt64(clusterSize)
        return Array(first..<first + clusterCount(ofBytes: location.byteCount))
    }

    private func clusterCount(ofBytes bytes: UInt64) -> UInt64 { (bytes + UInt64(clusterSize) - 1) / UInt64(clusterSize) }
}
