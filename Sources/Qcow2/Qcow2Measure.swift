// Qcow2Measure: the size of a qcow2 image before it is made (QEMU's qcow2_measure and
// qcow2_calc_prealloc_size). The fully allocated size is the header cluster, an L2 table for
// every guest cluster, the L1 table, and the refcount structures that count all of it and
// themselves; the required size keeps the metadata of that and only the data clusters the
// input stores. An image created with these options and filled by a copy stays within it.
import BlockGraph

extension Qcow2Format {
    /// The options QEMU's qcow2 create takes that are read here or change nothing in the size.
    static let measuredOptions: Set<String> = [
        "cluster_size", "compat", "refcount_bits", "preallocation", "extended_l2", "backing_file", "backing_fmt",
        "lazy_refcounts", "compression_type",
    ]

    /// qemu-img measure's figures for a qcow2 image with `options` holding `content`: options
    /// are checked in QEMU's order and with its words.
    public static func measure(_ content: MeasuredContent, options: FormatOptions) throws(BlockError) -> SizeMeasurement {
        try options.refuseUnknown(measuredOptions, format: formatName)
        let extendedL2 = try options.flag("extended_l2") ?? false
        let clusterSize = try options.size("cluster_size") ?? Int64(defaultClusterBytes)
        guard clusterSize.nonzeroBitCount == 1, (512...(2 << 20)).contains(clusterSize) else {
            throw BlockError(.invalidRequest, "Cluster size must be a power of two between 512 and 2048k")
        }
        if extendedL2 && clusterSize < 16384 {
            throw BlockError(.invalidRequest, "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
        }
        let version: Int
        switch options.string("compat") {
        case nil, "1.1": version = 3
        case "0.10": version = 2
        case let other?: throw BlockError(.invalidRequest, "Invalid compatibility level: '\(other)'")
        }
        let refcountBits = try options.number("refcount_bits") ?? 16
        guard (1...64).contains(refcountBits), refcountBits.nonzeroBitCount == 1 else {
            throw BlockError(.invalidRequest, "Refcount width must be a power of two and may not exceed 64 bits")
        }
        guard version >= 3 || refcountBits == 16 else {
            throw BlockError(.invalidRequest,
                             "Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
        }
        let preallocation = try options.choice("preallocation", of: Preallocation.self) ?? .off
        _ = try options.flag("lazy_refcounts")
        if let compression = options.string("compression_type"), !["zlib", "zstd"].contains(compression) {
            throw BlockError(.invalidRequest, "Invalid parameter value '\(compression)' for 'compression_type': expected zlib or zstd")
        }

        let virtualSize = try content.sectorAlignedSize()
        let l2EntryBytes: Int64 = extendedL2 ? 16 : 8
        let (roundedUp, overflow) = virtualSize.addingReportingOverflow(clusterSize - 1)
        guard !overflow,
              (roundedUp / clusterSize + clusterSize / l2EntryBytes - 1) / (clusterSize / l2EntryBytes) * 8 <= Int64(Qcow2Header.maxL1Bytes) else {
            throw BlockError(.invalidRequest, "The image size is too large (try using a larger cluster size)")
        }
        // From here on every figure is bounded by the L1 table's limit (at most 2^61 guest bytes,
        // plus metadata a fraction of that): none can overflow.
        let alignedSize = roundedUp / clusterSize * clusterSize

        var dataBytes: Int64 = 0
        var bitmapBytes: Int64?
        if case .copy(let image) = content {
            // A new backing file may share nothing with the input: every cluster is written.
            dataBytes = options.string("backing_file") != nil ? alignedSize : try image.dataBytes(inClustersOf: clusterSize)
            if version >= 3, let bitmaps = try image.persistentBitmaps() {
                bitmapBytes = bitmapsSize(bitmaps, virtualSize: virtualSize, clusterSize: clusterSize)
            }
        }
        if preallocation == .falloc || preallocation == .full { dataBytes = alignedSize }
        let fullyAllocated = preallocatedSize(alignedSize, clusterSize: clusterSize, refcountBits: refcountBits, l2EntryBytes: l2EntryBytes)
        return SizeMeasurement(required: fullyAllocated - alignedSize + dataBytes, fullyAllocated: fullyAllocated, bitmaps: bitmapBytes)
    }

    /// The file of an image with every guest cluster allocated (QEMU's qcow2_calc_prealloc_size):
    /// header, whole L2 tables, the L1 table in whole clusters, refcount structures, data.
    static func preallocatedSize(_ alignedSize: Int64, clusterSize: Int64, refcountBits: Int64, l2EntryBytes: Int64) -> Int64 {
        func roundUp(_ value: Int64, _ unit: Int64) -> Int64 { (value + unit - 1) / unit * unit }
        let l2Entries = roundUp(alignedSize / clusterSize, clusterSize / l2EntryBytes)
        let l1Entries = roundUp(l2Entries * l2EntryBytes / clusterSize, clusterSize / 8)
        let metadata = clusterSize + l2Entries * l2EntryBytes + l1Entries * 8
        let counted = (metadata + alignedSize) / clusterSize
        return metadata + refcountStructureBytes(counting: counted, clusterSize: clusterSize, refcountBits: refcountBits) + alignedSize
    }

    /// The refcount table and blocks that count `clusters` clusters and themselves: grown until
    /// they cover what they add (QEMU's qcow2_refcount_metadata_size).
    static func refcountStructureBytes(counting clusters: Int64, clusterSize: Int64, refcountBits: Int64) -> Int64 {
        let perBlock = clusterSize * 8 / refcountBits, perTableCluster = clusterSize / 8
        var blocks: Int64 = 0, tableClusters: Int64 = 0, total: Int64 = 0, previous: Int64
        repeat {
            previous = total
            blocks = (clusters + tableClusters + blocks + perBlock - 1) / perBlock
            tableClusters = (blocks + perTableCluster - 1) / perTableCluster
            total = clusters + blocks + tableClusters
        } while total != previous
        return (blocks + tableClusters) * clusterSize
    }

    /// The room `bitmaps` take when copied (QEMU's qcow2_get_persistent_dirty_bitmap_size): each
    /// bitmap's clusters and its table, all present, and the directory of their entries.
    static func bitmapsSize(_ bitmaps: [PersistentBitmap], virtualSize: Int64, clusterSize: Int64) -> Int64 {
        func divideRoundingUp(_ value: Int64, _ unit: Int64) -> Int64 { value / unit + (value % unit == 0 ? 0 : 1) }
        var bytes: Int64 = 0, directoryBytes: Int64 = 0
        for bitmap in bitmaps {
            let bitmapClusters = divideRoundingUp(divideRoundingUp(divideRoundingUp(virtualSize, bitmap.granularity), 8), clusterSize)
            bytes += bitmapClusters * clusterSize + divideRoundingUp(bitmapClusters * 8, clusterSize) * clusterSize
            directoryBytes += divideRoundingUp(24 + Int64(bitmap.name.utf8.count), 8) * 8
        }
        return bytes + divideRoundingUp(directoryBytes, clusterSize) * clusterSize
    }
}
