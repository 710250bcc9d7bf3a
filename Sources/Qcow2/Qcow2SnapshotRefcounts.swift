// Qcow2SnapshotRefcounts: the refcount blocks a snapshot operation changes, as copies in memory.
// The blocks on disk are never changed: Qcow2SnapshotUpdate.swift writes the copies to new
// clusters and a new refcount table names them, so the refcounts switch with the header. Memory
// is a cluster per block the operation touches — bounded by the metadata it walks.
import BlockGraph

struct Qcow2SnapshotRefcounts {
    let width: RefcountWidth
    let clusterSize: UInt64
    let perBlock: UInt64
    /// The refcount table as it is on disk.
    let table: [UInt64]
    let file: BlockNode
    let fileLength: UInt64
    /// The changed copies, in the order they were first touched, and where each table index's
    /// copy is among them; the last one used is kept apart, since consecutive clusters almost
    /// always share a block: one integer comparison instead of hash lookups per refcount change.
    private var copies: [[UInt8]] = []
    private var slots: [Int: Int] = [:]
    private var last = (index: -1, slot: 0)

    init(width: RefcountWidth, clusterSize: Int, table: [UInt64], file: BlockNode, fileLength: UInt64) {
        self.width = width
        self.clusterSize = UInt64(clusterSize)
        perBlock = width.entriesPerBlock(clusterSize: clusterSize)
        self.table = table
        self.file = file
        self.fileLength = fileLength
    }

    /// Where the block at table index `index` is on disk, 0 for none.
    func diskOffset(ofBlock index: Int) -> UInt64 { index < table.count ? table[index] & Qcow2Driver.offsetMask : 0 }

    func blockIndex(ofCluster cluster: UInt64) -> Int { Int(cluster / perBlock) }

    /// The table indices of the blocks copied so far.
    var indices: Dictionary<Int, Int>.Keys { slots.keys }

    /// The copy of the block at table index `index`, if it was touched.
    func block(_ index: Int) -> [UInt8]? { slots[index].map { copies[$0] } }

    /// The refcount of `cluster` as the copies have it, the block read from disk if need be.
    mutating func refcount(ofCluster cluster: UInt64) throws(BlockError) -> UInt64 {
        let slot = try load(blockIndex(ofCluster: cluster))
        return width.value(in: copies[slot], at: Int(cluster % perBlock))
    }

    /// Adds `delta` to the refcount of `cluster`; a count that would fall below zero means the
    /// image counts fewer references than it has — corruption, refused before anything is written.
    mutating func add(_ delta: Int, toCluster cluster: UInt64) throws(BlockError) {
        let old = try refcount(ofCluster: cluster)
        let magnitude = UInt64(delta.magnitude)
        guard delta >= 0 || old >= magnitude else {
            throw BlockError(.corrupt, "qcow2: cluster 0x\(String(cluster * clusterSize, radix: 16)) has refcount \(old), fewer than its references")
        }
        let (new, overflow) = delta >= 0 ? old.addingReportingOverflow(magnitude) : (partialValue: old - magnitude, overflow: false)
        guard !overflow, new <= width.maximum else {
            throw BlockError(.unsupported, "qcow2: a refcount would exceed the \(width.bits)-bit maximum of \(width.maximum) (cluster 0x\(String(cluster * clusterSize, radix: 16)))")
        }
        try set(new, ofCluster: cluster)
    }

    mutating func set(_ value: UInt64, ofCluster cluster: UInt64) throws(BlockError) {
        let slot = try load(blockIndex(ofCluster: cluster))
        width.set(value, in: &copies[slot], at: Int(cluster % perBlock))
    }

    /// Where the copy of the block at table index `index` is, made if need be: zeroes where the
    /// table names no block.
    @discardableResult
    mutating func load(_ index: Int) throws(BlockError) -> Int {
        if last.index == index { return last.slot }
        if let slot = slots[index] {
            last = (index, slot)
            return slot
        }
        let offset = diskOffset(ofBlock: index)
        if offset == 0 {
            copies.append([UInt8](repeating: 0, count: Int(clusterSize)))
        } else {
            guard offset % clusterSize == 0, offset + clusterSize <= fileLength else {
                throw BlockError(.corrupt, "qcow2: Refblock offset 0x\(String(offset, radix: 16)) is invalid")
            }
            copies.append(try Qcow2Driver.readBytes(file, at: offset, count: Int(clusterSize)))
        }
        slots[index] = copies.count - 1
        last = (index, copies.count - 1)
        return last.slot
    }
}
