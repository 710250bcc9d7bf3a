// Qcow2Check: `blk check` for qcow2 (QEMU's qcow2_check_refcounts and check_oflag_copied). Every
// cluster the metadata references is counted — the header, each L1 table (active and snapshot),
// every L2 table and data cluster they reach (once per L1 that reaches them, as snapshots share
// them), compressed clusters' host clusters, the refcount table and blocks, the snapshot table —
// and compared with the refcount the image stores:
//
//   stored > counted   a leak: space wasted, no harm to data (repair: lower the refcount)
//   stored < counted   corruption: a cluster in use could be handed out again (repair, with
//                      -r all: raise the refcount)
//   COPIED set on an active L1 or L2 entry exactly when its cluster's refcount is 1, never on
//                      a compressed entry — otherwise corruption (-r all: set it right)
//   a reference past the end of the file, or unaligned: corruption, reported only
//
// Repairs go through the writer (Qcow2Allocation.swift), so they are ordered as every write is;
// refcounts first, then the COPIED flags judged by the repaired refcounts. A clean result of -r
// all clears the dirty and corrupt bits, as QEMU does.
import BlockLayer

public enum Qcow2Repair: Sendable { case leaks, all }

public struct Qcow2CheckResult: Sendable {
    public struct Mismatch: Sendable {
        public var cluster: UInt64
        public var refcount: UInt64
        public var references: UInt64
    }

    /// An active L1 or L2 entry whose COPIED bit disagrees with its cluster's refcount.
    public struct CopiedFlagError: Sendable {
        public var l2TableOffset: UInt64? // nil: an L1 entry
        public var index: Int
        public var entry: UInt64
        public var refcount: UInt64

        public var message: String {
            let hex = String(entry, radix: 16)
            if l2TableOffset == nil { return "OFLAG_COPIED L2 cluster: l1_index=\(index) l1_entry=\(hex) refcount=\(refcount)" }
            if entry & Qcow2Driver.compressedBit != 0 { return "OFLAG_COPIED compressed cluster: l2_entry=\(hex)" }
            return "OFLAG_COPIED data cluster: l2_entry=\(hex) refcount=\(refcount)"
        }
    }

    public var leaks: [Mismatch] = []
    public var refcountErrors: [Mismatch] = []
    public var copiedFlagErrors: [CopiedFlagError] = []
    /// References the check cannot repair: past the end of the file, unaligned, invalid tables.
    public var otherErrors: [String] = []
    public var leaksFixed = 0
    public var corruptionsFixed = 0
    public var totalClusters: UInt64 = 0
    /// Guest clusters the active tables allocate, and of those, how many do not follow the one
    /// before them in the file (fragmented) and how many are compressed — qemu-img's figures.
    public var allocatedClusters: UInt64 = 0
    public var fragmentedClusters: UInt64 = 0
    public var compressedClusters: UInt64 = 0
    public var imageEndOffset: UInt64 = 0

    public var corruptionCount: Int { refcountErrors.count + copiedFlagErrors.count + otherErrors.count }
}

extension Qcow2Driver {
    /// 2^28 clusters: 16 TiB of file in 64 KiB clusters, 3 GiB of counts.
    static let maxCheckedClusters: UInt64 = 1 << 28

    /// Counts references and compares them with the stored refcounts; with `repair`, fixes what
    /// it may (the image must be open read-write).
    public func check(repair: Qcow2Repair? = nil) throws(BlockError) -> Qcow2CheckResult {
        try writer.withLock { (state) throws(BlockError) in try checkAndRepair(repair, &state) }
    }

    func checkAndRepair(_ repair: Qcow2Repair?, _ state: inout Qcow2WriterState) throws(BlockError) -> Qcow2CheckResult {
        // Persistent dirty bitmaps (autoclear bit 0) own clusters this check does not count yet:
        // it would call them leaks, and a repair would free them.
        if header.autoclearFeatures & 1 != 0 && !state.autoclearCleared {
            throw BlockError(.unsupported, "qcow2: checking images with persistent dirty bitmaps is not supported by this build of blk")
        }
        // What this open still holds in memory goes to disk first, so the check sees it.
        try writeBackMetadata(&state)
        var result = try analyse(state)
        guard let repair else { return result }
        try prepareForWriting(&state)
        for leak in result.leaks { try setRefcount(ofCluster: leak.cluster, to: leak.references, &state) }
        result.leaksFixed = result.leaks.count
        guard repair == .all else {
            try writeBackMetadata(&state)
            return result
        }
        for error in result.refcountErrors { try setRefcount(ofCluster: error.cluster, to: error.references, &state) }
        try writeBackMetadata(&state)
        let recounted = try analyse(state)
        for error in recounted.copiedFlagErrors { try fixCopiedFlag(error, &state) }
        try writeBackMetadata(&state)
        result.corruptionsFixed = result.refcountErrors.count + recounted.copiedFlagErrors.count
        if try analyse(state).corruptionCount == 0 {
            let features = try incompatibleFeaturesOnDisk()
            if header.version >= 3 && features & (Qcow2Header.dirtyBit | Qcow2Header.corruptBit) != 0 {
                try file.during(.headerUpdate) { () throws(BlockError) in
                    try writeBigEndian(features & ~(Qcow2Header.dirtyBit | Qcow2Header.corruptBit), at: 72)
                    try file.driver.flush()
                }
            }
            dirtyBitCleared.store(true, ordering: .releasing)
            corruptionMarked.store(false, ordering: .releasing)
        }
        return result
    }

    private func fixCopiedFlag(_ error: Qcow2CheckResult.CopiedFlagError, _ state: inout Qcow2WriterState) throws(BlockError) {
        let fixed = error.entry & Self.compressedBit != 0 || error.refcount != 1
            ? error.entry & ~Self.copiedBit : error.entry | Self.copiedBit
        guard let table = error.l2TableOffset else {
            state.pendingL1[error.index] = fixed
            cache.withLock { $0.setL1Entry(fixed, at: error.index) }
            return
        }
        if !cache.withLock({ $0.setEntry(fixed, at: error.index, ofTableAt: table) }) {
            var entries = try l2Table(at: table)
            entries[error.index] = fixed
            cache.withLock { $0.insertDirty(entries, at: table) }
        }
    }

    /// The check itself, reading the image as it is on disk.
    private func analyse(_ state: Qcow2WriterState) throws(BlockError) -> Qcow2CheckResult {
        var result = Qcow2CheckResult()
        let clusterSize = UInt64(self.clusterSize)
        let fileLength = UInt64(try file.driver.length())
        let fileClusters = (fileLength + clusterSize - 1) / clusterSize
        // A count per cluster of the file: a (sparse) file too large for that is refused, not
        // allowed to exhaust memory.
        guard fileClusters <= Self.maxCheckedClusters else {
            throw BlockError(.unsupported, "qcow2: the image file has \(fileClusters) clusters, more than this check counts (\(Self.maxCheckedClusters))")
        }
        var references = [UInt32](repeating: 0, count: Int(fileClusters))

        func reference(_ offset: UInt64, bytes: UInt64, _ what: String) {
            guard bytes > 0 else { return }
            let (end, overflow) = offset.addingReportingOverflow(bytes)
            guard !overflow, end <= fileClusters * clusterSize else {
                result.otherErrors.append("ERROR \(what) at offset 0x\(String(offset, radix: 16)) is past the end of the file")
                return
            }
            for cluster in offset / clusterSize...(end - 1) / clusterSize where references[Int(cluster)] < .max {
                references[Int(cluster)] += 1
            }
        }

        let activeL1Size = cache.withLock { $0.l1.count }
        reference(0, bytes: clusterSize, "header")
        var l1Tables: [(offset: UInt64, entries: Int, name: String)] = [(state.l1TableOffset, activeL1Size, "active L1 table")]
        if header.snapshotCount > 0 {
            let snapshots = try Qcow2Snapshot.readTable(of: self)
            reference(header.snapshotsOffset, bytes: snapshots.tableBytes, "snapshot table")
            l1Tables += snapshots.entries.enumerated().map { ($1.l1TableOffset, Int($1.l1Size), "snapshot \($0 + 1) L1 table") }
        }
        // The active tables' entries, for the COPIED check once refcounts are known.
        var activeL1: [(index: Int, entry: UInt64)] = []
        var activeL2: [(table: UInt64, index: Int, entry: UInt64, host: UInt64)] = []
        var nextContiguous: UInt64 = 0
        func countAllocated(host: UInt64, compressed: Bool) {
            result.allocatedClusters += 1
            if compressed {
                // Fragmented by nature, as qemu-img counts them: neighbours share sectors.
                result.compressedClusters += 1
                result.fragmentedClusters += 1
                return
            }
            if nextContiguous != 0 && host != nextContiguous { result.fragmentedClusters += 1 }
            nextContiguous = host + clusterSize
        }
        for (tableNumber, (l1Offset, entries, name)) in l1Tables.enumerated() {
            reference(l1Offset, bytes: UInt64(entries) * 8, name)
            let (l1End, overflow) = l1Offset.addingReportingOverflow(UInt64(entries) * 8)
            guard l1Offset % clusterSize == 0, !overflow, l1End <= fileLength else {
                result.otherErrors.append("ERROR \(name) at offset 0x\(String(l1Offset, radix: 16)) is invalid")
                continue
            }
            let l1 = try Self.readBytes(file, at: l1Offset, count: entries * 8)
            for index in 0..<entries {
                let l1Entry = l1.bigEndian(UInt64.self, at: index * 8)
                let l2Offset = l1Entry & Self.offsetMask
                guard l2Offset != 0 else { continue }
                guard l2Offset % clusterSize == 0, l2Offset + clusterSize <= fileLength else {
                    result.otherErrors.append("ERROR L2 table at offset 0x\(String(l2Offset, radix: 16)) (\(name) entry \(index)) is invalid")
                    continue
                }
                if tableNumber == 0 { activeL1.append((index, l1Entry)) }
                nextContiguous = 0 // as qemu-img, fragmentation is counted within each L2 table
                reference(l2Offset, bytes: clusterSize, "L2 table")
                let l2 = try Self.readBytes(file, at: l2Offset, count: self.clusterSize)
                for entryIndex in 0..<l2Entries {
                    let entry = l2.bigEndian(UInt64.self, at: entryIndex * 8)
                    let cluster = UInt64(index) * UInt64(l2Entries) + UInt64(entryIndex)
                    var host: UInt64 = 0
                    switch try? mapping(ofEntry: entry, cluster: cluster) {
                    case .data(let offset)?:
                        host = offset
                        reference(offset, bytes: clusterSize, "data cluster")
                        if tableNumber == 0 { countAllocated(host: offset, compressed: false) }
                    case .compressed(let offset, let count)?:
                        reference(offset, bytes: UInt64(count), "compressed cluster")
                        if tableNumber == 0 { countAllocated(host: offset, compressed: true) }
                        if tableNumber == 0 && entry & Self.copiedBit != 0 { activeL2.append((l2Offset, entryIndex, entry, 0)) }
                    case .zeroes?:
                        // A preallocated zero cluster still owns its host cluster.
                        host = entry & Self.offsetMask
                        if host != 0 { reference(host, bytes: clusterSize, "zero cluster") }
                        if host != 0 && tableNumber == 0 { countAllocated(host: host, compressed: false) }
                    case .unallocated?:
                        break
                    case nil:
                        result.otherErrors.append("ERROR offset=0x\(String(entry & Self.offsetMask, radix: 16)): Cluster is not properly aligned; L2 entry corrupted")
                    }
                    if tableNumber == 0 && host != 0 { activeL2.append((l2Offset, entryIndex, entry, host)) }
                }
            }
        }

        let (refcounts, refcountTableErrors) = try storedRefcounts(state, fileClusters: fileClusters,
                                                                   reference: { reference($0, bytes: $1, $2) })
        result.otherErrors += refcountTableErrors
        var highestUsedCluster: UInt64?
        for cluster in 0..<fileClusters {
            let stored = refcounts[Int(cluster)], counted = UInt64(references[Int(cluster)])
            if stored > 0 || counted > 0 { highestUsedCluster = cluster }
            if stored > counted {
                result.leaks.append(.init(cluster: cluster, refcount: stored, references: counted))
            } else if stored < counted {
                result.refcountErrors.append(.init(cluster: cluster, refcount: stored, references: counted))
            }
        }
        func stored(_ offset: UInt64) -> UInt64 {
            let cluster = Int(offset / clusterSize)
            return cluster < refcounts.count ? refcounts[cluster] : 0
        }
        for (index, entry) in activeL1 where (stored(entry & Self.offsetMask) == 1) != (entry & Self.copiedBit != 0) {
            result.copiedFlagErrors.append(.init(l2TableOffset: nil, index: index, entry: entry, refcount: stored(entry & Self.offsetMask)))
        }
        for (table, index, entry, host) in activeL2 {
            let isCompressed = entry & Self.compressedBit != 0
            if isCompressed || (stored(host) == 1) != (entry & Self.copiedBit != 0) {
                result.copiedFlagErrors.append(.init(l2TableOffset: table, index: index, entry: entry,
                                                     refcount: isCompressed ? 0 : stored(host)))
            }
        }
        result.totalClusters = (UInt64(try length()) + clusterSize - 1) / clusterSize
        // As qemu-img: the end of the last cluster in use, which the file may stop short of.
        result.imageEndOffset = highestUsedCluster.map { ($0 + 1) * clusterSize } ?? 0
        return result
    }

    /// The refcount of every cluster of the file, as stored (any refcount width); the refcount
    /// table and blocks are counted as references on the way.
    private func storedRefcounts(_ state: Qcow2WriterState, fileClusters: UInt64,
                                 reference: (UInt64, UInt64, String) -> Void) throws(BlockError) -> ([UInt64], [String]) {
        let clusterSize = UInt64(self.clusterSize)
        let width = refcountWidth
        let perBlock = width.entriesPerBlock(clusterSize: self.clusterSize)
        let tableBytes = state.refcountTableClusters * clusterSize
        reference(state.refcountTableOffset, tableBytes, "refcount table")
        let table = try Self.readBytes(file, at: state.refcountTableOffset, count: Int(tableBytes))
        var refcounts = [UInt64](repeating: 0, count: Int(fileClusters))
        var errors: [String] = []
        let fileLength = UInt64(try file.driver.length())
        for tableIndex in 0..<table.count / 8 {
            let block = table.bigEndian(UInt64.self, at: tableIndex * 8) & Self.offsetMask
            guard block != 0 else { continue }
            guard block % clusterSize == 0, block + clusterSize <= fileLength else {
                errors.append("ERROR refcount block \(tableIndex) at offset 0x\(String(block, radix: 16)) is unaligned or past the end of the file")
                continue
            }
            reference(block, clusterSize, "refcount block")
            let first = UInt64(tableIndex) * perBlock
            guard first < fileClusters else { continue }
            let bytes = try Self.readBytes(file, at: block, count: Int(clusterSize))
            for index in 0..<min(perBlock, fileClusters - first) {
                refcounts[Int(first + index)] = width.value(in: bytes, at: Int(index))
            }
        }
        return (refcounts, errors)
    }
}
