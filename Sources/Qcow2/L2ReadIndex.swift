// L2ReadIndex: what a read may look up without the cache's lock — for each active L1 index,
// where its cached L2 table's entries are, or that it has no table. Every read of an allocated
// cluster used to take the cache's mutex: with two reader threads that is a cache line moving
// between cores on every request, the one cost qcow2 reads had over raw ones.
//
// A sequence lock (as Linux's seqcount, or Boehm's "Can seqlocks get along with programming
// language memory models?"): L2TableCache, under its own lock, makes the count odd while it
// changes anything here and even again after; a reader keeps what it loaded only if the count
// was even and unchanged around its loads, and takes the lock otherwise. Readers write nothing
// shared — except a table's "used" mark, once per eviction round, which keeps the least
// recently used order honest.
//
// Nothing a racing reader may still be loading from is freed while the image is open: evicted
// tables' buffers are reused for the next tables, and slot arrays that an L1 growth replaced
// are kept. A reader racing a change loads stale words, never unmapped memory, and throws
// them away. Every shared word is an atomic (relaxed where the count orders it), so there is
// no data race in the language's sense either.
//
// Slot array: word 0 the number of L1 indices, then one word per index: 0 (table not cached:
// ask the cache), `noTable` (no L2 table: the clusters are unallocated), or the address of the
// table's entries. A table buffer holds its entries, then the used mark.
import Synchronization

final class L2ReadIndex: @unchecked Sendable {
    /// The slot of an L1 index with no L2 table; never an address, which are aligned.
    static let noTable: UInt = 1

    let entryCount: Int
    private let sequence = Atomic<UInt64>(0)
    private let slotArray = Atomic<UInt>(0)
    // The rest is only touched under the cache's lock.
    private var retiredSlotArrays: [UnsafeMutablePointer<Atomic<UInt>>] = []
    private var tableBuffers: [UnsafeMutablePointer<Atomic<UInt64>>] = []
    private var spareTableBuffers: [UnsafeMutablePointer<Atomic<UInt64>>] = []

    init(l1Count: Int, entryCount: Int) {
        self.entryCount = entryCount
        slotArray.store(UInt(bitPattern: Self.makeSlotArray(count: l1Count, copying: nil)), ordering: .releasing)
    }

    deinit {
        retiredSlotArrays.append(currentSlots)
        for slots in retiredSlotArrays {
            slots.deinitialize(count: Int(slots[0].load(ordering: .relaxed)) + 1)
            slots.deallocate()
        }
        for table in tableBuffers {
            table.deinitialize(count: entryCount + 1)
            table.deallocate()
        }
    }

    /// The entry at `entryIndex` of the L2 table of L1 index `l1Index` (0 when it has no table),
    /// or nil when the caller must ask the cache under its lock.
    @inline(__always)
    func entry(l1Index: Int, entryIndex: Int) -> UInt64? {
        consistentLoad(l1Index: l1Index, ifNoTable: 0) { $0[entryIndex].load(ordering: .relaxed) }
    }

    /// An extended entry: the words at `entryIndex` and after it, seen together — a change
    /// between the two loads makes the reader ask the cache, never pair an entry with another's
    /// bitmap.
    func entryPair(l1Index: Int, entryIndex: Int) -> (entry: UInt64, bitmap: UInt64)? {
        consistentLoad(l1Index: l1Index, ifNoTable: (0, 0)) {
            ($0[entryIndex].load(ordering: .relaxed), $0[entryIndex + 1].load(ordering: .relaxed))
        }
    }

    /// `load` from the table of L1 index `l1Index` inside one even sequence number, and the
    /// table marked as used; nil when a writer changed the index meanwhile or the table is not
    /// in it.
    @inline(__always)
    private func consistentLoad<Value>(l1Index: Int, ifNoTable empty: Value,
                                       _ load: (UnsafeMutablePointer<Atomic<UInt64>>) -> Value) -> Value? {
        let before = sequence.load(ordering: .acquiring)
        guard before & 1 == 0 else { return nil }
        let slots = currentSlots
        guard l1Index >= 0, l1Index < Int(slots[0].load(ordering: .relaxed)) else { return nil }
        let slot = slots[l1Index + 1].load(ordering: .relaxed)
        guard slot != 0 else { return nil }
        var value = empty
        var table: UnsafeMutablePointer<Atomic<UInt64>>?
        if slot != Self.noTable {
            table = UnsafeMutablePointer(bitPattern: slot)
            value = load(table.unsafelyUnwrapped)
        }
        atomicMemoryFence(ordering: .acquiring)
        guard sequence.load(ordering: .relaxed) == before else { return nil }
        if let table, table[entryCount].load(ordering: .relaxed) == 0 { table[entryCount].store(1, ordering: .relaxed) }
        return value
    }

    private var currentSlots: UnsafeMutablePointer<Atomic<UInt>> {
        UnsafeMutablePointer(bitPattern: slotArray.load(ordering: .acquiring)).unsafelyUnwrapped
    }

    // MARK: Changes — under the cache's lock, inside `change`.

    /// Runs `body`, which changes what readers may see, with the count odd.
    func change<Result>(_ body: () -> Result) -> Result {
        let count = sequence.load(ordering: .relaxed)
        assert(count & 1 == 0, "changes do not nest: the inner one would end the outer one's odd count")
        sequence.store(count &+ 1, ordering: .relaxed)
        // Orders the odd count before the changes' stores, for a reader that sees any of them.
        atomicMemoryFence(ordering: .releasing)
        defer { sequence.store(count &+ 2, ordering: .releasing) }
        return body()
    }

    /// Points L1 index `index` at `table`'s entries, at "no table", or at nothing (ask the cache).
    func setSlot(_ index: Int, to slot: UInt) {
        currentSlots[index + 1].store(slot, ordering: .relaxed)
    }

    /// A slot array for `count` L1 indices, keeping the slots of the indices both have.
    func resize(to count: Int) {
        let old = currentSlots
        slotArray.store(UInt(bitPattern: Self.makeSlotArray(count: count, copying: old)), ordering: .releasing)
        retiredSlotArrays.append(old)
    }

    /// A buffer for one table's entries (the used mark cleared), reused when one is spare.
    func makeTable(_ entries: [UInt64]) -> UnsafeMutablePointer<Atomic<UInt64>> {
        let table: UnsafeMutablePointer<Atomic<UInt64>>
        if let spare = spareTableBuffers.popLast() {
            table = spare
        } else {
            table = .allocate(capacity: entryCount + 1)
            for index in 0...entryCount { (table + index).initialize(to: Atomic(0)) }
            tableBuffers.append(table)
        }
        fill(table, with: entries)
        table[entryCount].store(0, ordering: .relaxed)
        return table
    }

    func fill(_ table: UnsafeMutablePointer<Atomic<UInt64>>, with entries: [UInt64]) {
        for (index, entry) in entries.enumerated() { table[index].store(entry, ordering: .relaxed) }
    }

    /// Takes back the buffer of an evicted table, whose slots are already cleared.
    func recycle(_ table: UnsafeMutablePointer<Atomic<UInt64>>) {
        spareTableBuffers.append(table)
    }

    /// Whether a reader used the table since the last call, clearing the mark.
    func takeUsedMark(_ table: UnsafeMutablePointer<Atomic<UInt64>>) -> Bool {
        table[entryCount].exchange(0, ordering: .relaxed) != 0
    }

    private static func makeSlotArray(count: Int, copying old: UnsafeMutablePointer<Atomic<UInt>>?) -> UnsafeMutablePointer<Atomic<UInt>> {
        let slots = UnsafeMutablePointer<Atomic<UInt>>.allocate(capacity: count + 1)
        slots.initialize(to: Atomic(UInt(count)))
        let kept = old.map { min(count, Int($0[0].load(ordering: .relaxed))) } ?? 0
        for index in 0..<count {
            (slots + index + 1).initialize(to: Atomic(index < kept ? old.unsafelyUnwrapped[index + 1].load(ordering: .relaxed) : 0))
        }
        return slots
    }
}
