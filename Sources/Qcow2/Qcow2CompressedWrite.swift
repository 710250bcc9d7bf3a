// Qcow2CompressedWrite: whole clusters stored deflate-compressed, as `qemu-img convert -c` stores
// them. Compressed clusters are packed back to back, each starting where the one before ended,
// so several share a host cluster (each sharing adds one to its refcount; the L2 entry says
// how many 512-byte sectors the data spans, qcow2.rst "Compressed Clusters Descriptor"). The
// data goes to the file before its refcounts and L2 entry, like every write (Qcow2Writer.swift).
import BlockGraph

extension Qcow2Driver {
    /// The image's cluster size, from its header: the unit a compressed cluster replaces whole.
    public var clusterBytes: Int? { clusterSize }

    /// The deflate stream for one cluster (zero-padded to a whole cluster), or the whole cluster
    /// as it is when the stream would not be smaller. Needs no lock: callers may compress
    /// clusters in parallel and store them in order with `writeCompressed`.
    public func compressCluster(at byteOffset: Int64, _ bytes: UnsafeRawBufferPointer) throws(BlockError) -> CompressedCluster {
        try refuseWithDataFile("compressed writes")
        guard header.compressionType == 0 else {
            throw BlockError(.unsupported, "qcow2: blk writes compressed clusters with zlib only; this image uses zstd")
        }
        guard byteOffset % Int64(clusterSize) == 0, bytes.count <= clusterSize else {
            throw BlockError(.invalidRequest, "a compressed write covers one cluster")
        }
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        defer { whole.deallocate() }
        whole.initializeMemory(as: UInt8.self, repeating: 0)
        whole.copyMemory(from: bytes)
        let stream = try Deflate.deflate(UnsafeRawBufferPointer(whole), limit: clusterSize - 1)
        return CompressedCluster(byteOffset: byteOffset, payload: stream.map { .compressed($0) } ?? .uncompressed(Array(whole)))
    }

    /// Stores what `compressCluster` made: the compressed stream packed after the last one, or
    /// the cluster as it is.
    public func writeCompressed(_ prepared: CompressedCluster) throws(BlockError) {
        try refuseWritesIfCorrupt()
        guard prepared.byteOffset >= 0, prepared.byteOffset % Int64(clusterSize) == 0, prepared.byteOffset < (try length()) else {
            throw BlockError(.invalidRequest, "a compressed write covers one cluster inside the image")
        }
        let compressed: [UInt8]
        switch prepared.payload {
        case .uncompressed(let bytes):
            try bytes.withUnsafeBytes { buffer in
                Result { () throws(BlockError) in try write(at: prepared.byteOffset, from: buffer) }
            }.get()
            return
        case .compressed(let stream):
            compressed = stream
        }
        try markBitmaps(at: prepared.byteOffset, byteCount: Int64(clusterSize))
        let cluster = UInt64(prepared.byteOffset) / UInt64(clusterSize)
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
