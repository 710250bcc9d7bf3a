// Qcow2Bitmaps: the persistent dirty bitmaps an image declares (qcow2.rst, "Bitmaps extension"
// and "Bitmap directory"), read for `blk info` as qemu-img lists them. blk keeps no bitmap up
// to date: its first write clears the autoclear bit that vouches for them, as qcow2.rst asks of
// a program without bitmap support, and from then on they are not listed, by QEMU either.
//
// Extension (24 bytes): nb_bitmaps u32 · reserved u32 · bitmap_directory_size u64 ·
//                       bitmap_directory_offset u64
// Directory entry:      0 bitmap_table_offset u64 · 8 bitmap_table_size u32 · 12 flags u32 ·
//                       16 type u8 · 17 granularity_bits u8 · 18 name_size u16 ·
//                       20 extra_data_size u32 · 24 extra data, then the name; padded to 8
import BlockGraph

struct Qcow2Bitmap: Sendable, Hashable {
    var name: String
    var granularityBits: UInt8
    var flags: UInt32

    static let inUseFlag: UInt32 = 1 << 0
    static let autoFlag: UInt32 = 1 << 1
    /// Autoclear bit 0: the bitmaps are consistent with the data.
    static let autoclearBit: UInt64 = 1 << 0
    /// QEMU's limits (block/qcow2.h): a larger directory is refused, not read.
    static let maxCount = 65535
    static let maxDirectoryBytes: UInt64 = 1024 * 65535

    /// The bitmaps the header's extension points at, in directory order.
    static func readDirectory(of driver: Qcow2Driver, _ location: Qcow2Header.BitmapDirectory) throws(BlockError) -> [Qcow2Bitmap] {
        func corrupt(_ message: String) -> BlockError { BlockError(.corrupt, "qcow2: bitmaps_ext: \(message)") }
        guard Int(location.count) <= maxCount else { throw corrupt("Image has \(location.count) bitmaps, exceeding the QEMU supported maximum of \(maxCount)") }
        guard location.byteCount <= maxDirectoryBytes else {
            throw corrupt("bitmap directory size (\(location.byteCount)) exceeds the maximum supported size (\(maxDirectoryBytes))")
        }
        let fileLength = UInt64(try driver.file.driver.length())
        let (end, overflow) = location.offset.addingReportingOverflow(location.byteCount)
        guard location.offset % UInt64(driver.clusterSize) == 0, !overflow, end <= fileLength else {
            throw corrupt("invalid bitmap directory offset 0x\(String(location.offset, radix: 16))")
        }
        let directory = try Qcow2Driver.readBytes(driver.file, at: location.offset, count: Int(location.byteCount))
        var bitmaps: [Qcow2Bitmap] = []
        var offset = 0
        while offset < directory.count {
            guard bitmaps.count < Int(location.count), offset + 24 <= directory.count else {
                throw corrupt("the bitmap directory is corrupted at entry \(bitmaps.count + 1)")
            }
            let nameSize = Int(directory.bigEndian(UInt16.self, at: offset + 18))
            let extraSize = Int(directory.bigEndian(UInt32.self, at: offset + 20))
            let entryBytes = 24 + extraSize + nameSize
            guard nameSize <= 1023, extraSize <= directory.count, offset + entryBytes <= directory.count else {
                throw corrupt("bitmap \(bitmaps.count + 1) runs past the bitmap directory")
            }
            let granularityBits = directory[offset + 17]
            guard (9...31).contains(granularityBits) else {
                throw corrupt("bitmap \(bitmaps.count + 1) has an invalid granularity (\(granularityBits) bits)")
            }
            let nameStart = offset + 24 + extraSize
            bitmaps.append(Qcow2Bitmap(name: String(decoding: directory[nameStart..<nameStart + nameSize], as: UTF8.self),
                                       granularityBits: granularityBits,
                                       flags: directory.bigEndian(UInt32.self, at: offset + 12)))
            offset += (entryBytes + 7) / 8 * 8
        }
        guard bitmaps.count == Int(location.count) else {
            throw corrupt("the bitmap directory lists \(bitmaps.count) bitmaps, the header \(location.count)")
        }
        return bitmaps
    }

    /// qemu-img's Qcow2BitmapInfo: flags (in-use before auto), name, granularity, in the order
    /// it prints them.
    var info: FormatSpecificInfo.Value {
        var flagNames: [FormatSpecificInfo.Value] = []
        if flags & Self.inUseFlag != 0 { flagNames.append(.string("in-use")) }
        if flags & Self.autoFlag != 0 { flagNames.append(.string("auto")) }
        return .object([.init("flags", .list(flagNames)), .init("name", .string(name)),
                         .init("granularity", .integer(Int64(1) << Int64(granularityBits)))])
    }
}
