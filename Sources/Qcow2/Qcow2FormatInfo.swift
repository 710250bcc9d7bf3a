// Qcow2FormatInfo: what `blk info` shows of a qcow2 image beyond its size, with qemu-img's field
// names and in the order qemu-img prints them.
import BlockLayer

extension Qcow2Driver {
    public func formatInfo() throws(BlockError) -> FormatSpecificInfo {
        let features = header.incompatibleFeatures
        return FormatSpecificInfo(
            clusterSize: header.clusterSize, backingFile: header.backingFile, backingFormat: header.backingFormat,
            isDirty: features & Qcow2Header.dirtyBit != 0,
            fields: [
                .init("compat", .string(header.version == 2 ? "0.10" : "1.1")),
                .init("compression-type", .string(header.compressionType == 1 ? "zstd" : "zlib")),
                .init("lazy-refcounts", .boolean(header.compatibleFeatures & 1 != 0)),
                .init("refcount-bits", .integer(1 << Int64(header.refcountOrder))),
                .init("corrupt", .boolean(features & Qcow2Header.corruptBit != 0)),
                .init("extended-l2", .boolean(features & Qcow2Header.extendedL2Bit != 0)),
            ])
    }
}
