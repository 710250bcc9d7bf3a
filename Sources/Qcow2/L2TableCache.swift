// L2TableCache: recently used L2 tables, decoded, bounded by a byte budget so memory stays flat
// however large the image (QEMU's l2-cache-size). Least recently used goes first.

struct L2TableCache {
    private var tables: [UInt64: [UInt64]] = [:]
    private var order: [UInt64] = []
    let capacity: Int

    /// `budgetBytes` of tables of `clusterSize` bytes each; at least four.
    init(budgetBytes: Int, clusterSize: Int) {
        capacity = max(4, budgetBytes / clusterSize)
    }

    mutating func table(at offset: UInt64) -> [UInt64]? {
        guard let table = tables[offset] else { return nil }
        if order.last != offset, let index = order.firstIndex(of: offset) {
            order.remove(at: index)
            order.append(offset)
        }
        return table
    }

    /// Replaces a cached table after the writer changed one of its entries on disk.
    mutating func replace(_ table: [UInt64], at offset: UInt64) {
        if tables[offset] != nil { tables[offset] = table } else { insert(table, at: offset) }
    }

    mutating func insert(_ table: [UInt64], at offset: UInt64) {
        if tables.updateValue(table, forKey: offset) == nil {
            order.append(offset)
            if order.count > capacity { tables[order.removeFirst()] = nil }
        }
    }
}
