// Qcow2BitmapTable: a bitmap's table (qcow2.rst, "Bitmap table") and the data clusters it names.
//
// Entry: bits 9–55 offset of a data cluster (0: none) · bit 0, with no offset, "every bit of
//        this cluster is set" · bits 1–8 and 56–63 reserved, zero.
// Data:  bit i of byte j (least significant first) is granule 8·j + i of the cluster's part of
//        the image; a cluster holds cluster_size · 8 granules.
import BlockGraph

enum Qcow2BitmapTable {
    static let offsetMask: UInt64 = 0x00ff_ffff_ffff_fe00
    static let reservedMask: UInt64 = 0xff00_0000_0000_01fe
    static let allOnes: UInt64 = 1

    /// Calls `body` with each entry of `bitmap`'s table, in order, read a cluster at a time (an
    /// in-use bitmap's table is bounded only by QEMU's limit) and checked as QEMU's
    /// check_table_entry checks it, with the data cluster inside the file.
    static func forEachEntry(of bitmap: Qcow2Bitmap, in file: BlockNode, clusterSize: Int, fileLength: UInt64,
                             _ body: (_ index: Int, _ entry: UInt64) throws(BlockError) -> Void) throws(BlockError) {
        let perChunk = clusterSize / 8
        var index = 0
        while index < Int(bitmap.tableSize) {
            let count = min(perChunk, Int(bitmap.tableSize) - index)
            let entries = try Qcow2Driver.readBytes(file, at: bitmap.tableOffset + UInt64(index) * 8, count: count * 8).bigEndianEntries
            for entry in entries {
                try check(entry, index: index, of: bitmap, clusterSize: clusterSize, fileLength: fileLength)
                try body(index, entry)
                index += 1
            }
        }
    }

    /// The whole table of a bitmap that is kept up to date (its size follows the image's).
    static func read(_ bitmap: Qcow2Bitmap, in file: BlockNode, clusterSize: Int, fileLength: UInt64) throws(BlockError) -> [UInt64] {
        var table: [UInt64] = []
        table.reserveCapacity(Int(bitmap.tableSize))
        try forEachEntry(of: bitmap, in: file, clusterSize: clusterSize, fileLength: fileLength) { _, entry in table.append(entry) }
        return table
    }

    private static func check(_ entry: UInt64, index: Int, of bitmap: Qcow2Bitmap, clusterSize: Int, fileLength: UInt64) throws(BlockError) {
        let offset = entry & offsetMask
        let valid = entry & reservedMask == 0
            && (offset == 0 || (entry & allOnes == 0 && offset % UInt64(clusterSize) == 0 && offset + UInt64(clusterSize) <= fileLength))
        guard valid else {
            throw BlockError(.corrupt, "qcow2: Bitmap '\(bitmap.name)' table entry \(index) is invalid: 0x\(String(entry, radix: 16))")
        }
    }

    /// Which bits of one data cluster's bytes the granules `granules` (numbered from the start
    /// of the image) are, for the cluster at table index `index`: nil when they miss it.
    static func bits(of granules: Range<UInt64>, inTableEntry index: Int, clusterSize: Int) -> Range<Int>? {
        let perCluster = UInt64(clusterSize) * 8
        let start = UInt64(index) * perCluster
        let lower = max(granules.lowerBound, start), upper = min(granules.upperBound, start + perCluster)
        guard lower < upper else { return nil }
        return Int(lower - start)..<Int(upper - start)
    }

    /// Whether every bit of `bits` is set in `bytes`.
    static func allSet(_ bits: Range<Int>, in bytes: [UInt8]) -> Bool {
        bits.allSatisfy { bytes[$0 >> 3] & (1 << UInt8($0 & 7)) != 0 }
    }

    /// Clears `bits` in `bytes`; returns whether any was set.
    static func clear(_ bits: Range<Int>, in bytes: inout [UInt8]) -> Bool {
        var changed = false
        for bit in bits where bytes[bit >> 3] & (1 << UInt8(bit & 7)) != 0 {
            bytes[bit >> 3] &= ~(1 << UInt8(bit & 7))
            changed = true
        }
        return changed
    }

    /// Sets `bits` in `bytes`; returns the range of bytes that changed, nil when none did.
    static func set(_ bits: Range<Int>, in bytes: inout [UInt8]) -> Range<Int>? {
        var changed: Range<Int>?
        for bit in bits where bytes[bit >> 3] & (1 << UInt8(bit & 7)) == 0 {
            bytes[bit >> 3] |= 1 << UInt8(bit & 7)
            let byte = bit >> 3
            changed = changed.map { min($0.lowerBound, byte)..<max($0.upperBound, byte + 1) } ?? byte..<byte + 1
        }
        return changed
    }
}
