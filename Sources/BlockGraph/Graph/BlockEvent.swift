// BlockEvent: the named steps of an operation — QEMU's BLKDBG events — so a fault rule can say
// "the first write of the L2 update fails" rather than counting requests, which shift whenever
// an operation changes. Format drivers and the state store mark the requests of each step; the
// fault-injection driver below them matches rules against the steps in progress. Names are
// QEMU's where QEMU has the step.
/// A named step of an operation, so fault rules and the write journal can name the step a
/// request belongs to.
public enum BlockEvent: String, Sendable, Hashable, CaseIterable {
    /// Guest data written to its clusters (in place or newly allocated).
    case dataWrite = "write_aio"
    /// A partial write's cluster copied with the new bytes over it (copy-on-write).
    case copyOnWrite = "cow_write"
    /// A compressed cluster's data.
    case compressedWrite = "write_compressed"
    /// Refcount blocks written back, and the flush after them.
    case refblockUpdate = "refblock_update"
    /// New refcount table entries, in dependency order with flushes between.
    case reftableUpdate = "reftable_update"
    /// A larger refcount table: its blocks, the table, the header fields naming it.
    case reftableGrow = "reftable_grow"
    /// L2 tables written back.
    case l2Update = "l2_update"
    /// The flush before L1 entries, and the entries.
    case l1Update = "l1_update"
    /// References dropped after the new entries are durable.
    case clusterFree = "cluster_free"
    /// A header field: autoclear bits cleared, dirty or corrupt bit changed.
    case headerUpdate = "header_update"
    /// Persistent dirty bitmaps: marks written ahead of the data, new tables and directories.
    case bitmapUpdate = "bitmap_update"
    /// State store: a blob's new copy written to free space.
    case blobWrite = "blob_write"
    /// State store: the new directory written to the other slot, and its flush.
    case directoryPublish = "directory_publish"
    /// State store: the superblock and first directory of a new store.
    case storeInit = "store_init"
}

extension BlockNode {
    /// Runs `body` with the requests it makes to this node marked as part of `event`.
    public func during<Result, Failure: Error>(_ event: BlockEvent, _ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        driver.eventBegan(event)
        defer { driver.eventEnded(event) }
        return try body()
    }
}
