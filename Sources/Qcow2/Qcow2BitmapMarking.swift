// Qcow2BitmapMarking: every enabled, consistent bitmap marks each write before the write's data
// reaches the file — write-ahead of a granule's first touch — so a crash never leaves a changed
// granule unmarked, and the bitmaps need not be marked in-use while blk has the image open:
//
//   1. a write whose granules are all marked on disk (the in-memory copy holds only what is
//      durable) goes straight on: one look under a lock, no I/O;
//   2. otherwise, under the writer lock: data clusters of the bitmap that exist get the bytes
//      holding the new bits written in place (bits only go from 0 to 1, so a write torn at a
//      sector boundary leaves each sector old or new, both correct); a granule whose table entry
//      names no cluster gets a new cluster with its bits, then the writer's metadata write-back
//      makes it and its refcount durable (fdatasync), then the table entry — 8 bytes, inside one
//      sector — names it;
//   3. fdatasync; only then does the in-memory copy say the granules are marked, and the write
//      proceeds. A concurrent write to the same granules waits on the writer lock, then finds
//      them marked.
//
// A crash leaves the bitmap marking a superset of what changed: the data write may not have
// happened. Bitmaps QEMU left in use, and disabled ones, are not touched.
import BlockGraph
import Synchronization

/// The bitmaps as this open sees them: where the directory is, its entries, and the tables and
/// data clusters of the bitmaps it marks.
struct Qcow2BitmapState: Sendable {
    /// The bitmaps extension as on disk; nil when the image has no live bitmaps.
    var location: Qcow2Header.BitmapDirectory?
    var bitmaps: [Qcow2Bitmap] = []
    var tracked: [Tracked] = []

    /// An enabled, consistent bitmap: its table, and the data clusters read so far, by table index.
    struct Tracked: Sendable {
        var name: [UInt8]
        var granularityBits: UInt8
        var tableOffset: UInt64
        var table: [UInt64]
        var clusters: [Int: [UInt8]] = [:]
    }

    /// The granules a request covers, in one bitmap.
    static func granules(_ range: Range<UInt64>, bits: UInt8) -> Range<UInt64> {
        (range.lowerBound >> bits)..<((range.upperBound - 1) >> bits) + 1
    }

    /// Whether every tracked bitmap has `range` marked on disk already.
    func marks(_ range: Range<UInt64>, clusterSize: Int) -> Bool {
        let perCluster = UInt64(clusterSize) * 8
        for bitmap in tracked {
            let granules = Self.granules(range, bits: bitmap.granularityBits)
            for index in Int(granules.lowerBound / perCluster)...Int((granules.upperBound - 1) / perCluster) {
                guard index < bitmap.table.count else { return false }
                if bitmap.table[index] == Qcow2BitmapTable.allOnes { continue }
                guard let bytes = bitmap.clusters[index],
                      let bits = Qcow2BitmapTable.bits(of: granules, inTableEntry: index, clusterSize: clusterSize),
                      Qcow2BitmapTable.allSet(bits, in: bytes) else { return false }
            }
        }
        return true
    }
}

extension Qcow2Driver {
    /// The bitmaps as the image has them, read and checked on first use (the header as opened
    /// says where). Under the writer lock.
    func bitmapState() throws(BlockError) -> Qcow2BitmapState {
        if let loaded = bitmaps.withLock({ $0 }) { return loaded }
        let vouched = header.autoclearFeatures & Qcow2Bitmap.autoclearBit != 0
        let loaded = try loadBitmapState(vouched ? header.bitmapDirectory : nil)
        bitmaps.withLock { $0 = loaded }
        return loaded
    }

    /// The bitmaps `location` points at, checked, with the tables of those this open marks.
    func loadBitmapState(_ location: Qcow2Header.BitmapDirectory?) throws(BlockError) -> Qcow2BitmapState {
        var loaded = Qcow2BitmapState()
        guard let location else { return loaded }
        let fileLength = UInt64(try fileDriver.length())
        let list = try Qcow2BitmapDirectory.read(location, from: file, clusterSize: clusterSize,
                                                 virtualSize: UInt64(try length()), fileLength: fileLength)
        loaded.location = location
        loaded.bitmaps = list
        for bitmap in list where bitmap.isEnabled && !bitmap.isInUse {
            let table = try Qcow2BitmapTable.read(bitmap, in: file, clusterSize: clusterSize, fileLength: fileLength)
            loaded.tracked.append(.init(name: bitmap.nameBytes, granularityBits: bitmap.granularityBits,
                                        tableOffset: bitmap.tableOffset, table: table))
        }
        return loaded
    }

    /// Calls `body` with every range of the file the bitmaps own: the directory, each table and
    /// each data cluster (for the check's reference counts).
    func forEachBitmapCluster(_ body: (_ offset: UInt64, _ bytes: UInt64) throws(BlockError) -> Void) throws(BlockError) {
        let live = try bitmapState()
        guard let location = live.location else { return }
        try body(location.offset, location.byteCount)
        for bitmap in live.bitmaps {
            try body(bitmap.tableOffset, UInt64(bitmap.tableSize) * 8)
            try Qcow2BitmapTable.forEachEntry(of: bitmap, in: file, clusterSize: clusterSize,
                                              fileLength: UInt64(try fileDriver.length())) { (_, entry) throws(BlockError) in
                let host = entry & Qcow2BitmapTable.offsetMask
                if host != 0 { try body(host, UInt64(clusterSize)) }
            }
        }
    }

    /// Marks `byteCount` bytes at `byteOffset` in every enabled bitmap, durably, before the
    /// caller writes them (the order at the top of this file).
    func markBitmaps(at byteOffset: Int64, byteCount: Int64) throws(BlockError) {
        guard byteCount > 0, byteOffset >= 0 else { return }
        let range = UInt64(byteOffset)..<UInt64(byteOffset) + UInt64(byteCount)
        if bitmaps.withLock({ $0?.marks(range, clusterSize: clusterSize) ?? false }) { return }
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state)
            try markDurably(range, &state)
        }
    }

    private func markDurably(_ range: Range<UInt64>, _ state: inout Qcow2WriterState) throws(BlockError) {
        var live = try bitmapState()
        let perCluster = UInt64(clusterSize) * 8
        var newClusters: [(tracked: Int, index: Int, bytes: [UInt8])] = []
        var inPlace: [(offset: UInt64, bytes: ArraySlice<UInt8>)] = []
        for (number, bitmap) in live.tracked.enumerated() {
            let granules = Qcow2BitmapState.granules(range, bits: bitmap.granularityBits)
            for index in Int(granules.lowerBound / perCluster)...Int((granules.upperBound - 1) / perCluster) {
                guard index < bitmap.table.count else {
                    throw BlockError(.invalidRequest, "qcow2: a write past the end of bitmap '\(String(decoding: bitmap.name, as: UTF8.self))'")
                }
                let entry = bitmap.table[index]
                guard entry != Qcow2BitmapTable.allOnes,
                      let bits = Qcow2BitmapTable.bits(of: granules, inTableEntry: index, clusterSize: clusterSize) else { continue }
                let hostOffset = entry & Qcow2BitmapTable.offsetMask
                if hostOffset == 0 {
                    var bytes = [UInt8](repeating: 0, count: clusterSize)
                    _ = Qcow2BitmapTable.set(bits, in: &bytes)
                    newClusters.append((number, index, bytes))
                    continue
                }
                var bytes: [UInt8]
                if let cached = bitmap.clusters[index] {
                    bytes = cached
                } else {
                    bytes = try Self.readBytes(file, at: hostOffset, count: clusterSize)
                }
                if let changed = Qcow2BitmapTable.set(bits, in: &bytes) {
                    inPlace.append((hostOffset + UInt64(changed.lowerBound), bytes[changed]))
                }
                live.tracked[number].clusters[index] = bytes
            }
        }
        if !newClusters.isEmpty || !inPlace.isEmpty {
            try file.during(.bitmapUpdate) { () throws(BlockError) in
                var placed: [UInt64] = []
                for new in newClusters {
                    let host = try allocateClusters(1, &state)
                    try writeBytes(new.bytes, at: host)
                    placed.append(host)
                }
                for change in inPlace { try writeBytes(Array(change.bytes), at: change.offset) }
                if !newClusters.isEmpty {
                    try writeBackMetadata(&state)
                    for (new, host) in zip(newClusters, placed) {
                        let tableOffset = live.tracked[new.tracked].tableOffset
                        try writeBigEndian(host, at: tableOffset + UInt64(new.index) * 8)
                        live.tracked[new.tracked].table[new.index] = host
                        live.tracked[new.tracked].clusters[new.index] = new.bytes
                    }
                }
                try file.driver.flush()
            }
        }
        bitmaps.withLock { $0 = live }
    }
}
