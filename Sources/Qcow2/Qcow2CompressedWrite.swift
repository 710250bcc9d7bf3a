// Qcow2CompressedWrite: whole clusters stored deflate-compressed, as `qemu-img convert -c` stores
// them. Compressed clusters are packed back to back, each starting where the one before ended,
// so several share a host cluster (each sharing adds one to its refcount; the L2 entry says
// how many 512-byte sectors the data spans, qcow2.rst "Compressed Clusters Descriptor"). The
// data goes to the file before its refcounts and L2 entry, like every write (Qcow2Writer.swift).
import BlockLayer

extension Qcow2Driver {
    /// Stores one guest cluster compressed. A cluster that would not shrink is stored as it is,
    /// as QEMU does. `bytes` is the whole cluster, or the image's last, shorter one.
    public func writeCompressed(cluster: UInt64, from bytes: UnsafeRawBufferPointer) throws(BlockError) {
        try storeCompressed(try compress(bytes), cluster: cluster, original: bytes)
    }

    /// The deflate stream for one cluster (zero-padded to a whole cluster), or nil when it would
    /// not be smaller than a cluster. Needs no lock: callers may compress clusters in parallel
    /// and store them in order with `storeCompressed`.
    public func compress(_ bytes: UnsafeRawBufferPointer) throws(BlockError) -> [UInt8]? {
        guard header.compressionType == 0 else {
            throw BlockError(.unsupported, "qcow2: blk writes compressed clusters with zlib only; this image uses zstd")
        }
        guard bytes.count <= clusterSize else { throw BlockError(.invalidRequest, "a compressed write covers one cluster") }
        return try withWholeCluster(bytes) { (whole) throws(BlockError) in try Deflate.deflate(whole, limit: clusterSize - 1) }
    }

    /// `bytes` followed by zeroes up to a whole cluster.
    private func withWholeCluster<Result>(_ bytes: UnsafeRawBufferPointer,
                                          _ body: (UnsafeRawBufferPointer) throws(BlockError) -> Result) throws(BlockError) -> Result {
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        defer { whole.deallocate() }
        whole.initializeMemory(as: UInt8.self, repeating: 0)
        whole.copyMemory(from: bytes)
        return try body(UnsafeRawBufferPointer(whole))
    }

    /// Stores what `compress` made of `original` as guest cluster `cluster`: the compressed
    /// stream, or `original` as it is when it did not compress.
    public func storeCompressed(_ compressed: [UInt8]?, cluster: UInt64, original: UnsafeRawBufferPointer) throws(BlockError) {
        try refuseWritesIfCorrupt()
        guard Int64(cluster) * Int64(clusterSize) + Int64(original.count) <= (try length()) else {
            throw BlockError(.invalidRequest, "a compressed write covers one cluster inside the image")
        }
        guard let compressed else {
            try withWholeCluster(original) { (whole) throws(BlockError) in try write(at: Int64(cluster) * Int64(clusterSize), from: whole) }
            return
        }
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state)
            let hostOffset = try allocateBytes(compressed.count, &state)
            try file.during(.compressedWrite) { () throws(BlockError) in try writeBytes(compressed, at: hostOffset) }
            let offsetBits = UInt64(62 - (clusterBits - 8))
            let additionalSectors = (hostOffset + UInt64(compressed.count) - 1) / 512 - hostOffset / 512
            try publish(Self.compressedBit | additionalSectors << offsetBits | hostOffset, forGuestCluster: cluster, &state)
            try writeBackIfCacheIsFull(&state)
        }
    }

    /// `count` bytes right after the last compressed cluster when they continue it at the end of
    /// the file, else at the start of a new cluster; every host cluster they touch is counted.
    private func allocateBytes(_ count: Int, _ state: inout Qcow2WriterState) throws(BlockError) -> UInt64 {
        let clusterSize = UInt64(self.clusterSize)
        var start = state.nextFreeCluster * clusterSize
        // Continue the last compressed cluster's host cluster while its refcount can count one
        // more sharer (QEMU's qcow2_alloc_bytes does the same).
        if let tail = state.compressedTail, tail % clusterSize != 0, tail / clusterSize + 1 == state.nextFreeCluster,
           try refcount(ofCluster: tail / clusterSize, &state) < refcountWidth.maximum {
            start = tail
        }
        let end = start + UInt64(count)
        let lastCluster = (end - 1) / clusterSize
        let sharedCluster = start / clusterSize < state.nextFreeCluster ? start / clusterSize : nil
        // New clusters are reserved before the shared one is counted: counting may need a new
        // refcount block, which must not land where the data goes.
        if lastCluster >= state.nextFreeCluster { _ = try allocateClusters(lastCluster + 1 - state.nextFreeCluster, &state) }
        if let sharedCluster {
            try setRefcount(ofCluster: sharedCluster, to: try refcount(ofCluster: sharedCluster, &state) + 1, &state)
        }
        state.compressedTail = end
        return start
    }
}
