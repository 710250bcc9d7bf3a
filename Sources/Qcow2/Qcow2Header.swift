// Qcow2Header: the image header and its extensions (docs/interop/qcow2.rst, "Header"), parsed
// and checked before any table is trusted. Every field is big-endian:
//
//   0  magic "QFI\xfb"        u32    48 refcount_table_offset    u64    72 incompatible_features  u64 (v3)
//   4  version (2, 3)         u32    56 refcount_table_clusters  u32    80 compatible_features    u64
//   8  backing_file_offset    u64    60 nb_snapshots             u32    88 autoclear_features     u64
//  16  backing_file_size      u32    64 snapshots_offset         u64    96 refcount_order         u32
//  20  cluster_bits           u32                                      100 header_length          u32
//  24  size (virtual)         u64                                      104 compression_type       u8
//  32  crypt_method           u32
//  36  l1_size                u32
//  40  l1_table_offset        u64
// Extensions follow the header (v2: at byte 72): type u32, length u32, data padded to 8 bytes.
import BlockGraph
import BlockLocking

/// The header as parsed and checked: every later read trusts these fields only because `parse`
/// bounded them against the file. Public for `blk info`'s fields and for tests that build images.
public struct Qcow2Header: Sendable, Hashable {
    /// 2 (compat=0.10) or 3 (compat=1.1): v2 lacks the feature bits and refcount widths.
    public var version: UInt32
    /// Where the backing file's name is stored; 0 when there is none.
    public var backingFileOffset: UInt64
    /// The name's length in bytes: at most 1023, as QEMU allows.
    public var backingFileSize: UInt32
    /// log2 of the cluster size, 9 to 21.
    public var clusterBits: UInt32
    /// The size the guest sees.
    public var virtualSize: UInt64
    /// 0 unencrypted; encrypted images are refused as unsupported.
    public var cryptMethod: UInt32
    /// Entries of the L1 table, enough for the virtual size.
    public var l1Size: UInt32
    /// Where the L1 table starts: cluster-aligned.
    public var l1TableOffset: UInt64
    /// Where the refcount table starts: cluster-aligned.
    public var refcountTableOffset: UInt64
    /// The refcount table's size, in clusters.
    public var refcountTableClusters: UInt32
    /// Internal snapshots in the snapshot table.
    public var snapshotCount: UInt32
    /// Where the snapshot table starts.
    public var snapshotsOffset: UInt64
    /// Features a reader must know to open the image at all (dirty, corrupt, extended L2, ...).
    public var incompatibleFeatures: UInt64
    /// Features a reader may ignore (lazy refcounts).
    public var compatibleFeatures: UInt64
    /// Features a writer that does not know them clears (bitmaps, raw external data).
    public var autoclearFeatures: UInt64
    /// log2 of the refcount width in bits: 4 (16-bit) unless created otherwise.
    public var refcountOrder: UInt32
    /// Where the extensions start: 72 for v2, 104 or more for v3.
    public var headerLength: UInt32
    /// 0 deflate, 1 zstd: how compressed clusters are stored.
    public var compressionType: UInt8
    /// The backing file's name as stored, which the opener resolves beside the image.
    public var backingFile: String?
    /// The backing file's format from its extension; nil makes the opener probe.
    public var backingFormat: String?
    /// Feature names the image itself declares (the feature name table), by (type, bit).
    public var featureNames: [FeatureKey: String]
    /// Where the persistent bitmaps' directory is (the bitmaps extension), if the image has one.
    public var bitmapDirectory: BitmapDirectory?
    /// The external data file's name as stored (Qcow2DataFile.swift), if the image names one.
    public var dataFile: String? = nil

    /// The bitmaps extension's fields: enough for `blk info` to list bitmaps.
    public struct BitmapDirectory: Sendable, Hashable {
        /// Bitmaps in the directory.
        public var count: UInt32
        /// The directory's size in bytes, bounded before it is read.
        public var byteCount: UInt64
        /// Where the directory starts.
        public var offset: UInt64
        /// The extension's stored length, which QEMU requires to be 24.
        public var extensionLength = 24
        /// The reserved field, which QEMU requires to be 0.
        public var reserved: UInt32 = 0
    }

    /// A feature bit as the feature name table keys it, so `blk info` names unknown bits as the
    /// image names them.
    public struct FeatureKey: Sendable, Hashable {
        /// 0 incompatible, 1 compatible, 2 autoclear.
        public var type: UInt8 // 0 incompatible, 1 compatible, 2 autoclear
        /// The bit's number within its field.
        public var bit: UInt8
    }

    /// The allocation unit in bytes.
    public var clusterSize: Int { 1 << Int(clusterBits) }
    /// Whether L2 entries are extended: 16 bytes, the standard entry and a subcluster bitmap.
    public var hasExtendedL2: Bool { incompatibleFeatures & Self.extendedL2Bit != 0 }
    /// Entries in one L2 table: a cluster of 8-byte entries, or of 16-byte extended ones.
    public var l2Entries: Int { clusterSize / (hasExtendedL2 ? 16 : 8) }

    // Incompatible feature bits (qcow2.rst, bytes 72–79).
    /// Refcounts may be out of date (lazy refcounts): a writable open repairs them first.
    public static let dirtyBit: UInt64 = 1 << 0
    /// QEMU found the metadata damaged: the image opens read-only until repaired.
    public static let corruptBit: UInt64 = 1 << 1
    /// Guest data lives in another file (Qcow2DataFile.swift).
    public static let externalDataFileBit: UInt64 = 1 << 2
    /// The compression type field is in use (zstd).
    public static let compressionTypeBit: UInt64 = 1 << 3
    /// L2 entries carry subcluster bitmaps (Qcow2Subclusters.swift).
    public static let extendedL2Bit: UInt64 = 1 << 4

    /// The extension that records the backing file's format.
    public static let backingFormatExtension: UInt32 = 0xe279_2aca
    static let featureNameTableExtension: UInt32 = 0x6803_f857
    static let bitmapsExtension: UInt32 = 0x2385_2875

    /// QEMU's limits (block/qcow2.h): larger tables are refused, not read.
    public static let maxL1Bytes: UInt64 = 32 << 20
    static let maxRefcountTableBytes: UInt64 = 8 << 20

    /// Parses and checks the header in `bytes` (the image's first cluster, or all of a smaller
    /// file); `fileLength` bounds every table. Errors name the field and exit as corrupt (65) or
    /// unsupported (69).
    public static func parse(_ bytes: [UInt8], fileLength: Int64) throws(BlockError) -> Qcow2Header {
        func corrupt(_ message: String) -> BlockError { BlockError(.corrupt, "qcow2: \(message)") }
        guard bytes.count >= 72 else { throw corrupt("the header is truncated (\(bytes.count) bytes)") }
        guard bytes.starts(with: FormatProbe.qcow2Magic) else { throw corrupt("Image is not in qcow2 format") }
        let version = bytes.bigEndian(UInt32.self, at: 4)
        guard version == 2 || version == 3 else {
            throw BlockError(.unsupported, "qcow2: Unsupported qcow2 version \(version)")
        }
        var header = Qcow2Header(
            version: version,
            backingFileOffset: bytes.bigEndian(UInt64.self, at: 8),
            backingFileSize: bytes.bigEndian(UInt32.self, at: 16),
            clusterBits: bytes.bigEndian(UInt32.self, at: 20),
            virtualSize: bytes.bigEndian(UInt64.self, at: 24),
            cryptMethod: bytes.bigEndian(UInt32.self, at: 32),
            l1Size: bytes.bigEndian(UInt32.self, at: 36),
            l1TableOffset: bytes.bigEndian(UInt64.self, at: 40),
            refcountTableOffset: bytes.bigEndian(UInt64.self, at: 48),
            refcountTableClusters: bytes.bigEndian(UInt32.self, at: 56),
            snapshotCount: bytes.bigEndian(UInt32.self, at: 60),
            snapshotsOffset: bytes.bigEndian(UInt64.self, at: 64),
            incompatibleFeatures: 0, compatibleFeatures: 0, autoclearFeatures: 0,
            refcountOrder: 4, headerLength: 72, compressionType: 0,
            backingFile: nil, backingFormat: nil, featureNames: [:], bitmapDirectory: nil)

        guard (9...21).contains(header.clusterBits) else {
            throw corrupt("Cluster size must be a power of two between 512 and 2048k (cluster_bits \(header.clusterBits))")
        }
        let clusterSize = UInt64(header.clusterSize)
        if version == 3 {
            guard bytes.count >= 104 else { throw corrupt("qcow2 header too short") }
            header.incompatibleFeatures = bytes.bigEndian(UInt64.self, at: 72)
            header.compatibleFeatures = bytes.bigEndian(UInt64.self, at: 80)
            header.autoclearFeatures = bytes.bigEndian(UInt64.self, at: 88)
            header.refcountOrder = bytes.bigEndian(UInt32.self, at: 96)
            header.headerLength = bytes.bigEndian(UInt32.self, at: 100)
            guard header.headerLength >= 104 else { throw corrupt("qcow2 header too short") }
            guard UInt64(header.headerLength) <= clusterSize, Int(header.headerLength) <= bytes.count else {
                throw corrupt("qcow2 header exceeds cluster size")
            }
            if header.headerLength > 104 { header.compressionType = bytes[104] }
        }
        guard header.refcountOrder <= 6 else { throw corrupt("Reference count entry width too large; may not exceed 64 bits") }
        guard header.cryptMethod == 0 else {
            throw BlockError(.unsupported, "qcow2: encrypted images (crypt_method \(header.cryptMethod)) are not supported")
        }

        try header.readExtensions(bytes)
        try header.checkFeatures()
        try header.checkDataFile()
        try header.checkTables(fileLength: fileLength, corrupt: corrupt)
        try header.readBackingFile(bytes, corrupt: corrupt)
        return header
    }

    private mutating func readExtensions(_ bytes: [UInt8]) throws(BlockError) {
        var offset = Int(headerLength)
        let end = min(bytes.count, clusterSize)
        while offset + 8 <= end {
            let type = bytes.bigEndian(UInt32.self, at: offset)
            let length = Int(bytes.bigEndian(UInt32.self, at: offset + 4))
            if type == 0 { return }
            let dataStart = offset + 8
            guard length <= end - dataStart else {
                throw BlockError(.corrupt, "qcow2: ext_magic 0x\(String(type, radix: 16)): invalid extension length \(length)")
            }
            let data = Array(bytes[dataStart..<dataStart + length])
            switch type {
            case Self.backingFormatExtension:
                backingFormat = String(decoding: data, as: UTF8.self)
            case Self.featureNameTableExtension:
                for entry in stride(from: 0, to: data.count - 47, by: 48) {
                    let name = data[(entry + 2)..<(entry + 48)].prefix { $0 != 0 }
                    featureNames[FeatureKey(type: data[entry], bit: data[entry + 1])] = String(decoding: name, as: UTF8.self)
                }
            case Self.dataFileExtension:
                dataFile = try Self.dataFileName(data)
            case Self.bitmapsExtension where data.count >= 24:
                bitmapDirectory = BitmapDirectory(count: data.bigEndian(UInt32.self, at: 0), byteCount: data.bigEndian(UInt64.self, at: 8),
                                                  offset: data.bigEndian(UInt64.self, at: 16), extensionLength: data.count,
                                                  reserved: data.bigEndian(UInt32.self, at: 4))
            case Self.bitmapsExtension:
                bitmapDirectory = BitmapDirectory(count: 0, byteCount: 0, offset: 0, extensionLength: data.count)
            default:
                break // unknown extensions are kept as they are: we never rewrite the header area
            }
            offset = dataStart + (length + 7) / 8 * 8
        }
    }

    /// QEMU refuses unknown incompatible features, naming them from the image's own table.
    private func checkFeatures() throws(BlockError) {
        let understood = Self.dirtyBit | Self.corruptBit | Self.compressionTypeBit | Self.extendedL2Bit | Self.externalDataFileBit
        let unknown = incompatibleFeatures & ~understood
        if unknown != 0 {
            let names = (0..<64).filter { unknown & (1 << $0) != 0 }.map { bit in
                featureNames[FeatureKey(type: 0, bit: UInt8(bit))].map { escapingControlCharacters($0) } ?? "Unknown incompatible feature: \(String(UInt64(1) << bit, radix: 16))"
            }
            throw BlockError(.unsupported, "qcow2: Unsupported qcow2 feature(s): \(names.joined(separator: ", "))")
        }
        // 32 subclusters of at least a sector each, as QEMU's open requires.
        if hasExtendedL2 && clusterSize / 32 < 512 {
            throw BlockError(.corrupt, "qcow2: Unsupported subcluster size: \(clusterSize / 32)")
        }
        if incompatibleFeatures & Self.compressionTypeBit != 0 || compressionType != 0 {
            guard compressionType <= 1 else {
                throw BlockError(.unsupported, "qcow2: Unknown compression type \(compressionType)")
            }
        }
    }

    private func checkTables(fileLength: Int64, corrupt: (String) -> BlockError) throws(BlockError) {
        let clusterSize = UInt64(self.clusterSize)
        func check(_ offset: UInt64, bytes: UInt64, _ name: String) throws(BlockError) {
            guard offset % clusterSize == 0 else { throw corrupt("\(name) offset invalid (not cluster-aligned)") }
            let (end, overflow) = offset.addingReportingOverflow(bytes)
            guard !overflow, end <= UInt64(max(fileLength, 0)) || bytes == 0 else {
                throw corrupt("\(name) is past the end of the file (\(fileLength) bytes)")
            }
            guard offset >= clusterSize || bytes == 0 else { throw corrupt("\(name) overlaps the header") }
        }
        let l1Bytes = UInt64(l1Size) * 8
        guard l1Bytes <= Self.maxL1Bytes else { throw corrupt("Active L1 table too large") }
        let bytesPerL1Entry = clusterSize * UInt64(l2Entries)
        let (neededEntries, _) = virtualSize.quotientAndRemainder(dividingBy: bytesPerL1Entry)
        let needed = neededEntries + (virtualSize % bytesPerL1Entry == 0 ? 0 : 1)
        guard UInt64(l1Size) >= needed else { throw corrupt("L1 table is too small for the image size") }
        try check(l1TableOffset, bytes: l1Bytes, "Active L1 table")
        let refcountBytes = UInt64(refcountTableClusters) * clusterSize
        guard refcountBytes <= Self.maxRefcountTableBytes else { throw corrupt("Reference count table too large") }
        guard refcountTableClusters > 0 else { throw corrupt("Reference count table is empty") }
        try check(refcountTableOffset, bytes: refcountBytes, "Reference count table")
        guard snapshotCount <= 65536 else { throw corrupt("Too many snapshots") }
        if snapshotCount > 0 { try check(snapshotsOffset, bytes: 1, "Snapshot table") }
    }

    private mutating func readBackingFile(_ bytes: [UInt8], corrupt: (String) -> BlockError) throws(BlockError) {
        // A format extension without a name is ignored, as QEMU ignores it: taking a backing file
        // away leaves it (Qcow2HeaderUpdate.swift).
        guard backingFileOffset != 0 else {
            backingFormat = nil
            return
        }
        guard backingFileSize <= 1023 else { throw corrupt("Backing file name too long") }
        let (end, overflow) = backingFileOffset.addingReportingOverflow(UInt64(backingFileSize))
        guard !overflow, end <= UInt64(min(bytes.count, clusterSize)) else {
            throw corrupt("Backing file name is not inside the first cluster")
        }
        backingFile = String(decoding: bytes[Int(backingFileOffset)..<Int(end)], as: UTF8.self)
    }
}
