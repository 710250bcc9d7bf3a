// Qcow2BitmapUpdate: adding, removing, clearing, enabling, disabling and merging persistent
// dirty bitmaps (qemu-img bitmap), each switched in by one write inside one sector:
//
//   0. what this open holds in memory is written back (Qcow2Writer.swift's order);
//   1. new clusters past the end receive the new tables (a new bitmap's, a cleared one's, a
//      merged one's with copies of the data clusters whose bits change) and the new directory;
//      the writer's metadata write-back makes them and their refcounts durable (fdatasync);
//   2. the switch: the bitmaps extension's 24 bytes (count, directory size and offset), which
//      lie inside one sector (refused before step 1 otherwise); fdatasync. An image without the
//      extension gets it appended after the last extension while autoclear bit 0 is clear (QEMU
//      and blk then ignore it), and the switch is setting the bit, 8 bytes at byte 88. A backing
//      file name in the way (QEMU and blk put it right after the extensions) is moved first:
//      copied clear of the extension's bytes, fdatasync, then its offset switched (bytes 8–15,
//      sector 0), fdatasync — the same name either way (Qcow2HeaderUpdate.swift). Removing
//      the last bitmap turns the extension into the end of the list (4 bytes) when it is the
//      last one, or else clears autoclear bit 0 (QEMU drops the ignored extension when it next
//      writes the image);
//   3. the old directory, tables and the data clusters nothing names any more lose their
//      reference (Qcow2Writer's step 4).
//
// A crash before 2 leaves the old bitmaps and leaked clusters, after 2 the new ones, at worst
// with leaks: never a half-changed bitmap, as changing bits or flags in place could leave.
import BlockGraph

extension Qcow2Driver {
    /// qemu-img bitmap's operations, in the order above.
    public func changeBitmap(_ name: String, _ change: BitmapChange) throws(BlockError) {
        try refuseWritesIfCorrupt()
        let nameBytes = Array(name.utf8)
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state)
            try writeBackMetadata(&state)
            let live = try bitmapState()
            var bitmaps = live.bitmaps
            let index = bitmaps.firstIndex { $0.nameBytes == nameBytes }
            var released: [UInt64] = []
            var tables: [(offset: UInt64, bytes: [UInt8])] = []
            func existing() throws(BlockError) -> Int {
                guard let index else { throw BlockError(.notFound, "Dirty bitmap '\(name)' not found") }
                return index
            }
            func consistent() throws(BlockError) -> Int {
                let index = try existing()
                guard !bitmaps[index].isInUse else {
                    throw BlockError(.corrupt, "Bitmap '\(name)' is inconsistent and cannot be used")
                }
                return index
            }
            switch change {
            case .add(let granularity):
                guard index == nil else { throw BlockError(.invalidRequest, "Bitmap already exists: \(name)") }
                let bitmap = try newBitmap(nameBytes, granularity: granularity, count: bitmaps.count, &state)
                tables.append((bitmap.tableOffset, [UInt8](repeating: 0, count: Int(bitmap.tableSize) * 8)))
                bitmaps.append(bitmap)
            case .remove:
                let index = try existing()
                released = try clusters(ofTableAndData: bitmaps[index])
                bitmaps.remove(at: index)
            case .clear:
                let index = try consistent()
                released = try clusters(ofTableAndData: bitmaps[index])
                let table = try allocateClusters(tableClusters(bitmaps[index].tableSize), &state)
                tables.append((table, [UInt8](repeating: 0, count: Int(bitmaps[index].tableSize) * 8)))
                bitmaps[index].tableOffset = table
            case .enable:
                let index = try consistent()
                bitmaps[index].flags |= Qcow2Bitmap.autoFlag
            case .disable:
                let index = try consistent()
                bitmaps[index].flags &= ~Qcow2Bitmap.autoFlag
            case .merge(let ranges):
                let index = try consistent()
                let (table, bytes, replaced) = try merged(bitmaps[index], ranges, &state)
                tables.append((table, bytes))
                released = replaced
                bitmaps[index].tableOffset = table
            }
            try switchBitmaps(to: bitmaps, writing: tables, releasing: released, from: live.location, &state)
        }
    }

    /// The dirty ranges of bitmap `name`, granule by granule, merged where they touch.
    public func dirtyRanges(ofBitmap name: String) throws(BlockError) -> [Range<Int64>] {
        let bitmap = try writer.withLock { (_) throws(BlockError) -> Qcow2Bitmap in
            guard let found = try bitmapState().bitmaps.first(where: { $0.nameBytes == Array(name.utf8) }) else {
                throw BlockError(.notFound, "Dirty bitmap '\(name)' not found")
            }
            return found
        }
        guard !bitmap.isInUse else { throw BlockError(.corrupt, "Bitmap '\(name)' is inconsistent and cannot be used") }
        let size = try length()
        let perCluster = Int64(clusterSize) * 8 * bitmap.granularity
        var ranges: [Range<Int64>] = []
        func add(_ range: Range<Int64>) {
            guard range.lowerBound < size else { return }
            let clipped = range.lowerBound..<min(range.upperBound, size)
            if let last = ranges.last, last.upperBound == clipped.lowerBound {
                ranges[ranges.count - 1] = last.lowerBound..<clipped.upperBound
            } else {
                ranges.append(clipped)
            }
        }
        try Qcow2BitmapTable.forEachEntry(of: bitmap, in: file, clusterSize: clusterSize,
                                          fileLength: UInt64(try fileDriver.length())) { (index, entry) throws(BlockError) in
            let start = Int64(index) * perCluster
            if entry == Qcow2BitmapTable.allOnes {
                add(start..<start + perCluster)
                return
            }
            let host = entry & Qcow2BitmapTable.offsetMask
            guard host != 0 else { return }
            let bytes = try Self.readBytes(file, at: host, count: clusterSize)
            for (byteIndex, byte) in bytes.enumerated() where byte != 0 {
                for bit in 0..<8 where byte & (1 << UInt8(bit)) != 0 {
                    let granule = start + Int64(byteIndex * 8 + bit) * bitmap.granularity
                    add(granule..<granule + bitmap.granularity)
                }
            }
        }
        return ranges
    }

    func tableClusters(_ tableSize: UInt32) -> UInt64 {
        (UInt64(tableSize) * 8 + UInt64(clusterSize) - 1) / UInt64(clusterSize)
    }

    /// A new bitmap's entry, its (empty) table allocated: QEMU's checks of a name, a
    /// granularity (default: the cluster size, at least 4 KiB) and the directory's limits.
    private func newBitmap(_ name: [UInt8], granularity: Int64?, count: Int, _ state: inout Qcow2WriterState) throws(BlockError) -> Qcow2Bitmap {
        guard header.version >= 3 else {
            throw BlockError(.unsupported, "Cannot store persistent bitmaps in qcow2 v2 files")
        }
        guard !name.isEmpty, name.count <= Qcow2Bitmap.maxNameBytes else {
            throw BlockError(.invalidRequest, "Name length exceeds maximum (\(Qcow2Bitmap.maxNameBytes) bytes)")
        }
        guard count < Qcow2Bitmap.maxCount else {
            throw BlockError(.noSpace, "Image has the maximum of \(Qcow2Bitmap.maxCount) bitmaps")
        }
        let chosen = granularity ?? Int64(max(4096, clusterSize))
        guard chosen > 0, chosen & (chosen - 1) == 0, chosen >= 512 else {
            throw BlockError(.invalidRequest, "Granularity must be power of 2, and at least 512")
        }
        guard chosen <= Int64(1) << 31 else {
            throw BlockError(.invalidRequest, "Granularity exceeds maximum (2147483648 bytes)")
        }
        let bits = UInt8(chosen.trailingZeroBitCount)
        let tableSize = Qcow2Bitmap.tableSize(virtualSize: UInt64(try length()), granularityBits: bits, clusterSize: clusterSize)
        guard tableSize <= UInt64(Qcow2Bitmap.maxTableSize), tableSize * UInt64(clusterSize) <= Qcow2Bitmap.maxDataBytes else {
            throw BlockError(.invalidRequest, "Too large a bitmap for the image: use a larger granularity")
        }
        let table = try allocateClusters(tableClusters(UInt32(max(tableSize, 1))), &state)
        return Qcow2Bitmap(nameBytes: name, tableOffset: table, tableSize: UInt32(max(tableSize, 1)), flags: Qcow2Bitmap.autoFlag,
                           granularityBits: bits)
    }

    /// The clusters of a bitmap's table and data, by cluster number, to release.
    private func clusters(ofTableAndData bitmap: Qcow2Bitmap) throws(BlockError) -> [UInt64] {
        let first = bitmap.tableOffset / UInt64(clusterSize)
        var clusters = Array(first..<first + tableClusters(bitmap.tableSize))
        try Qcow2BitmapTable.forEachEntry(of: bitmap, in: file, clusterSize: clusterSize,
                                          fileLength: UInt64(try fileDriver.length())) { (_, entry) throws(BlockError) in
            let host = entry & Qcow2BitmapTable.offsetMask
            if host != 0 { clusters.append(host / UInt64(clusterSize)) }
        }
        return clusters
    }

    /// A copy of `bitmap`'s table with `ranges` marked: data clusters whose bits change are
    /// copied to new clusters, the others stay where they are, named by the new table. Returns
    /// the new table's offset and bytes, and what the old table alone named (to release).
    private func merged(_ bitmap: Qcow2Bitmap, _ ranges: [Range<Int64>], _ state: inout Qcow2WriterState)
        throws(BlockError) -> (UInt64, [UInt8], [UInt64]) {
        let fileLength = UInt64(try fileDriver.length())
        var table = try Qcow2BitmapTable.read(bitmap, in: file, clusterSize: clusterSize, fileLength: fileLength)
        let first = bitmap.tableOffset / UInt64(clusterSize)
        var released = Array(first..<first + tableClusters(bitmap.tableSize))
        var changed: [Int: [UInt8]] = [:]
        let perCluster = UInt64(clusterSize) * 8
        let size = UInt64(try length())
        for range in ranges {
            let lower = UInt64(max(0, range.lowerBound)), upper = min(UInt64(max(0, range.upperBound)), size)
            guard lower < upper else { continue }
            let clipped = lower..<upper
            let granules = Qcow2BitmapState.granules(clipped, bits: bitmap.granularityBits)
            for index in Int(granules.lowerBound / perCluster)...Int((granules.upperBound - 1) / perCluster) where index < table.count {
                guard table[index] != Qcow2BitmapTable.allOnes,
                      let bits = Qcow2BitmapTable.bits(of: granules, inTableEntry: index, clusterSize: clusterSize) else { continue }
                let host = table[index] & Qcow2BitmapTable.offsetMask
                var bytes = changed[index] ?? [UInt8](repeating: 0, count: clusterSize)
                if changed[index] == nil && host != 0 { bytes = try Self.readBytes(file, at: host, count: clusterSize) }
                if Qcow2BitmapTable.set(bits, in: &bytes) != nil { changed[index] = bytes }
            }
        }
        for (index, bytes) in changed.sorted(by: { $0.key < $1.key }) {
            let host = table[index] & Qcow2BitmapTable.offsetMask
            if host != 0 { released.append(host / UInt64(clusterSize)) }
            let copy = try allocateClusters(1, &state)
            try writeBytes(bytes, at: copy)
            table[index] = copy
        }
        let newTable = try allocateClusters(tableClusters(bitmap.tableSize), &state)
        var tableBytes = [UInt8](repeating: 0, count: Int(bitmap.tableSize) * 8)
        for (index, entry) in table.enumerated() { tableBytes.setBigEndian(entry, at: index * 8) }
        return (newTable, tableBytes, released)
    }

    /// Steps 1–3 of the order at the top of this file.
    func switchBitmaps(to bitmaps: [Qcow2Bitmap], writing tables: [(offset: UInt64, bytes: [UInt8])], releasing: [UInt64],
                               from old: Qcow2Header.BitmapDirectory?, _ state: inout Qcow2WriterState) throws(BlockError) {
        let headerBytes = Int(min(Int64(clusterSize), try fileDriver.length()))
        var headerArea = try Qcow2HeaderUpdate(cluster: try Self.readBytes(file, at: 0, count: headerBytes))
        let existing = headerArea.extensions.first { $0.type == Qcow2Header.bitmapsExtension }
        if existing == nil && !bitmaps.isEmpty {
            // A backing file name right after the extensions, where QEMU and blk put it, moves
            // out of the new extension's way first.
            let moves = try headerArea.movingName(clearOf: headerArea.endMarker..<headerArea.metadataEnd + 32)
            if !moves.isEmpty {
                try file.during(.headerUpdate) { () throws(BlockError) in try apply(moves) }
                headerArea = try Qcow2HeaderUpdate(cluster: try Self.readBytes(file, at: 0, count: headerBytes))
            }
        }
        // Other autoclear bits (a raw external data file's) stay as they are.
        let autoclearOnDisk = headerArea.cluster.bigEndian(UInt64.self, at: 88)
        let bitOnDisk = autoclearOnDisk & Qcow2Bitmap.autoclearBit != 0
        let sector = Qcow2HeaderUpdate.sectorBytes
        if let existing, !bitmaps.isEmpty {
            guard (existing.start + 8) / sector == (existing.start + 31) / sector, existing.data.count == 24 else {
                throw BlockError(.unsupported, "qcow2: the bitmaps extension straddles a sector, so it cannot be switched crash-safely")
            }
        } else if existing == nil && !bitmaps.isEmpty {
            guard headerArea.metadataEnd + 32 <= headerBytes,
                  !(headerArea.liveName?.overlaps(headerArea.endMarker..<headerArea.metadataEnd + 32) ?? false) else {
                throw BlockError(.noSpace, "No space left in the file header for the bitmaps extension")
            }
        }
        var location = Qcow2Header.BitmapDirectory(count: UInt32(bitmaps.count), byteCount: 0, offset: 0)
        try file.during(.bitmapUpdate) { () throws(BlockError) in
            for table in tables { try writeBytes(table.bytes, at: table.offset) }
            if !bitmaps.isEmpty {
                let directory = Qcow2BitmapDirectory.encode(bitmaps)
                location.byteCount = UInt64(directory.count)
                location.offset = try allocateClusters((UInt64(directory.count) + UInt64(clusterSize) - 1) / UInt64(clusterSize), &state)
                try writeBytes(directory, at: location.offset)
            }
            try writeBackMetadata(&state)
            try file.driver.flush()
            var fields = [UInt8](repeating: 0, count: 24)
            fields.setBigEndian(location.count, at: 0)
            fields.setBigEndian(location.byteCount, at: 8)
            fields.setBigEndian(location.offset, at: 16)
            switch (existing, bitmaps.isEmpty) {
            case (let existing?, false):
                // The extension is live (the switch), or ignored until the bit says otherwise.
                try writeBytes(fields, at: UInt64(existing.start + 8))
                if !bitOnDisk {
                    try file.driver.flush()
                    try writeBigEndian(autoclearOnDisk | Qcow2Bitmap.autoclearBit, at: 88)
                }
            case (nil, false):
                if bitOnDisk {
                    try writeBigEndian(autoclearOnDisk & ~Qcow2Bitmap.autoclearBit, at: 88)
                    try file.driver.flush()
                }
                let end = headerArea.endMarker
                if headerArea.cluster[end + 8..<end + 40].contains(where: { $0 != 0 }) {
                    try writeBytes([UInt8](repeating: 0, count: 32), at: UInt64(end + 8))
                    try file.driver.flush()
                }
                var appended = [UInt8](repeating: 0, count: 32)
                appended.setBigEndian(Qcow2Header.bitmapsExtension, at: 0)
                appended.setBigEndian(UInt32(24), at: 4)
                appended.replaceSubrange(8..<32, with: fields)
                try writeBytes(appended, at: UInt64(end))
                try file.driver.flush()
                try writeBigEndian(autoclearOnDisk | Qcow2Bitmap.autoclearBit, at: 88)
            case (let existing?, true) where existing.start + existing.storedBytes == headerArea.endMarker:
                try writeBigEndian(UInt32(0), at: UInt64(existing.start))
            case (_, true):
                try writeBigEndian(autoclearOnDisk & ~Qcow2Bitmap.autoclearBit, at: 88)
            }
            try file.driver.flush()
            state.pendingReleases += releasing
            if let old {
                let first = old.offset / UInt64(clusterSize)
                state.pendingReleases += Array(first..<first + (old.byteCount + UInt64(clusterSize) - 1) / UInt64(clusterSize))
            }
            try writeBackMetadata(&state)
        }
        let reloaded = try loadBitmapState(bitmaps.isEmpty ? nil : location)
        self.bitmaps.withLock { $0 = reloaded }
    }
}
