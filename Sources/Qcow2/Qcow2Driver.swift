// Qcow2Driver: the qcow2 format (docs/interop/qcow2.rst) — guest offsets through the L1 and L2
// tables to host clusters, zero clusters, compressed clusters (deflate or zstd), and reads that fall through to
// the backing image. Writes are in Qcow2Writer.swift.
//
// Map: the two-level lookup · reads cluster by cluster · permissions.
//
// L1 entry:  bit 63 COPIED · bits 9–55 offset of the L2 table
// L2 entry:  bit 63 COPIED · bit 62 compressed · standard: bits 9–55 host offset, bit 0 "reads
//            as zeroes" (v3) · compressed: low (62 − (cluster_bits − 8)) bits host byte offset,
//            then the number of additional 512-byte sectors
import BlockGraph
import BlockLocking
import Synchronization

/// The qcow2 format's node: maps guest clusters through L1 and L2 tables, allocates with
/// refcounts in QEMU's crash-safe order, and falls through to its backing child for what it
/// does not hold.
public final class Qcow2Driver: BlockDriver {
    /// "qcow2", as `-f qcow2` names it.
    public let formatName = "qcow2"
    /// The L2 and refcount caches hold what was read: a migration destination must not take over
    /// an image the source changed since.
    public var cachesMetadata: Bool { true }
    /// The header as opened: the geometry and features every request relies on.
    public let header: Qcow2Header
    /// The header's geometry as plain stored values: read through `header`, every request
    /// copied the whole header and retained its strings and feature table.
    let clusterBits: Int
    let clusterSize: Int
    let l2Bits: Int
    let l2Entries: Int
    let refcountWidth: RefcountWidth
    /// Version 3: bit 0 of an L2 entry means "reads as zeroes" — unless entries are extended,
    /// where the subcluster bitmap says it instead.
    let hasZeroClusters: Bool
    /// L2 entries of 16 bytes: each standard entry is followed by its subcluster bitmap.
    let extendedL2: Bool
    /// The image file's node, which holds the metadata and the clusters.
    public let file: BlockNode
    /// The path of the image file, as block status names it.
    let fileName: String
    /// `file.driver`, one load from self: reached through `file` the compiler retains and
    /// releases the driver on every request, an atomic on a line every reader thread shares.
    let fileDriver: any BlockDriver
    /// The node unallocated clusters read from: this node's `.backing` child.
    public let backing: BlockNode?
    /// The external data file's node (the `.data` child), where guest clusters are when the
    /// image has one (Qcow2DataFile.swift); its path as opened, as block status names it; and
    /// the driver data is read and written through (the data file's, else the image file's).
    let dataFile: BlockNode?
    let dataFileName: String
    let dataDriver: any BlockDriver
    let forceShare: Bool
    /// The virtual size now: the header's, until a resize grows it.
    let virtualSize: Atomic<Int64>
    /// The L1 table and the cached L2 tables.
    let cache: Mutex<L2TableCache>
    /// The cache's lock-free view for reads: a `let` of our own, so a read reaches it without
    /// the lock or a retain.
    let readIndex: L2ReadIndex
    /// How many refcount blocks the writer keeps in memory before it writes them back.
    let refcountBlockCapacity: Int
    /// Allocation state, and the lock that makes allocating writes one at a time.
    let writer: Mutex<Qcow2WriterState>
    /// Whether this open may write (it changes with reopen).
    let writable: Atomic<Bool>
    /// Whether a parent holds write permission: an inactive migration destination is writable
    /// but holds none while its source writes, and writes nothing, not even the corrupt bit.
    let holdsWrite = Atomic(false)
    /// Writes planned in place (under the writer lock) whose data is not in the file yet. Host
    /// clusters are freed only when there are none: a zeroed cluster's host cluster may be
    /// released while such a write, planned before the zeroing, is still on its way to it.
    let inPlaceWrites = Atomic(0)
    let corruptionMarked = Atomic(false)
    /// Set when `amend` starts changing the format on disk: this open's geometry and features
    /// (refcount width, version) are then out of date, so it writes no more (Qcow2Amend.swift).
    let amended = Atomic(false)
    let dirtyBitCleared = Atomic(false)
    /// Opened by `check -r`: a dirty image waits for the check's repair instead of its own.
    let openedForRepair: Bool
    /// Whether the image's metadata was preallocated, found at its first block status.
    let metadataPreallocation = Mutex<Bool?>(nil)
    /// The persistent dirty bitmaps, read on first use (Qcow2BitmapMarking.swift).
    let bitmaps = Mutex<Qcow2BitmapState?>(nil)
    /// Warnings of resizes, until `takeWarnings` hands them on.
    let resizeWarnings = Mutex<[String]>([])

    static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    static let compressedBit: UInt64 = 1 << 62
    static let zeroBit: UInt64 = 1

    init(header: Qcow2Header, file: BlockNode, fileName: String, backing: BlockNode?, writable: Bool, repairing: Bool, forceShare: Bool,
         cacheBytes: Int, dataFile: (node: BlockNode, path: String)? = nil) throws(BlockError) {
        openedForRepair = repairing
        self.dataFile = dataFile?.node
        dataFileName = dataFile?.path ?? fileName
        dataDriver = dataFile?.node.driver ?? file.driver
        self.header = header
        clusterBits = Int(header.clusterBits)
        clusterSize = header.clusterSize
        l2Entries = header.l2Entries
        extendedL2 = header.hasExtendedL2
        l2Bits = clusterBits - (extendedL2 ? 4 : 3)
        refcountWidth = RefcountWidth(order: header.refcountOrder)
        hasZeroClusters = header.version >= 3 && !extendedL2
        self.file = file
        self.fileName = fileName
        fileDriver = file.driver
        self.backing = backing
        self.forceShare = forceShare
        self.writable = Atomic(writable)
        let raw = try Self.readBytes(file, at: header.l1TableOffset, count: Int(header.l1Size) * 8)
        let l1 = raw.bigEndianEntries
        let l2Cache = L2TableCache(l1: l1, budgetBytes: cacheBytes / 5 * 4, clusterSize: header.clusterSize)
        readIndex = l2Cache.readIndex
        cache = Mutex(l2Cache)
        refcountBlockCapacity = max(4, cacheBytes / 5 / header.clusterSize)
        writer = Mutex(Qcow2WriterState(l1TableOffset: header.l1TableOffset, refcountTableOffset: header.refcountTableOffset,
                                         refcountTableClusters: UInt64(header.refcountTableClusters)))
        virtualSize = Atomic(Int64(header.virtualSize))
    }

    deinit {
        // Closing flushes, as QEMU's bdrv_close does: metadata still in memory would leave the
        // last writes unreachable (leaked) otherwise.
        try? flush()
    }

    static func readBytes(_ node: BlockNode, at offset: UInt64, count: Int) throws(BlockError) -> [UInt8] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { buffer.deallocate() }
        try node.driver.read(at: Int64(offset), into: buffer)
        return Array(buffer)
    }

    /// The virtual size, which a resize changes under the writer lock.
    public func length() throws(BlockError) -> Int64 { virtualSize.load(ordering: .acquiring) }

    /// Where the bytes of one guest cluster are.
    enum ClusterMapping: Equatable {
        case unallocated
        case zeroes
        case data(hostOffset: UInt64)
        case compressed(hostOffset: UInt64, byteCount: Int)
    }

    /// The L1 index of a guest cluster and where its entry is in that L2 table, counted in
    /// 8-byte words (an extended entry's bitmap is the word after).
    func tableIndices(ofGuestCluster cluster: UInt64) -> (l1Index: Int, l2Index: Int) {
        (Int(cluster >> UInt64(l2Bits)), Int(cluster & UInt64(l2Entries - 1)) << (extendedL2 ? 1 : 0))
    }

    func mapping(ofGuestCluster cluster: UInt64) throws(BlockError) -> ClusterMapping {
        try checkedMapping(ofEntry: try l2Entry(ofGuestCluster: cluster), cluster: cluster)
    }

    /// The L2 entry of a guest cluster: 0 (unallocated) when its L1 entry names no table.
    func l2Entry(ofGuestCluster cluster: UInt64) throws(BlockError) -> UInt64 {
        let (l1Index, l2Index) = tableIndices(ofGuestCluster: cluster)
        if let entry = readIndex.entry(l1Index: l1Index, entryIndex: l2Index) { return entry }
        while true {
            // The L1 entry and the generation in one look: a table read from disk is kept only
            // if the writer changed nothing since — it may have moved the table meanwhile.
            let (l1Entry, cached, generation) = cache.withLock { $0.lookup(l1Index: l1Index, entryIndex: l2Index) }
            let l2Offset = l1Entry & Self.offsetMask
            guard l2Offset != 0 else { return 0 }
            if let cached { return cached }
            if let table = try loadL2Table(at: l2Offset, readAt: generation) { return table[l2Index] }
        }
    }

    /// What one L2 entry says about its guest cluster.
    func mapping(ofEntry entry: UInt64, cluster: UInt64) throws(BlockError) -> ClusterMapping {
        if entry & Self.compressedBit != 0 {
            let offsetBits = 62 - (clusterBits - 8)
            let hostOffset = entry & ((1 << UInt64(offsetBits)) - 1)
            let sectors = (entry >> UInt64(offsetBits)) & ((1 << UInt64(clusterBits - 8)) - 1)
            let byteCount = Int((sectors + 1) * 512 - (hostOffset & 511))
            return .compressed(hostOffset: hostOffset, byteCount: byteCount)
        }
        if hasZeroClusters && entry & Self.zeroBit != 0 { return .zeroes }
        let hostOffset = entry & Self.offsetMask
        // In a data file, offset 0 is the first cluster's: COPIED tells it from unallocated.
        guard hostOffset != 0 || (dataFile != nil && entry & Self.copiedBit != 0) else { return .unallocated }
        guard hostOffset & UInt64(clusterSize - 1) == 0 else {
            throw BlockError(.corrupt, "qcow2: Cluster allocation offset 0x\(String(hostOffset, radix: 16)) unaligned (guest cluster \(cluster))")
        }
        return .data(hostOffset: hostOffset)
    }

    /// Entry `index` of the L2 table at `offset`, read from disk into the cache if need be. For
    /// the writer, under its lock: nothing moves the table meanwhile.
    func l2Entry(_ index: Int, ofTableAt offset: UInt64) throws(BlockError) -> UInt64 {
        while true {
            let (entry, generation) = cache.withLock { ($0.entry(index, ofTableAt: offset), $0.generation) }
            if let entry { return entry }
            if let table = try loadL2Table(at: offset, readAt: generation) { return table[index] }
        }
    }

    /// A copy of the L2 table at `offset`, read from disk into the cache if need be; for the
    /// writer, as `l2Entry`.
    func l2Table(at offset: UInt64) throws(BlockError) -> [UInt64] {
        while true {
            let (table, generation) = cache.withLock { ($0.table(at: offset), $0.generation) }
            if let table { return table }
            if let table = try loadL2Table(at: offset, readAt: generation) { return table }
        }
    }

    /// The L2 table at `offset`, read from disk into the cache: nil when the writer changed
    /// tables since `generation` (the caller looks again).
    func loadL2Table(at offset: UInt64, readAt generation: UInt64) throws(BlockError) -> [UInt64]? {
        guard offset % UInt64(clusterSize) == 0 else {
            throw signalCorruption("L2 table offset 0x\(String(offset, radix: 16)) unaligned")
        }
        let fileLength = try fileLength(covering: offset + UInt64(clusterSize))
        guard offset >= UInt64(clusterSize), offset + UInt64(clusterSize) <= fileLength else {
            throw signalCorruption("L2 table offset 0x\(String(offset, radix: 16)) is outside the image file (\(fileLength) bytes)")
        }
        let table = try Self.readBytes(file, at: offset, count: clusterSize).bigEndianEntries
        return cache.withLock { $0.insertRead(table, at: offset, readAt: generation) }
    }

    /// The image file's length, looked up again when `end` is past what this open last saw:
    /// a writer in another process (beside a reader sharing write, or a migration source beside
    /// its inactive destination) may have allocated there since, and a cluster it allocated
    /// is not corruption.
    private func fileLength(covering end: UInt64) throws(BlockError) -> UInt64 {
        let seen = UInt64(try fileDriver.length())
        return seen >= end ? seen : UInt64(try fileDriver.refreshedLength())
    }

    /// Splits a request into its pieces, one per guest cluster: the cluster, the offset inside
    /// it, and the range of the request's buffer it covers.
    func forEachCluster(at byteOffset: Int64, count: Int,
                        _ body: (_ cluster: UInt64, _ inCluster: Int, _ range: Range<Int>) throws(BlockError) -> Void) throws(BlockError) {
        var done = 0
        while done < count {
            let offset = UInt64(byteOffset) + UInt64(done)
            let inCluster = Int(offset & UInt64(clusterSize - 1))
            let piece = min(count - done, clusterSize - inCluster)
            try body(offset >> UInt64(clusterBits), inCluster, done..<done + piece)
            done += piece
        }
    }

    /// Cluster by cluster: data from the file, zeroes for zero clusters, inflated compressed
    /// clusters, and the backing image (or zeroes) for unallocated ones.
    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try forEachCluster(at: byteOffset, count: buffer.count) { (cluster, inCluster, range) throws(BlockError) in
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[range])
            if extendedL2 { return try readSubclusters(cluster, at: inCluster, guestOffset: byteOffset + Int64(range.lowerBound), into: target) }
            switch try mapping(ofGuestCluster: cluster) {
            case .unallocated:
                try readBacking(at: byteOffset + Int64(range.lowerBound), into: target)
            case .zeroes:
                target.initializeMemory(as: UInt8.self, repeating: 0)
            case .data(let hostOffset):
                try readHost(at: hostOffset + UInt64(inCluster), into: target)
            case .compressed(let hostOffset, let byteCount):
                try readCompressed(hostOffset: hostOffset, byteCount: byteCount, at: inCluster, into: target)
            }
        }
    }

    func readCompressed(hostOffset: UInt64, byteCount: Int, at inCluster: Int, into target: UnsafeMutableRawBufferPointer) throws(BlockError) {
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 16)
        defer { whole.deallocate() }
        try inflateCluster(hostOffset: hostOffset, byteCount: byteCount, into: whole)
        target.copyMemory(from: UnsafeRawBufferPointer(rebasing: whole[inCluster..<inCluster + target.count]))
    }

    func readHost(at hostOffset: UInt64, into target: UnsafeMutableRawBufferPointer) throws(BlockError) {
        if dataFile != nil { return try readDataFile(at: hostOffset, into: target) }
        let fileLength = try fileLength(covering: hostOffset + UInt64(target.count))
        guard hostOffset + UInt64(target.count) <= fileLength else {
            throw signalCorruption("data cluster at 0x\(String(hostOffset, radix: 16)) is past the end of the image file (\(fileLength) bytes)")
        }
        try fileDriver.read(at: Int64(hostOffset), into: target)
    }

    private func inflateCluster(hostOffset: UInt64, byteCount: Int, into cluster: UnsafeMutableRawBufferPointer) throws(BlockError) {
        let fileLength = try fileLength(covering: hostOffset + UInt64(byteCount))
        guard hostOffset < fileLength else {
            throw signalCorruption("compressed cluster at 0x\(String(hostOffset, radix: 16)) is past the end of the image file")
        }
        // The last sector of the last compressed cluster may lie past the end of the file.
        let available = Int(min(UInt64(byteCount), fileLength - hostOffset))
        let compressed = UnsafeMutableRawBufferPointer.allocate(byteCount: available, alignment: 16)
        defer { compressed.deallocate() }
        try file.driver.read(at: Int64(hostOffset), into: compressed)
        if header.compressionType == 1 {
            try Zstd.decompress(UnsafeRawBufferPointer(compressed), into: cluster)
        } else {
            try Deflate.inflate(UnsafeRawBufferPointer(compressed), into: cluster)
        }
    }

    func readBacking(at offset: Int64, into target: UnsafeMutableRawBufferPointer) throws(BlockError) {
        guard let backing else {
            target.initializeMemory(as: UInt8.self, repeating: 0)
            return
        }
        // A backing image shorter than this one reads as zeroes past its end.
        let backingLength = try backing.driver.length()
        let inside = Int(max(0, min(Int64(target.count), backingLength - offset)))
        if inside > 0 { try backing.driver.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: target[0..<inside])) }
        if inside < target.count {
            UnsafeMutableRawBufferPointer(rebasing: target[inside...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    /// Going read-only writes back what is cached first; going read-write is refused for an
    /// image marked corrupt, as opening it read-write is.
    public func reopen(writable newValue: Bool) throws(BlockError) {
        if newValue {
            let features = try incompatibleFeaturesOnDisk()
            if header.version >= 3 && features & Qcow2Header.corruptBit != 0 {
                throw BlockError(.corrupt, "qcow2: Image is corrupt; cannot be opened read/write")
            }
        } else {
            try flush()
        }
        writable.store(newValue, ordering: .releasing)
    }

    /// The file's blocks: metadata and data alike count as the image's disk size.
    public func allocatedBytes() throws(BlockError) -> Int64? { try file.driver.allocatedBytes() }

    /// Remembers whether the graph holds write on the file: metadata is written only then.
    public func applyPermissions(_ request: PermissionRequest) throws(BlockError) {
        holdsWrite.store(request.held.contains(.write), ordering: .releasing)
    }

    /// Both children: a copy-on-write reads the backing image during its step.
    public func eventBegan(_ event: BlockEvent) {
        file.driver.eventBegan(event)
        dataFile?.driver.eventBegan(event)
        backing?.driver.eventBegan(event)
    }

    /// Ends the step on both children, as it began.
    public func eventEnded(_ event: BlockEvent) {
        file.driver.eventEnded(event)
        dataFile?.driver.eventEnded(event)
        backing?.driver.eventEnded(event)
    }

    /// The file: QEMU's bdrv_default_perms_for_storage — the metadata must not change under us,
    /// so write and resize are never shared, unless the user forced sharing (-U). The backing
    /// image: QEMU's bdrv_default_perms_for_cow — it is only read, consistently if the parents
    /// read so, and may be written or resized by others only if the parents share write.
    public func childPermissions(role: ChildRole, parentsNeed: PermissionRequest) -> PermissionRequest {
        // No parent (closed, or inactive for a migration hand-over): the format needs nothing
        // either, or an inactive source would keep a destination from activating.
        guard parentsNeed != .none else { return .none }
        if role == .backing {
            return PermissionRequest(held: parentsNeed.held.intersection(.consistentRead),
                                     unshared: parentsNeed.unshared.contains(.write) ? [.write, .resize] : [])
        }
        if role == .data {
            // QEMU's BDRV_CHILD_DATA: the parents' needs pass through, and nobody may resize the
            // file under the guest data; unlike the metadata's file, a reader shares writes to it,
            // as qemu-img's and qemu-io's readers do (checked in Qcow2DataFileTests).
            var request = parentsNeed
            if request.held.contains(.write) { request.held.insert(.resize) }
            if !forceShare { request.unshared.insert(.resize) }
            return request
        }
        var request = parentsNeed
        if request.held.contains(.write) { request.held.insert(.resize) }
        if !forceShare { request.unshared.formUnion([.write, .resize]) }
        return request
    }
}
