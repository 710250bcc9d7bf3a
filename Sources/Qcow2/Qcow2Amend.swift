// Qcow2Amend: `qemu-img amend` for qcow2 (QEMU's qcow2_amend_options) — compat=0.10|1.1,
// lazy_refcounts, refcount_bits and size — with QEMU's words for every refusal. Every check is
// made before anything changes, so a refused amend leaves the image as it was; then the steps run
// in an order where each one alone is crash-safe:
//
//   1. size          the writer's resize (Qcow2Resize.swift), while this open's view of the
//                    format still holds;
//   2. downgrade,    zero clusters, which version 2 cannot express, become what it can through
//      first half   the writer (crash-safe as every write is): with a backing file a cluster of
//                    zeroes, without one an unallocated cluster; written back and flushed. The
//                    image is still version 3 and reads the same;
//   3. upgrade       the header rewritten as version 3 (Qcow2VersionChange.swift);
//   4. refcount_bits new refcount structures, then one header write (Qcow2RefcountOrder.swift);
//   5. lazy_refcounts  compatible_features, bytes 80–87, one write inside one sector;
//   6. downgrade     the header rewritten as version 2 (Qcow2VersionChange.swift).
//
// From step 3 on this open's geometry and features are out of date, so it writes nothing more
// (`amended`): the caller closes it, and an open after sees the amended image. A crash between
// steps leaves the image as the steps before made it — options partly amended, never corrupt.
import BlockGraph

/// The options `amend` was asked for, checked, before anything changes.
private struct AmendRequest {
    var version: UInt32?
    var lazyRefcounts: Bool?
    var refcountOrder: UInt32?
    var size: Int64?
}

extension Qcow2Driver {
    /// qemu-img amend's qcow2 options (`qemu-img amend -o help`); the creation-only ones are
    /// refused with QEMU's hint.
    private static let amendOptionNames: Set<String> = [
        "backing_file", "backing_fmt", "compat", "data_file", "data_file_raw", "encrypt.iter-time", "encrypt.keyslot",
        "encrypt.new-secret", "encrypt.old-secret", "encrypt.state", "lazy_refcounts", "refcount_bits", "size",
    ]
    private static let creationOnlyOptionNames: Set<String> = [
        "encryption", "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode", "encrypt.ivgen-alg",
        "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "cluster_size", "preallocation", "extended_l2", "compression_type",
    ]

    /// Steps 1–6 of the order above, after every check.
    public func amend(_ options: FormatOptions, force: Bool, progress: (Double) -> Void) throws(BlockError) {
        try refuseWithDataFile("amending")
        let request = try amendRequest(options)
        let onDisk = try currentHeader()
        let targetVersion = request.version ?? onDisk.version
        let targetOrder = request.refcountOrder ?? onDisk.refcountOrder
        if targetOrder != onDisk.refcountOrder && targetVersion < 3 && targetOrder != 4 {
            throw BlockError(.invalidRequest, "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)")
        }
        if request.lazyRefcounts == true && targetVersion < 3 && onDisk.compatibleFeatures & Self.lazyRefcountsBit == 0 {
            throw BlockError(.invalidRequest, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)")
        }
        let downgrading = targetVersion < onDisk.version
        if downgrading { try checkDowngrade(onDisk, refcountOrder: targetOrder) }
        if targetVersion > onDisk.version { try checkUpgrade(onDisk) }
        if targetOrder != onDisk.refcountOrder { try checkRefcountsFit(RefcountWidth(order: targetOrder)) }

        progress(0)
        if let size = request.size, size != 0 { try truncate(to: size) }
        if downgrading { try expandZeroClusters(progress: { progress($0 / 2) }) }
        try writer.withLock { (state) throws(BlockError) in
            try prepareForWriting(&state) // a dirty image's refcounts repaired, as QEMU's mark_clean
            try writeBackMetadata(&state)
            try trimGrowth(&state)
            amended.store(true, ordering: .releasing)
            if targetVersion > onDisk.version {
                try changeVersion(to: targetVersion, compatibleFeatures: 0)
            }
            if targetOrder != onDisk.refcountOrder {
                try changeRefcountWidth(to: targetOrder, &state, progress: { progress(0.5 + $0 / 2) })
            }
            let compatible = try currentHeader().compatibleFeatures
            var wanted = compatible
            if let lazy = request.lazyRefcounts { wanted = lazy ? wanted | Self.lazyRefcountsBit : wanted & ~Self.lazyRefcountsBit }
            if downgrading {
                try changeVersion(to: targetVersion, compatibleFeatures: 0)
            } else if wanted != compatible {
                try file.during(.headerUpdate) { () throws(BlockError) in
                    try writeBigEndian(wanted, at: 80)
                    try file.driver.flush()
                }
            }
        }
        progress(1)
    }

    /// qcow2.rst's compatible feature bit 0.
    static let lazyRefcountsBit: UInt64 = 1

    /// The options, checked in the order QEMU checks them: names first (the first one amend does
    /// not take), then each value, then what the image allows.
    private func amendRequest(_ options: FormatOptions) throws(BlockError) -> AmendRequest {
        for name in options.givenNames where !Self.amendOptionNames.contains(name) {
            let hint = Self.creationOnlyOptionNames.contains(name) ? "\nThis option is only supported for image creation" : ""
            throw BlockError(.invalidRequest, "Invalid parameter '\(name)'\(hint)")
        }
        var request = AmendRequest()
        if let text = options.string("size") {
            guard let size = parseByteCount(text), size >= 0 else {
                throw BlockError(.invalidRequest, "Parameter 'size' expects a non-negative number below 2^64\n"
                                 + "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.")
            }
            request.size = size
        }
        request.lazyRefcounts = try options.flag("lazy_refcounts")
        if let text = options.string("refcount_bits") {
            guard let bits = Int64(text) else { throw BlockError(.invalidRequest, "Parameter 'refcount_bits' expects a number") }
            guard (1...64).contains(bits), bits.nonzeroBitCount == 1 else {
                throw BlockError(.invalidRequest, "Refcount width must be a power of two and may not exceed 64 bits")
            }
            request.refcountOrder = UInt32(bits.trailingZeroBitCount)
        }
        switch options.string("compat") {
        case nil: break
        case "0.10"?, "v2"?: request.version = 2
        case "1.1"?, "v3"?: request.version = 3
        case let other?: throw BlockError(.invalidRequest, "Unknown compatibility level \(other)")
        }
        if options.givenNames.contains(where: { $0.hasPrefix("encrypt.") }) {
            throw BlockError(.invalidRequest, "Can't amend encryption options - encryption not present")
        }
        if options.string("data_file") != nil {
            throw BlockError(.invalidRequest, "data-file can only be set for images that use an external data file")
        }
        if try options.flag("data_file_raw") == true {
            throw BlockError(.invalidRequest, "data-file-raw cannot be set on existing images")
        }
        let backingFile = options.string("backing_file"), backingFormat = options.string("backing_fmt")
        if (backingFile != nil || backingFormat != nil) && (backingFile != header.backingFile || backingFormat != header.backingFormat) {
            throw BlockError(.invalidRequest, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.")
        }
        return request
    }

    /// The header as the file has it now: an amend's earlier steps change it under this open.
    func currentHeader() throws(BlockError) -> Qcow2Header {
        let fileLength = try file.driver.length()
        return try Qcow2Header.parse(try Self.readBytes(file, at: 0, count: Int(min(Int64(clusterSize), fileLength))), fileLength: fileLength)
    }

    /// QEMU's refusals (qcow2_downgrade), and blk's own where it cannot yet do what QEMU does:
    /// persistent bitmaps, and zero clusters in tables internal snapshots hold.
    private func checkDowngrade(_ onDisk: Qcow2Header, refcountOrder: UInt32) throws(BlockError) {
        guard refcountOrder == 4 else { throw BlockError(.unsupported, "compat=0.10 requires refcount_bits=16") }
        let snapshots = try Qcow2Snapshot.readTable(of: self, at: onDisk.snapshotTable).entries
        let size = UInt64(try length())
        if snapshots.contains(where: { $0.vmStateSize > UInt64(UInt32.max) || ($0.diskSize ?? size) != size }) {
            throw BlockError(.unsupported, "Internal snapshots prevent downgrade of image")
        }
        let unknown = onDisk.incompatibleFeatures & ~(Qcow2Header.dirtyBit | Qcow2Header.compressionTypeBit)
        if unknown != 0 {
            throw BlockError(.unsupported, "Cannot downgrade an image with incompatible features 0x\(String(unknown, radix: 16)) set")
        }
        if onDisk.bitmapDirectory != nil {
            throw BlockError(.unsupported, "blk cannot downgrade an image with persistent bitmaps (qemu-img amend can)")
        }
        if onDisk.compressionType != 0 {
            try forEachL2Entry(ofL1Table: cache.withLock { $0.l1 }) { (entry) throws(BlockError) in
                if entry & Self.compressedBit != 0 {
                    throw BlockError(.unsupported, "Cannot downgrade an image with zstd compression type and existing compressed clusters")
                }
            }
        }
        for snapshot in snapshots {
            let l1 = try Self.readBytes(file, at: snapshot.l1TableOffset, count: Int(snapshot.l1Size) * 8).bigEndianEntries
            try forEachL2Entry(ofL1Table: l1) { (entry) throws(BlockError) in
                if entry & Self.compressedBit == 0 && entry & Self.zeroBit != 0 {
                    throw BlockError(.unsupported, "blk cannot downgrade an image whose internal snapshots hold zero clusters (qemu-img amend can)")
                }
            }
        }
    }

    /// Version 3 requires each snapshot's extra data (VM state size and disk size), which QEMU
    /// adds by rewriting the snapshot table; blk does not rewrite it yet.
    private func checkUpgrade(_ onDisk: Qcow2Header) throws(BlockError) {
        if try Qcow2Snapshot.readTable(of: self, at: onDisk.snapshotTable).entries.contains(where: { $0.diskSize == nil }) {
            throw BlockError(.unsupported, "blk cannot upgrade an image whose internal snapshots lack version 3's extra data (qemu-img amend can)")
        }
    }

    /// Every entry of every L2 table `l1` names, a table in memory at a time.
    private func forEachL2Entry(ofL1Table l1: [UInt64], _ body: (UInt64) throws(BlockError) -> Void) throws(BlockError) {
        for l1Entry in l1 where l1Entry & Self.offsetMask != 0 {
            for entry in try l2Table(at: l1Entry & Self.offsetMask) { try body(entry) }
        }
    }

    /// Step 2: each zero cluster of the active image becomes what version 2 reads the same — as
    /// QEMU's qcow2_expand_zero_clusters, with the writer's own crash-safe order — then every
    /// change is written back.
    private func expandZeroClusters(progress: (Double) -> Void) throws(BlockError) {
        let l1 = cache.withLock { $0.l1 }
        let size = try length(), clusterBytes = Int64(clusterSize)
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: clusterSize, alignment: 4096)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        for (l1Index, l1Entry) in l1.enumerated() where l1Entry & Self.offsetMask != 0 {
            for (l2Index, entry) in try l2Table(at: l1Entry & Self.offsetMask).enumerated()
            where entry & Self.compressedBit == 0 && entry & Self.zeroBit != 0 {
                let cluster = UInt64(l1Index) << UInt64(l2Bits) | UInt64(l2Index)
                let offset = Int64(cluster) * clusterBytes
                guard offset < size else { continue }
                if backing != nil {
                    try write(at: offset, from: UnsafeRawBufferPointer(rebasing: zeroes[0..<Int(min(clusterBytes, size - offset))]))
                } else {
                    try writer.withLock { (state) throws(BlockError) in
                        try prepareForWriting(&state)
                        try publish(0, forGuestCluster: cluster, &state)
                        try writeBackIfCacheIsFull(&state)
                    }
                }
            }
            progress(Double(l1Index + 1) / Double(l1.count))
        }
        try flush()
    }
}
