// L2TableCache: the active L1 table, and recently used L2 tables, bounded by a byte budget so
// memory stays flat however large the image (QEMU's l2-cache-size). Both live behind one lock,
// so a lookup that needs the lock costs one, not two. The least recently used goes first — but
// never a dirty table (changed in memory, not yet on disk): the writer writes those back, in
// order, before they may go (Qcow2Writer.swift).
//
// Reads of cached tables do not take the lock at all: the cache keeps an L2ReadIndex current
// with every change it makes, and the tables' entries live in that index's buffers, changed in
// place. A lookup under the lock is for what the index cannot answer: a table not cached, or a
// change under way.
import Synchronization

struct L2TableCache {
    /// One cached table; a class so its age changes in place.
    final class Table {
        let entries: UnsafeMutablePointer<Atomic<UInt64>>
        var lastUse: UInt64
        /// Listed in `dirty`: a table changed entry by entry is added to the set once, not
        /// hashed again on every write.
        var isDirty = false

        init(_ entries: UnsafeMutablePointer<Atomic<UInt64>>, lastUse: UInt64) {
            self.entries = entries
            self.lastUse = lastUse
        }
    }

    /// The active L1 table; changed through `setL1Entry` and `growL1`, which keep the index current.
    private(set) var l1: [UInt64]
    /// For each L2 table offset, the L1 indices pointing at it: one, except in a corrupt image.
    /// (Indices without a table are not listed: the index is told so directly.)
    private var l1Indices: [UInt64: [Int]] = [:]
    private var tables: [UInt64: Table] = [:]
    private var clock: UInt64 = 0
    private(set) var dirty: Set<UInt64> = []
    /// Counts the writer's changes to tables. A reader that read a table from disk inserts it
    /// only if nothing changed meanwhile: else its copy may predate a change the writer made
    /// (and maybe wrote back and evicted) while the read was under way.
    private(set) var generation: UInt64 = 0
    let capacity: Int
    let readIndex: L2ReadIndex

    /// `budgetBytes` of tables of `clusterSize` bytes each; at least four.
    init(l1: [UInt64], budgetBytes: Int, clusterSize: Int) {
        self.l1 = l1
        capacity = max(4, budgetBytes / clusterSize)
        readIndex = L2ReadIndex(l1Count: l1.count, entryCount: clusterSize / 8)
        readIndex.change {
            for index in l1.indices {
                let offset = Self.tableOffset(l1[index])
                if offset != 0 { l1Indices[offset, default: []].append(index) }
                publish(index)
            }
        }
    }

    private static func tableOffset(_ l1Entry: UInt64) -> UInt64 { l1Entry & Qcow2Driver.offsetMask }

    /// The L1 entry at `index` (0 past the table's end), the entry at `entryIndex` of its L2
    /// table if that table is cached, and the generation they were seen at (for reading the
    /// table if not): all a lookup needs, in one hold of the lock.
    mutating func lookup(l1Index index: Int, entryIndex: Int) -> (l1Entry: UInt64, entry: UInt64?, generation: UInt64) {
        let l1Entry = l1.indices.contains(index) ? l1[index] : 0
        let l2Offset = Self.tableOffset(l1Entry)
        guard l2Offset != 0 else { return (l1Entry, nil, generation) }
        return (l1Entry, entry(entryIndex, ofTableAt: l2Offset), generation)
    }

    /// Entry `index` of the table at `offset`, if it is cached.
    mutating func entry(_ index: Int, ofTableAt offset: UInt64) -> UInt64? {
        guard let table = touch(offset) else { return nil }
        return table.entries[index].load(ordering: .relaxed)
    }

    /// A copy of the table at `offset`, if it is cached.
    mutating func table(at offset: UInt64) -> [UInt64]? {
        guard let table = touch(offset) else { return nil }
        return (0..<readIndex.entryCount).map { table.entries[$0].load(ordering: .relaxed) }
    }

    /// The table at `offset`, made the most recently used.
    private mutating func touch(_ offset: UInt64) -> Table? {
        guard let table = tables[offset] else { return nil }
        if table.lastUse != clock {
            clock += 1
            table.lastUse = clock
        }
        return table
    }

    /// A table read from disk while `generation` was `readAt`: the cached one if there is one
    /// (it may be newer), this one, stored, if nothing changed since, nil if the writer changed
    /// tables meanwhile (the caller looks again: the table may have moved, its clusters reused).
    /// The caller uses what it gets even when the table is evicted at once — when every other
    /// table is dirty, the one just read is the only one that may go.
    mutating func insertRead(_ entries: [UInt64], at offset: UInt64, readAt: UInt64) -> [UInt64]? {
        if let cached = table(at: offset) { return cached }
        guard generation == readAt else { return nil }
        insert(entries, at: offset)
        return entries
    }

    /// Stores a table the writer changed; it stays until `markClean`.
    mutating func insertDirty(_ entries: [UInt64], at offset: UInt64) {
        generation += 1
        dirty.insert(offset)
        insert(entries, at: offset)
        tables[offset].unsafelyUnwrapped.isDirty = true
    }

    /// Changes one entry of a cached table in place and marks it dirty; false when the table
    /// is not cached.
    mutating func setEntry(_ value: UInt64, at index: Int, ofTableAt offset: UInt64) -> Bool {
        guard let table = tables[offset] else { return false }
        generation += 1
        readIndex.change { table.entries[index].store(value, ordering: .relaxed) }
        if !table.isDirty {
            table.isDirty = true
            dirty.insert(offset)
        }
        return true
    }

    /// Changes an extended entry and its bitmap (`index` and the word after) in one change, so
    /// no reader sees one without the other; false when the table is not cached.
    mutating func setEntryPair(_ value: UInt64, bitmap: UInt64, at index: Int, ofTableAt offset: UInt64) -> Bool {
        guard let table = tables[offset] else { return false }
        generation += 1
        readIndex.change {
            table.entries[index].store(value, ordering: .relaxed)
            table.entries[index + 1].store(bitmap, ordering: .relaxed)
        }
        if !table.isDirty {
            table.isDirty = true
            dirty.insert(offset)
        }
        return true
    }

    mutating func setL1Entry(_ entry: UInt64, at index: Int) {
        readIndex.change {
            let old = Self.tableOffset(l1[index])
            l1Indices[old]?.removeAll { $0 == index }
            if l1Indices[old]?.isEmpty == true { l1Indices[old] = nil }
            l1[index] = entry
            let offset = Self.tableOffset(entry)
            if offset != 0 { l1Indices[offset, default: []].append(index) }
            publish(index)
        }
    }

    /// Makes the L1 table `count` entries long, the new ones without a table.
    mutating func growL1(to count: Int) {
        guard count > l1.count else { return }
        readIndex.change {
            readIndex.resize(to: count)
            for index in l1.count..<count {
                l1.append(0)
                publish(index)
            }
        }
    }

    /// Makes `entries` the L1 table and forgets every cached table (none may be dirty): a
    /// snapshot operation moved the active image to other tables, and those it left may be freed.
    mutating func replaceL1(with entries: [UInt64]) {
        precondition(dirty.isEmpty, "dirty L2 tables are written back before the L1 table is replaced")
        generation += 1
        readIndex.change {
            for index in l1.indices { readIndex.setSlot(index, to: 0) }
            for table in tables.values { readIndex.recycle(table.entries) }
            tables = [:]
            l1Indices = [:]
            readIndex.resize(to: entries.count)
            l1 = entries
            for index in entries.indices {
                let offset = Self.tableOffset(entries[index])
                if offset != 0 { l1Indices[offset, default: []].append(index) }
                publish(index)
            }
        }
    }

    /// Drops the clean table at `offset`, which no L1 entry names any more and whose cluster
    /// may be freed and used again: a copy left here would answer for whatever is put there next.
    mutating func forgetTable(at offset: UInt64) {
        precondition(!dirty.contains(offset), "a dirty L2 table is written back before it is freed")
        guard l1Indices[offset] == nil, let table = tables.removeValue(forKey: offset) else { return }
        generation += 1
        readIndex.recycle(table.entries)
    }

    mutating func markClean(_ offset: UInt64) {
        generation += 1
        dirty.remove(offset)
        tables[offset]?.isDirty = false
        evictCleanTables()
    }

    private mutating func insert(_ entries: [UInt64], at offset: UInt64) {
        clock += 1
        if let existing = tables[offset] {
            readIndex.change { readIndex.fill(existing.entries, with: entries) }
            existing.lastUse = clock
        } else {
            readIndex.change {
                tables[offset] = Table(readIndex.makeTable(entries), lastUse: clock)
                l1Indices[offset]?.forEach { publish($0) }
            }
        }
        evictCleanTables(sparing: offset)
    }

    /// Points the index's slot for L1 index `index` at what the L1 entry says. Inside `change`.
    private func publish(_ index: Int) {
        let offset = Self.tableOffset(l1[index])
        if offset == 0 {
            readIndex.setSlot(index, to: L2ReadIndex.noTable)
        } else {
            readIndex.setSlot(index, to: tables[offset].map { UInt(bitPattern: $0.entries) } ?? 0)
        }
    }

    /// Evicts the least recently used clean tables down to capacity — never `spared`, the table
    /// just stored: readers that marked every other table would make it the oldest.
    private mutating func evictCleanTables(sparing spared: UInt64? = nil) {
        guard tables.count > capacity else { return }
        // Tables readers used without the lock since the last round count as used now.
        for table in tables.values where readIndex.takeUsedMark(table.entries) { table.lastUse = clock }
        while tables.count > capacity, let victim = oldestCleanTable(sparing: spared) {
            let table = tables.removeValue(forKey: victim).unsafelyUnwrapped
            readIndex.change { l1Indices[victim]?.forEach { readIndex.setSlot($0, to: 0) } }
            readIndex.recycle(table.entries)
        }
    }

    private func oldestCleanTable(sparing spared: UInt64?) -> UInt64? {
        var oldest: (offset: UInt64, lastUse: UInt64)?
        for (offset, table) in tables where offset != spared && !dirty.contains(offset) && table.lastUse < (oldest?.lastUse ?? .max) {
            oldest = (offset, table.lastUse)
        }
        return oldest?.offset
    }
}
