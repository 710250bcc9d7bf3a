// Qcow2BitmapDirectory: the bitmaps extension and the bitmap directory it points at (qcow2.rst,
// "Bitmaps extension", "Bitmap directory"), read with every rule QEMU's bitmap_list_load and
// check_dir_entry apply, so that an image QEMU would refuse to load bitmaps from is refused
// here too (exit 65) before anything is written; and the directory as blk writes it.
//
// Extension (24 bytes): nb_bitmaps u32 · reserved u32 · bitmap_directory_size u64 ·
//                       bitmap_directory_offset u64
import BlockGraph

enum Qcow2BitmapDirectory {
    static let entryHeaderBytes = 24

    /// Bytes one entry takes: its fixed part and name, padded to 8 (blk writes no extra data).
    static func entryBytes(_ bitmap: Qcow2Bitmap) -> Int { (entryHeaderBytes + bitmap.nameBytes.count + 7) / 8 * 8 }

    /// The directory holding `bitmaps`, in their order.
    static func encode(_ bitmaps: [Qcow2Bitmap]) -> [UInt8] {
        var bytes: [UInt8] = []
        for bitmap in bitmaps {
            var entry = [UInt8](repeating: 0, count: entryBytes(bitmap))
            entry.setBigEndian(bitmap.tableOffset, at: 0)
            entry.setBigEndian(bitmap.tableSize, at: 8)
            entry.setBigEndian(bitmap.flags, at: 12)
            entry[16] = Qcow2Bitmap.dirtyTrackingType
            entry[17] = bitmap.granularityBits
            entry.setBigEndian(UInt16(bitmap.nameBytes.count), at: 18)
            entry.replaceSubrange(entryHeaderBytes..<entryHeaderBytes + bitmap.nameBytes.count, with: bitmap.nameBytes)
            bytes += entry
        }
        return bytes
    }

    /// The bitmaps `location` points at, checked against the image (`clusterSize`,
    /// `virtualSize`, the file's `fileLength`). Memory is bounded by QEMU's directory limit,
    /// checked before the read.
    static func read(_ location: Qcow2Header.BitmapDirectory, from file: BlockNode, clusterSize: Int, virtualSize: UInt64,
                     fileLength: UInt64) throws(BlockError) -> [Qcow2Bitmap] {
        func corrupt(_ message: String) -> BlockError { BlockError(.corrupt, "qcow2: \(message)") }
        guard location.extensionLength == 24 else { throw corrupt("bitmaps_ext: Invalid extension length") }
        guard location.reserved == 0 else { throw corrupt("bitmaps_ext: Reserved field is not zero") }
        guard location.count > 0 else { throw corrupt("found bitmaps extension with zero bitmaps") }
        guard Int(location.count) <= Qcow2Bitmap.maxCount else {
            throw corrupt("bitmaps_ext: Image has \(location.count) bitmaps, exceeding the QEMU supported maximum of \(Qcow2Bitmap.maxCount)")
        }
        guard location.byteCount <= Qcow2Bitmap.maxDirectoryBytes else {
            throw corrupt("bitmaps_ext: bitmap directory size (\(location.byteCount)) exceeds the maximum supported size (\(Qcow2Bitmap.maxDirectoryBytes))")
        }
        let (end, overflow) = location.offset.addingReportingOverflow(location.byteCount)
        guard location.offset != 0, location.offset % UInt64(clusterSize) == 0, !overflow, end <= fileLength else {
            throw corrupt("bitmaps_ext: invalid bitmap directory offset 0x\(String(location.offset, radix: 16))")
        }
        let directory = try Qcow2Driver.readBytes(file, at: location.offset, count: Int(location.byteCount))
        var bitmaps: [Qcow2Bitmap] = []
        var names: Set<[UInt8]> = []
        var offset = 0
        while offset < directory.count {
            guard offset + entryHeaderBytes <= directory.count else { throw corrupt("Broken bitmap directory") }
            guard bitmaps.count < Int(location.count) else { throw corrupt("More bitmaps found than specified in header extension") }
            let nameSize = Int(directory.bigEndian(UInt16.self, at: offset + 18))
            let extraSize = UInt64(directory.bigEndian(UInt32.self, at: offset + 20))
            let entryEnd = (UInt64(offset + entryHeaderBytes) + extraSize + UInt64(nameSize) + 7) / 8 * 8
            guard entryEnd <= UInt64(directory.count) else { throw corrupt("Broken bitmap directory") }
            guard extraSize == 0 else { throw corrupt("Bitmap extra data is not supported") }
            let nameStart = offset + entryHeaderBytes
            let bitmap = Qcow2Bitmap(nameBytes: Array(directory[nameStart..<nameStart + nameSize]),
                                     tableOffset: directory.bigEndian(UInt64.self, at: offset),
                                     tableSize: directory.bigEndian(UInt32.self, at: offset + 8),
                                     flags: directory.bigEndian(UInt32.self, at: offset + 12),
                                     granularityBits: directory[offset + 17])
            try check(bitmap, type: directory[offset + 16], clusterSize: clusterSize, virtualSize: virtualSize, fileLength: fileLength)
            guard names.insert(bitmap.nameBytes).inserted else { throw corrupt("Bitmap '\(bitmap.name)' appears twice in the bitmap directory") }
            bitmaps.append(bitmap)
            offset = Int(entryEnd)
        }
        guard bitmaps.count == Int(location.count) else { throw corrupt("Less bitmaps found than specified in header extension") }
        return bitmaps
    }

    /// QEMU's check_dir_entry, and the table inside the file: a consistent bitmap's table must
    /// be exactly as large as the image needs (load_bitmap_data); an in-use one's may be stale.
    private static func check(_ bitmap: Qcow2Bitmap, type: UInt8, clusterSize: Int, virtualSize: UInt64,
                              fileLength: UInt64) throws(BlockError) {
        func unsatisfied(_ why: String) -> BlockError {
            BlockError(.corrupt, "qcow2: Bitmap '\(bitmap.name)' doesn't satisfy the constraints: \(why)")
        }
        guard type == Qcow2Bitmap.dirtyTrackingType else { throw unsatisfied("type \(type) is not a dirty tracking bitmap") }
        guard !bitmap.nameBytes.isEmpty, bitmap.nameBytes.count <= Qcow2Bitmap.maxNameBytes else {
            throw unsatisfied("a name of \(bitmap.nameBytes.count) bytes")
        }
        guard Qcow2Bitmap.granularityBitsRange.contains(bitmap.granularityBits) else {
            throw unsatisfied("granularity of \(bitmap.granularityBits) bits")
        }
        let known = Qcow2Bitmap.inUseFlag | Qcow2Bitmap.autoFlag | Qcow2Bitmap.extraDataCompatibleFlag
        guard bitmap.flags & ~known == 0 else { throw unsatisfied("reserved flags 0x\(String(bitmap.flags & ~known, radix: 16))") }
        guard bitmap.tableSize > 0, bitmap.tableSize <= Qcow2Bitmap.maxTableSize,
              UInt64(bitmap.tableSize) * UInt64(clusterSize) <= Qcow2Bitmap.maxDataBytes else {
            throw unsatisfied("a bitmap table of \(bitmap.tableSize) entries")
        }
        let (tableEnd, overflow) = bitmap.tableOffset.addingReportingOverflow(UInt64(bitmap.tableSize) * 8)
        guard bitmap.tableOffset != 0, bitmap.tableOffset % UInt64(clusterSize) == 0, !overflow, tableEnd <= fileLength else {
            throw unsatisfied("bitmap table offset 0x\(String(bitmap.tableOffset, radix: 16)) is unaligned or outside the file")
        }
        let needed = Qcow2Bitmap.tableSize(virtualSize: virtualSize, granularityBits: bitmap.granularityBits, clusterSize: clusterSize)
        guard bitmap.isInUse || UInt64(bitmap.tableSize) == needed else {
            throw unsatisfied("a bitmap table of \(bitmap.tableSize) entries for an image that needs \(needed)")
        }
    }
}
