// L2TableCache: the active L1 table, and recently used L2 tables, decoded, bounded by a byte
// budget so memory stays flat however large the image (QEMU's l2-cache-size). Both live behind
// one lock, so a lookup costs one lock, not two. The least recently used goes first — but never
// a dirty table (changed in memory, not yet on disk): the writer writes those back, in order,
// before they may go (Qcow2Writer.swift). A hit costs a dictionary lookup and a counter; the
// search for the oldest table happens only when one must go.

struct L2TableCache {
    /// The active L1 table; the writer changes entries when it allocates L2 tables.
    var l1: [UInt64]
    private var tables: [UInt64: (entries: [UInt64], lastUse: UInt64)] = [:]
    private var clock: UInt64 = 0
    private(set) var dirty: Set<UInt64> = []
    let capacity: Int

    /// `budgetBytes` of tables of `clusterSize` bytes each; at least four.
    init(l1: [UInt64], budgetBytes: Int, clusterSize: Int) {
        self.l1 = l1
        capacity = max(4, budgetBytes / clusterSize)
    }

    /// The L2 table offset for L1 index `index` (0: no table), and the entry at `entryIndex` if
    /// that table is cached.
    mutating func lookup(l1Index index: Int, entryIndex: Int) -> (l2Offset: UInt64, entry: UInt64?) {
        let l2Offset = (l1.indices.contains(index) ? l1[index] : 0) & 0x00ff_ffff_ffff_fe00
        guard l2Offset != 0 else { return (0, nil) }
        return (l2Offset, table(at: l2Offset)?[entryIndex])
    }

    mutating func table(at offset: UInt64) -> [UInt64]? {
        guard let entries = tables[offset]?.entries else { return nil }
        clock += 1
        tables[offset]?.lastUse = clock
        return entries
    }

    mutating func insert(_ table: [UInt64], at offset: UInt64) {
        clock += 1
        tables[offset] = (table, clock)
        evictCleanTables()
    }

    /// Stores a table the writer changed; it stays until `markClean`.
    mutating func insertDirty(_ table: [UInt64], at offset: UInt64) {
        dirty.insert(offset)
        insert(table, at: offset)
    }

    /// Changes one entry of a cached table in place (no copy of the table) and marks it dirty;
    /// false when the table is not cached.
    mutating func setEntry(_ value: UInt64, at index: Int, ofTableAt offset: UInt64) -> Bool {
        guard tables[offset] != nil else { return false }
        tables[offset]?.entries[index] = value
        dirty.insert(offset)
        return true
    }

    mutating func markClean(_ offset: UInt64) {
        dirty.remove(offset)
        evictCleanTables()
    }

    private mutating func evictCleanTables() {
        while tables.count > capacity,
              let victim = tables.filter({ !dirty.contains($0.key) }).min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            tables[victim] = nil
        }
    }
}
