// Qcow2Bitmaps: one persistent dirty bitmap as its bitmap directory entry describes it
// (qcow2.rst, "Bitmap directory"), with QEMU's limits (block/qcow2-bitmap.c). Reading and
// writing the directory is in Qcow2BitmapDirectory.swift, the tables in Qcow2BitmapTable.swift,
// marking on writes in Qcow2BitmapMarking.swift, changes in Qcow2BitmapUpdate.swift.
//
// Directory entry: 0 bitmap_table_offset u64 · 8 bitmap_table_size u32 · 12 flags u32 ·
//                  16 type u8 · 17 granularity_bits u8 · 18 name_size u16 ·
//                  20 extra_data_size u32 · 24 extra data, then the name; padded to 8
import BlockGraph

struct Qcow2Bitmap: Sendable, Hashable {
    /// The name's bytes as stored: a rewritten directory keeps them even where they are not UTF-8.
    var nameBytes: [UInt8]
    var tableOffset: UInt64
    /// Clusters of bitmap data the table names (one 8-byte entry each).
    var tableSize: UInt32
    var flags: UInt32
    var granularityBits: UInt8

    /// QEMU found the bitmap open when it stopped: inconsistent, never trusted, only removable.
    static let inUseFlag: UInt32 = 1 << 0
    /// Enabled: every write marks it.
    static let autoFlag: UInt32 = 1 << 1
    static let extraDataCompatibleFlag: UInt32 = 1 << 2
    /// Autoclear bit 0: the bitmaps are consistent with the data.
    static let autoclearBit: UInt64 = 1 << 0
    /// QEMU's limits (block/qcow2.h, block/qcow2-bitmap.c): a larger directory or table is
    /// refused, not read.
    static let maxCount = 65535
    static let maxDirectoryBytes: UInt64 = 1024 * 65535
    static let maxTableSize: UInt32 = 0x800_0000
    static let maxDataBytes: UInt64 = 0x2000_0000
    static let maxNameBytes = 1023
    static let granularityBitsRange: ClosedRange<UInt8> = 9...31
    /// The only type qcow2.rst defines: a dirty tracking bitmap.
    static let dirtyTrackingType: UInt8 = 1

    var name: String { String(decoding: nameBytes, as: UTF8.self) }
    var isInUse: Bool { flags & Self.inUseFlag != 0 }
    var isEnabled: Bool { flags & Self.autoFlag != 0 }
    var granularity: Int64 { Int64(1) << Int64(granularityBits) }

    /// The table size QEMU requires of a consistent bitmap of an image of `virtualSize` bytes:
    /// one bit per granule, in whole clusters.
    static func tableSize(virtualSize: UInt64, granularityBits: UInt8, clusterSize: Int) -> UInt64 {
        let granules = (virtualSize + (UInt64(1) << granularityBits) - 1) >> granularityBits
        let bytes = (granules + 7) / 8
        return (bytes + UInt64(clusterSize) - 1) / UInt64(clusterSize)
    }

    /// qemu-img's Qcow2BitmapInfo: flags (in-use before auto), name, granularity, in the order
    /// it prints them.
    var info: FormatSpecificInfo.Value {
        var flagNames: [FormatSpecificInfo.Value] = []
        if isInUse { flagNames.append(.string("in-use")) }
        if isEnabled { flagNames.append(.string("auto")) }
        return .object([.init("flags", .list(flagNames)), .init("name", .string(name)),
                         .init("granularity", .integer(granularity))])
    }
}
