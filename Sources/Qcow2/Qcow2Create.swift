// Qcow2Create: a new qcow2 v3 image, laid out as qemu-img lays one out — the header cluster
// (header, extensions, backing name), the refcount table, the refcount blocks covering every
// cluster the image uses, the L1 table, and with preallocation each L2 table followed by the
// data clusters it maps — so `qemu-img check` finds it clean.
// Like every creation (ImageCreation.swift), an image some process holds is never truncated,
// and every byte goes through the new file's FileDriver, the one fenced path.
import BlockGraph
import BlockLocking

extension Qcow2Format {
    /// qcow2 images read through to a backing file.
    public static var storesBackingFile: Bool { true }

    /// qemu-img 7.2's words for what `create` makes: v3, zlib, 16-bit refcounts, no lazy
    /// refcounts, whatever was asked.
    public static func creationSummary(_ options: ImageCreateOptions) -> String {
        let extendedL2 = (try? options.formatOptions?.flag("extended_l2")) ?? false
        var words = ["cluster_size=\(options.clusterSize ?? defaultClusterBytes)", "extended_l2=\(extendedL2 ? "on" : "off")"]
        if options.preallocation != .off { words.append("preallocation=\(options.preallocation)") }
        words += ["compression_type=zlib", "size=\(options.virtualSize)"]
        if let backingFile = options.backingFile { words.append("backing_file=\(backingFile)") }
        if let backingFormat = options.backingFormat { words.append("backing_fmt=\(backingFormat)") }
        words += dataFileSummary(options)
        return (words + ["lazy_refcounts=off", "refcount_bits=16"]).joined(separator: " ")
    }

    /// The cluster size of an image made without one asked for, as qemu-img's.
    static let defaultClusterBytes = 65536

    /// Creates (or replaces) `path` as a qcow2 image of `options.virtualSize` bytes (64 KiB
    /// clusters unless asked), reading through to `options.backingFile` (a name relative to the
    /// image's folder, or absolute). With preallocation other than `.off` every guest cluster
    /// is mapped to a host cluster up front (`metadata`: left to the file's holes; `falloc`:
    /// reserved; `full`: written with zeroes).
    public static func create(at path: String, options: ImageCreateOptions) throws(BlockError) {
        let clusterSize = options.clusterSize ?? defaultClusterBytes, virtualSize = options.virtualSize
        let backingFile = options.backingFile, backingFormat = options.backingFormat
        try options.formatOptions?.refuseUnknown(["extended_l2", "data_file", "data_file_raw"], format: formatName)
        let dataFile = try dataFileOptions(options)
        // QEMU's rule: a raw data file reads as the disk only if every cluster is mapped.
        let preallocation = dataFile?.raw == true && options.preallocation == .off ? Preallocation.metadata : options.preallocation
        guard clusterSize.nonzeroBitCount == 1, (512...(2 << 20)).contains(clusterSize) else {
            throw BlockError(.invalidRequest, "Cluster size must be a power of two between 512 and 2048k")
        }
        let extendedL2 = try options.formatOptions?.flag("extended_l2") ?? false
        if extendedL2 && clusterSize < 16384 {
            throw BlockError(.invalidRequest, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        }
        guard virtualSize >= 0 else { throw BlockError(.invalidRequest, "Invalid image size specified") }
        if let backingFile, backingFile.utf8.count > 1023 { throw BlockError(.invalidRequest, "Backing file name too long") }
        if backingFile != nil && preallocation != .off && !extendedL2 {
            throw BlockError(.invalidRequest, "Backing file and preallocation can only be used at the same time if extended_l2 is on")
        }
        let headerBytes = 112 + 8 + (backingFormat.map { 8 + ($0.utf8.count + 7) / 8 * 8 } ?? 0) + (backingFile?.utf8.count ?? 0)
            + (dataFile.map { 8 + ($0.name.utf8.count + 7) / 8 * 8 } ?? 0)
        guard headerBytes <= clusterSize else {
            throw BlockError(.invalidRequest, "the header and backing file name do not fit in one \(clusterSize)-byte cluster")
        }
        let layout = try Layout(virtualSize: UInt64(virtualSize), clusterSize: UInt64(clusterSize), preallocated: preallocation != .off,
                                extendedL2: extendedL2, externalData: dataFile != nil)

        // The data file first, made or emptied as qemu-img makes it (QEMU's bdrv_co_create_file),
        // with the preallocation asked for: the image that names it comes after.
        if let dataFile {
            let data = try createImageFile(at: dataFile.name, byteCount: Int64(virtualSize), locking: options.locking, lease: options.lease)
            try data.preallocate(0..<Int64(virtualSize), preallocation)
            try data.flush()
        }
        let file = try createImageFile(at: path, byteCount: Int64(layout.fileBytes), locking: options.locking, lease: options.lease)
        func write(_ bytes: [UInt8], at offset: UInt64) throws(BlockError) {
            try bytes.withUnsafeBytes { buffer in
                Result { () throws(BlockError) in try file.write(at: Int64(offset), from: buffer) }
            }.get()
        }
        // Data first (full preallocation writes zeroes over the whole range), then the tables,
        // the header last: a crash leaves no file that claims to be a qcow2 image.
        if dataFile == nil {
            try file.preallocate(Int64(layout.firstL2TableCluster * layout.clusterSize)..<Int64(layout.fileBytes), preallocation)
        }
        try layout.writeTables(write)
        try file.flush()
        try write(layout.headerCluster(backingFile: backingFile, backingFormat: backingFormat, dataFile: dataFile), at: 0)
        try file.flush()
    }

    /// Where each piece of a new image goes, in clusters.
    struct Layout {
        let clusterSize: UInt64
        let virtualSize: UInt64
        let l1Entries: UInt64
        let refcountTableClusters: UInt64
        let refcountBlocks: UInt64
        let l1Clusters: UInt64
        /// Preallocated: one L2 table per L1 entry, each followed by the data clusters it maps.
        let preallocated: Bool
        /// 16-byte L2 entries with subcluster bitmaps; preallocated ones have every subcluster
        /// unallocated, as QEMU's, so they read through to a backing image.
        let extendedL2: Bool
        /// Guest data in an external data file: preallocated L2 tables lie side by side and map
        /// each cluster to its guest offset there.
        let externalData: Bool

        init(virtualSize: UInt64, clusterSize: UInt64, preallocated: Bool, extendedL2: Bool = false,
             externalData: Bool = false) throws(BlockError) {
            self.clusterSize = clusterSize
            self.virtualSize = virtualSize
            self.preallocated = preallocated
            self.extendedL2 = extendedL2
            self.externalData = externalData
            let bytesPerL1Entry = clusterSize * (clusterSize / (extendedL2 ? 16 : 8))
            l1Entries = (virtualSize + bytesPerL1Entry - 1) / bytesPerL1Entry
            guard l1Entries * 8 <= Qcow2Header.maxL1Bytes else { throw BlockError(.invalidRequest, "Image size too large for this cluster size") }
            l1Clusters = max(1, (l1Entries * 8 + clusterSize - 1) / clusterSize)
            // 16-bit refcounts: a block covers clusterSize / 2 clusters. Grow the table and the
            // blocks until they cover themselves and everything else.
            let perBlock = clusterSize / 2
            let mapped = preallocated ? l1Entries + (externalData ? 0 : (virtualSize + clusterSize - 1) / clusterSize) : 0
            var tableClusters: UInt64 = 1, blocks: UInt64 = 1
            while true {
                let total = 1 + tableClusters + blocks + l1Clusters + mapped
                let neededBlocks = (total + perBlock - 1) / perBlock
                let neededTable = max(1, (neededBlocks * 8 + clusterSize - 1) / clusterSize)
                if neededBlocks == blocks && neededTable == tableClusters { break }
                blocks = neededBlocks
                tableClusters = neededTable
            }
            guard tableClusters * clusterSize <= Qcow2Header.maxRefcountTableBytes else {
                throw BlockError(.invalidRequest, "Image size too large for this cluster size (the refcount table would pass 8 MiB)")
            }
            refcountTableClusters = tableClusters
            refcountBlocks = blocks
        }

        var l2Entries: UInt64 { clusterSize / l2EntryBytes }
        var l2EntryBytes: UInt64 { extendedL2 ? 16 : 8 }
        var guestClusters: UInt64 { (virtualSize + clusterSize - 1) / clusterSize }
        var refcountTableOffset: UInt64 { clusterSize }
        var firstRefcountBlock: UInt64 { refcountTableOffset + refcountTableClusters * clusterSize }
        var l1Offset: UInt64 { firstRefcountBlock + refcountBlocks * clusterSize }
        var firstL2TableCluster: UInt64 { l1Offset / clusterSize + l1Clusters }
        var clusterCount: UInt64 { firstL2TableCluster + (preallocated ? l1Entries + (externalData ? 0 : guestClusters) : 0) }
        var fileBytes: UInt64 { clusterCount * clusterSize }

        /// The L2 table for L1 entry `index`, and how many data clusters follow it.
        func l2Table(_ index: UInt64) -> (cluster: UInt64, dataClusters: UInt64) {
            (firstL2TableCluster + index * (externalData ? 1 : l2Entries + 1), min(l2Entries, guestClusters - index * l2Entries))
        }

        /// The refcount table, the refcount blocks (every used cluster counted once), the L1
        /// table and, preallocated, the L2 tables; an all-zero table is left to the file's zeroes.
        func writeTables(_ write: ([UInt8], UInt64) throws(BlockError) -> Void) throws(BlockError) {
            var table = [UInt8](repeating: 0, count: Int(refcountTableClusters * clusterSize))
            for block in 0..<refcountBlocks { table.setBigEndian(firstRefcountBlock + block * clusterSize, at: Int(block * 8)) }
            try write(table, refcountTableOffset)
            let perBlock = clusterSize / 2
            for block in 0..<refcountBlocks {
                var bytes = [UInt8](repeating: 0, count: Int(clusterSize))
                for index in 0..<min(perBlock, clusterCount - block * perBlock) { bytes.setBigEndian(UInt16(1), at: Int(index * 2)) }
                try write(bytes, firstRefcountBlock + block * clusterSize)
            }
            guard preallocated else { return }
            let copied: UInt64 = 1 << 63
            var l1 = [UInt8](repeating: 0, count: Int(l1Entries * 8))
            for index in 0..<l1Entries {
                let (tableCluster, dataClusters) = l2Table(index)
                l1.setBigEndian(tableCluster * clusterSize | copied, at: Int(index * 8))
                var l2 = [UInt8](repeating: 0, count: Int(clusterSize))
                for entry in 0..<dataClusters {
                    let host = externalData ? (index * l2Entries + entry) * clusterSize : (tableCluster + 1 + entry) * clusterSize
                    l2.setBigEndian(host | copied, at: Int(entry * l2EntryBytes))
                }
                try write(l2, tableCluster * clusterSize)
            }
            try write(l1, l1Offset)
        }

        func headerCluster(backingFile: String?, backingFormat: String?, dataFile: (name: String, raw: Bool)? = nil) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: Int(clusterSize))
            bytes.replaceSubrange(0..<4, with: FormatProbe.qcow2Magic)
            bytes.setBigEndian(UInt32(3), at: 4)
            bytes.setBigEndian(UInt32(clusterSize.trailingZeroBitCount), at: 20)
            bytes.setBigEndian(virtualSize, at: 24)
            bytes.setBigEndian(UInt32(l1Entries), at: 36)
            if extendedL2 { bytes.setBigEndian(Qcow2Header.extendedL2Bit, at: 72) }
            bytes.setBigEndian(l1Offset, at: 40)
            bytes.setBigEndian(refcountTableOffset, at: 48)
            bytes.setBigEndian(UInt32(refcountTableClusters), at: 56)
            bytes.setBigEndian(UInt32(4), at: 96)    // refcount_order: 16-bit refcounts
            bytes.setBigEndian(UInt32(112), at: 100) // header_length, with compression_type (zlib)
            var offset = 112
            if let backingFormat {
                let name = Array(backingFormat.utf8)
                bytes.setBigEndian(Qcow2Header.backingFormatExtension, at: offset)
                bytes.setBigEndian(UInt32(name.count), at: offset + 4)
                bytes.replaceSubrange(offset + 8..<offset + 8 + name.count, with: name)
                offset += 8 + (name.count + 7) / 8 * 8
            }
            if let dataFile {
                let name = Array(dataFile.name.utf8)
                bytes.setBigEndian(Qcow2Header.externalDataFileBit, at: 72)
                if dataFile.raw { bytes.setBigEndian(Qcow2Header.rawExternalDataBit, at: 88) }
                bytes.setBigEndian(Qcow2Header.dataFileExtension, at: offset)
                bytes.setBigEndian(UInt32(name.count), at: offset + 4)
                bytes.replaceSubrange(offset + 8..<offset + 8 + name.count, with: name)
                offset += 8 + (name.count + 7) / 8 * 8
            }
            offset += 8 // the end-of-extensions marker: type 0, length 0
            if let backingFile {
                let name = Array(backingFile.utf8)
                bytes.setBigEndian(UInt64(offset), at: 8)
                bytes.setBigEndian(UInt32(name.count), at: 16)
                bytes.replaceSubrange(offset..<offset + name.count, with: name)
            }
            return bytes
        }
    }
}
