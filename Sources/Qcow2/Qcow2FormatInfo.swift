// Qcow2FormatInfo: what `blk info` shows of a qcow2 image beyond its size, with qemu-img's field
// names and in the order qemu-img prints them. As qemu-img, a version 2 image shows only what
// version 2 has (no lazy refcounts, corrupt bit or extended L2), and persistent bitmaps are
// listed only while the autoclear bit vouches for them (blk keeps it set: it marks them).
import BlockGraph

extension Qcow2Driver {
    /// qemu-img info's qcow2 section: its fields in qemu-img's order, with its rules for
    /// version 2 images and for bitmaps.
    public func formatInfo() throws(BlockError) -> FormatSpecificInfo {
        let features = header.incompatibleFeatures
        var fields: [FormatSpecificInfo.Field] = [
            .init("compat", .string(header.version == 2 ? "0.10" : "1.1")),
            .init("compression-type", .string(header.compressionType == 1 ? "zstd" : "zlib")),
        ]
        if header.version >= 3 {
            fields.append(.init("lazy-refcounts", .boolean(header.compatibleFeatures & 1 != 0)))
            let bitmaps = try consistentBitmaps()
            if !bitmaps.isEmpty { fields.append(.init("bitmaps", .list(bitmaps.map(\.info)))) }
        }
        fields.append(.init("refcount-bits", .integer(1 << Int64(header.refcountOrder))))
        fields += dataFileInfoFields
        if header.version >= 3 {
            fields.append(.init("corrupt", .boolean(features & Qcow2Header.corruptBit != 0)))
            fields.append(.init("extended-l2", .boolean(features & Qcow2Header.extendedL2Bit != 0)))
        }
        return FormatSpecificInfo(clusterSize: header.clusterSize, backingFile: header.backingFile, fullBackingFile: header.backingFile.map { Qcow2Format.backingPath($0, besides: fileName) },
                                  backingFormat: header.backingFormat, isDirty: features & Qcow2Header.dirtyBit != 0, fields: fields)
    }

    /// Version 3 images store persistent bitmaps (QEMU's qcow2_supports_persistent_dirty_bitmap):
    /// the ones QEMU would load, each as wide as the image.
    public func persistentBitmaps() throws(BlockError) -> [PersistentBitmap]? {
        guard header.version >= 3 else { return nil }
        return try consistentBitmaps().map { PersistentBitmap(name: $0.name, granularity: Int64(1) << Int64($0.granularityBits)) }
    }

    /// The bitmaps QEMU would load: declared, and vouched for by the autoclear bit.
    private func consistentBitmaps() throws(BlockError) -> [Qcow2Bitmap] {
        try writer.withLock { (_) throws(BlockError) -> [Qcow2Bitmap] in try bitmapState().bitmaps }
    }
}
