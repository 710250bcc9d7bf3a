// L2TableCache: the active L1 table, and recently used L2 tables, decoded, bounded by a byte
// budget so memory stays flat however large the image (QEMU's l2-cache-size). Both live behind
// one lock, so a lookup costs one lock, not two. The least recently used goes first — but never
// a dirty table (changed in memory, not yet on disk): the writer writes those back, in order,
// before they may go (Qcow2Writer.swift).
//
// A hit is one hash lookup — none at all when it is the table the last lookup used, which is
// what sequential and nearby requests hit — and a counter; the entry is read in place, the
// table is not copied. The search for the oldest table happens only when one must go.

struct L2TableCache {
    /// One cached table; a class so a hit updates its age and reads its entry in place.
    final class Table {
        var entries: [UInt64]
        var lastUse: UInt64

        init(_ entries: [UInt64], lastUse: UInt64) {
            self.entries = entries
            self.lastUse = lastUse
        }
    }

    /// The active L1 table; the writer changes entries when it allocates L2 tables.
    var l1: [UInt64]
    private var tables: [UInt64: Table] = [:]
    private var lastOffset: UInt64 = 0
    private var lastTable: Table?
    private var clock: UInt64 = 0
    private(set) var dirty: Set<UInt64> = []
    /// Counts the writer's changes to tables. A reader that read a table from disk inserts it
    /// only if nothing changed meanwhile: else its copy may predate a change the writer made
    /// (and maybe wrote back and evicted) while the read was under way.
    private(set) var generation: UInt64 = 0
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
        // Through the stored reference, not a returned one: every read would otherwise retain
        // and release the table, an atomic on a line all reader threads share.
        guard touchCached(l2Offset) else { return (l2Offset, nil) }
        return (l2Offset, lastTable.unsafelyUnwrapped.entries[entryIndex])
    }

    /// Makes the table at `offset` the last used (and counts the use) if it is cached.
    private mutating func touchCached(_ offset: UInt64) -> Bool {
        if offset != lastOffset || lastTable == nil {
            guard let found = tables[offset] else { return false }
            lastOffset = offset
            lastTable = found
        }
        if lastTable.unsafelyUnwrapped.lastUse != clock {
            clock += 1
            lastTable.unsafelyUnwrapped.lastUse = clock
        }
        return true
    }

    private mutating func cached(_ offset: UInt64) -> Table? {
        touchCached(offset) ? lastTable : nil
    }

    mutating func table(at offset: UInt64) -> [UInt64]? { cached(offset)?.entries }

    /// A table read from disk while `generation` was `readAt`: the cached one if there is one
    /// (it may be newer), this one if nothing changed since, nil if the read must be redone.
    mutating func insertRead(_ entries: [UInt64], at offset: UInt64, readAt: UInt64) -> [UInt64]? {
        if let cached = table(at: offset) { return cached }
        guard generation == readAt else { return nil }
        insert(entries, at: offset)
        return entries
    }

    private mutating func insert(_ entries: [UInt64], at offset: UInt64) {
        clock += 1
        if let existing = tables[offset] {
            existing.entries = entries
            existing.lastUse = clock
        } else {
            tables[offset] = Table(entries, lastUse: clock)
        }
        evictCleanTables()
    }

    /// Stores a table the writer changed; it stays until `markClean`.
    mutating func insertDirty(_ entries: [UInt64], at offset: UInt64) {
        generation += 1
        dirty.insert(offset)
        insert(entries, at: offset)
    }

    /// Changes one entry of a cached table in place (no copy of the table) and marks it dirty;
    /// false when the table is not cached.
    mutating func setEntry(_ value: UInt64, at index: Int, ofTableAt offset: UInt64) -> Bool {
        guard let table = tables[offset] else { return false }
        generation += 1
        table.entries[index] = value
        dirty.insert(offset)
        return true
    }

    private func oldestCleanTable() -> UInt64? {
        var oldest: (offset: UInt64, lastUse: UInt64)?
        for (offset, table) in tables where !dirty.contains(offset) && table.lastUse < (oldest?.lastUse ?? .max) {
            oldest = (offset, table.lastUse)
        }
        return oldest?.offset
    }

    mutating func markClean(_ offset: UInt64) {
        generation += 1
        dirty.remove(offset)
        evictCleanTables()
    }

    private mutating func evictCleanTables() {
        while tables.count > capacity, let victim = oldestCleanTable() {
            tables[victim] = nil
            if victim == lastOffset {
                lastOffset = 0
                lastTable = nil
            }
        }
    }
}
