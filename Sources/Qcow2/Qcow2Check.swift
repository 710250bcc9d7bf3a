// Qcow2Check: `blk check` for qcow2 (QEMU's qcow2_check_refcounts). Every cluster the metadata
// references is counted — the header, each L1 table (active and snapshot), every L2 table and
// data cluster they reach (once per L1 that reaches them, as snapshots share them), compressed
// clusters' host clusters, the refcount table and blocks, the snapshot table — and compared with
// the refcount the image stores:
//
//   stored > counted   a leak: space wasted, no harm to data (repairable: lower the refcount)
//   stored < counted   corruption: a cluster in use could be handed out again
//   a reference past the end of the file, or unaligned: corruption
import BlockLayer

public struct Qcow2CheckResult: Sendable {
    public struct Mismatch: Sendable {
        public var cluster: UInt64
        public var refcount: UInt64
        public var references: UInt64
    }

    public var leaks: [Mismatch] = []
    public var corruptions: [String] = []
    public var leaksFixed = 0
    public var totalClusters: UInt64 = 0
    public var allocatedClusters: UInt64 = 0
    public var imageEndOffset: UInt64 = 0
}

extension Qcow2Driver {
    /// Counts references and compares them with the stored refcounts; with `repairLeaks`, lowers
    /// each leaked cluster's refcount to its reference count (the image must be open read-write).
    public func check(repairLeaks: Bool) throws(BlockError) -> Qcow2CheckResult {
        var result = Qcow2CheckResult()
        let clusterSize = UInt64(header.clusterSize)
        let fileLength = UInt64(try file.driver.length())
        let fileClusters = (fileLength + clusterSize - 1) / clusterSize
        var references = [UInt32](repeating: 0, count: Int(fileClusters))

        func reference(_ offset: UInt64, bytes: UInt64, _ what: String) {
            guard bytes > 0 else { return }
            guard offset + bytes <= fileClusters * clusterSize else {
                result.corruptions.append("ERROR \(what) at offset 0x\(String(offset, radix: 16)) is past the end of the file")
                return
            }
            for cluster in offset / clusterSize...(offset + bytes - 1) / clusterSize { references[Int(cluster)] += 1 }
        }

        reference(0, bytes: clusterSize, "header")
        var l1Tables: [(offset: UInt64, entries: Int, name: String)] = [(header.l1TableOffset, Int(header.l1Size), "active L1 table")]
        if header.snapshotCount > 0 {
            let (snapshots, tableBytes) = try snapshotL1Tables()
            reference(header.snapshotsOffset, bytes: tableBytes, "snapshot table")
            l1Tables += snapshots
        }
        for (l1Offset, entries, name) in l1Tables {
            reference(l1Offset, bytes: UInt64(entries) * 8, name)
            guard l1Offset % clusterSize == 0, l1Offset + UInt64(entries) * 8 <= fileLength else {
                result.corruptions.append("ERROR \(name) at offset 0x\(String(l1Offset, radix: 16)) is invalid")
                continue
            }
            let l1 = try Self.readBytes(file, at: l1Offset, count: entries * 8)
            for index in 0..<entries {
                let l2Offset = l1.bigEndian(UInt64.self, at: index * 8) & Self.offsetMask
                guard l2Offset != 0 else { continue }
                guard l2Offset % clusterSize == 0, l2Offset + clusterSize <= fileLength else {
                    result.corruptions.append("ERROR L2 table at offset 0x\(String(l2Offset, radix: 16)) (\(name) entry \(index)) is invalid")
                    continue
                }
                reference(l2Offset, bytes: clusterSize, "L2 table")
                let l2 = try Self.readBytes(file, at: l2Offset, count: header.clusterSize)
                for entryIndex in 0..<header.l2Entries {
                    let entry = l2.bigEndian(UInt64.self, at: entryIndex * 8)
                    let cluster = UInt64(index) * UInt64(header.l2Entries) + UInt64(entryIndex)
                    switch try? Self.mapping(ofEntry: entry, cluster: cluster, header: header) {
                    case .data(let host)?:
                        reference(host, bytes: clusterSize, "data cluster")
                    case .compressed(let host, let count)?:
                        reference(host, bytes: UInt64(count), "compressed cluster")
                    case .zeroes?:
                        // A preallocated zero cluster still owns its host cluster.
                        let host = entry & Self.offsetMask
                        if host != 0 { reference(host, bytes: clusterSize, "zero cluster") }
                    case .unallocated?:
                        break
                    case nil:
                        result.corruptions.append("ERROR offset=0x\(String(entry & Self.offsetMask, radix: 16)): Cluster is not properly aligned; L2 entry corrupted")
                    }
                }
            }
        }

        let refcounts = try storedRefcounts(fileClusters: fileClusters, reference: { reference($0, bytes: $1, $2) })
        for cluster in 0..<fileClusters {
            let stored = refcounts[Int(cluster)], counted = UInt64(references[Int(cluster)])
            if counted > 0 { result.allocatedClusters += 1 }
            if stored > counted {
                result.leaks.append(.init(cluster: cluster, refcount: stored, references: counted))
            } else if stored < counted {
                result.corruptions.append("ERROR cluster \(cluster) refcount=\(stored) reference=\(counted)")
            }
        }
        result.totalClusters = (header.virtualSize + clusterSize - 1) / clusterSize
        result.imageEndOffset = fileLength

        if repairLeaks && !result.leaks.isEmpty {
            guard header.refcountOrder == 4 else {
                throw BlockError(.unsupported, "repairing \(1 << header.refcountOrder)-bit refcounts is not supported by this build of blk yet")
            }
            for leak in result.leaks { try storeRefcount(UInt16(leak.references), ofCluster: leak.cluster) }
            try file.driver.flush()
            result.leaksFixed = result.leaks.count
        }
        return result
    }

    /// The refcount of every cluster of the file, as stored (any refcount width); the refcount
    /// table and blocks are counted as references on the way.
    private func storedRefcounts(fileClusters: UInt64, reference: (UInt64, UInt64, String) -> Void) throws(BlockError) -> [UInt64] {
        let clusterSize = UInt64(header.clusterSize)
        let bits = 1 << Int(header.refcountOrder)
        let perBlock = clusterSize * 8 / UInt64(bits)
        let tableBytes = UInt64(header.refcountTableClusters) * clusterSize
        reference(header.refcountTableOffset, tableBytes, "refcount table")
        let table = try Self.readBytes(file, at: header.refcountTableOffset, count: Int(tableBytes))
        var refcounts = [UInt64](repeating: 0, count: Int(fileClusters))
        let fileLength = UInt64(try file.driver.length())
        for tableIndex in 0..<table.count / 8 {
            let block = table.bigEndian(UInt64.self, at: tableIndex * 8) & Self.offsetMask
            guard block != 0, block % clusterSize == 0, block + clusterSize <= fileLength else { continue }
            reference(block, clusterSize, "refcount block")
            let first = UInt64(tableIndex) * perBlock
            guard first < fileClusters else { continue }
            let bytes = try Self.readBytes(file, at: block, count: Int(clusterSize))
            for index in 0..<min(perBlock, fileClusters - first) {
                refcounts[Int(first + index)] = Self.refcount(in: bytes, index: Int(index), bits: bits)
            }
        }
        return refcounts
    }

    static func refcount(in block: [UInt8], index: Int, bits: Int) -> UInt64 {
        switch bits {
        case 64: return block.bigEndian(UInt64.self, at: index * 8)
        case 32: return UInt64(block.bigEndian(UInt32.self, at: index * 4))
        case 16: return UInt64(block.bigEndian(UInt16.self, at: index * 2))
        case 8: return UInt64(block[index])
        default:
            // 1, 2 or 4 bits: packed, lowest-numbered entry in the least significant bits.
            let perByte = 8 / bits
            return UInt64(block[index / perByte] >> UInt8((index % perByte) * bits)) & ((1 << UInt64(bits)) - 1)
        }
    }

    /// Snapshot L1 tables from the snapshot table (qcow2.rst, "Snapshots"), and its size.
    private func snapshotL1Tables() throws(BlockError) -> ([(offset: UInt64, entries: Int, name: String)], UInt64) {
        let fileLength = UInt64(try file.driver.length())
        let available = Int(min(fileLength - min(header.snapshotsOffset, fileLength), 64 << 20))
        let table = try Self.readBytes(file, at: header.snapshotsOffset, count: available)
        var tables: [(offset: UInt64, entries: Int, name: String)] = []
        var offset = 0
        for number in 0..<Int(header.snapshotCount) {
            guard offset + 40 <= table.count else {
                throw BlockError(.corrupt, "qcow2: the snapshot table is truncated at snapshot \(number)")
            }
            let l1Offset = table.bigEndian(UInt64.self, at: offset)
            let l1Size = Int(table.bigEndian(UInt32.self, at: offset + 8))
            let idSize = Int(table.bigEndian(UInt16.self, at: offset + 12))
            let nameSize = Int(table.bigEndian(UInt16.self, at: offset + 14))
            let extraSize = Int(table.bigEndian(UInt32.self, at: offset + 36))
            let entryBytes = 40 + extraSize + idSize + nameSize
            guard offset + entryBytes <= table.count, UInt64(l1Size) * 8 <= Qcow2Header.maxL1Bytes else {
                throw BlockError(.corrupt, "qcow2: snapshot \(number) runs past the snapshot table")
            }
            tables.append((l1Offset, l1Size, "snapshot \(number + 1) L1 table"))
            offset += (entryBytes + 7) / 8 * 8
        }
        return (tables, UInt64(offset))
    }
}
