// Qcow2VersionChange: the header rewritten as version 2 (compat=0.10) or 3 (compat=1.1) for
// `amend`. The versions lay the first cluster out differently — version 2's header is 72 bytes
// and its extensions start there; version 3's is 112 here (with the compression type), its
// extensions after — so the extensions move, and with them, where it would be overwritten, the
// backing file's name:
//
//   1. if the name does not fit in the first sector after the new extensions, it is written
//      past everything the current header uses (and inside the first cluster); fdatasync;
//   2. bytes 0 up to the end of the new extensions (and the name, when it fits there) — one
//      write inside the first 512-byte sector; fdatasync.
//
// Write 1 touches only bytes nothing reads yet, and write 2 is atomic, so a crash leaves the old
// header or the new. Where the new header and its extensions would not fit in the first sector
// (large unknown extensions), the change is refused before anything is written: no single write
// could switch it. Version 2 keeps no feature name table (QEMU drops it too), and version 3
// gets none (blk's create writes none); every other extension is kept as it is, unknown ones too.
import BlockGraph

extension Qcow2Driver {
    /// The extension type of the feature name table, which version 2 does without.
    private static let featureNameTable: UInt32 = 0x6803_f857

    /// Steps 1–2 of the order above; a version 3 header gets `compatibleFeatures` and no other
    /// feature bit (amend has cleared the dirty bit and made sure no other is set).
    func changeVersion(to version: UInt32, compatibleFeatures: UInt64) throws(BlockError) {
        let fileLength = try file.driver.length()
        let first = try Self.readBytes(file, at: 0, count: Int(min(Int64(clusterSize), fileLength)))
        let current = try Qcow2Header.parse(first, fileLength: fileLength)
        var extensions: [(type: UInt32, data: ArraySlice<UInt8>)] = []
        var offset = Int(current.headerLength)
        while offset + 8 <= first.count {
            let type = first.bigEndian(UInt32.self, at: offset), length = Int(first.bigEndian(UInt32.self, at: offset + 4))
            offset += 8
            if type == 0 { break }
            // Qcow2Header.parse has bounded every length already.
            if type != Self.featureNameTable { extensions.append((type, first[offset..<offset + length])) }
            offset += (length + 7) / 8 * 8
        }
        let backingEnd = current.backingFileOffset == 0 ? 0 : Int(current.backingFileOffset) + Int(current.backingFileSize)
        let inUse = max(offset, backingEnd)

        var bytes = Array(first[0..<72])
        bytes.setBigEndian(version, at: 4)
        if version >= 3 {
            bytes += [UInt8](repeating: 0, count: 40)
            bytes.setBigEndian(compatibleFeatures, at: 80)
            bytes.setBigEndian(current.refcountOrder, at: 96)
            bytes.setBigEndian(UInt32(112), at: 100)
        }
        for (type, data) in extensions {
            var item = [UInt8](repeating: 0, count: 8 + (data.count + 7) / 8 * 8)
            item.setBigEndian(type, at: 0)
            item.setBigEndian(UInt32(data.count), at: 4)
            item.replaceSubrange(8..<8 + data.count, with: data)
            bytes += item
        }
        bytes += [UInt8](repeating: 0, count: 8) // the end of the extensions
        guard bytes.count <= 512 else {
            throw BlockError(.unsupported, "the version \(version) header with its extensions would pass the first 512-byte sector, which blk cannot switch in one write")
        }
        if let name = current.backingFile {
            let nameBytes = Array(name.utf8)
            var nameOffset = bytes.count
            if nameOffset + nameBytes.count > 512 {
                nameOffset = (inUse + 7) / 8 * 8
                guard nameOffset + nameBytes.count <= clusterSize else {
                    throw BlockError(.unsupported, "the backing file name does not fit in the first cluster beside both headers")
                }
                try file.during(.headerUpdate) { () throws(BlockError) in
                    try writeBytes(nameBytes, at: UInt64(nameOffset))
                    try file.driver.flush()
                }
            } else {
                bytes += nameBytes
            }
            bytes.setBigEndian(UInt64(nameOffset), at: 8)
        }
        try file.during(.headerUpdate) { () throws(BlockError) in
            try writeBytes(bytes, at: 0)
            try file.driver.flush()
        }
    }
}
