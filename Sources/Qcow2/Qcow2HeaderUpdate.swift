// Qcow2HeaderUpdate: changing what the header cluster says — the backing file's name and the
// backing-format extension (0xe2792aca) — so that a crash leaves the old header or the new one.
//
// Why it needs an order: a write inside one 512-byte sector lands whole or not at all, a
// longer one may tear at sector boundaries. The header's fields and the first extensions share
// sector 0, but the extension area and the name reach past it: QEMU's feature name table alone
// ends at byte 520, and the name follows it. Rewriting the cluster in one write, as QEMU does,
// could leave half an extension area. So:
//
//   1. the image's metadata is written back (Qcow2Writer's order); fdatasync — what was written
//      before (a safe rebase's copied clusters) is durable before the header names a new base;
//   2. only when no name is live: a backing-format extension the image lacks is appended after
//      the last extension, over bytes zeroed first (a write torn anywhere then ends the list at
//      the old end marker or at zeroes); fdatasync. Without a name QEMU and blk ignore it;
//   3. the new name goes where nothing on disk points (after the extensions, clear of the live
//      name); fdatasync;
//   4. the switch: backing_file_offset and _size (bytes 8–19), and the extension's length and
//      data when it changes, as one write inside sector 0; fdatasync.
//
// Steps 2 and 3 are skipped when the switch itself can carry them (a short extension area, as
// blk writes it: the name then lies right after the end marker, as QEMU places it). Taking the
// backing file away switches bytes 8–19 to zero and leaves the extension, ignored without a
// name: removing it would move every extension after it. An extension whose padded length
// changes while a name is live (a format name of more than 8 bytes) is rebuilt in QEMU's order
// only if the whole area then fits sector 0; otherwise the change is refused before any write.
import BlockGraph

/// The header cluster as it is on disk, read for a change, and the writes that make the change
/// in the order above. Kept apart from `Qcow2Header` (which trusts nothing and keeps no bytes):
/// a change rewrites bytes it did not parse, such as unknown extensions, exactly as they were.
struct Qcow2HeaderUpdate {
    /// One extension as stored: its type, where it starts, and its data.
    struct Extension {
        var type: UInt32
        var start: Int
        var data: [UInt8]
        /// Type, length, and the data padded to 8 bytes.
        var storedBytes: Int { 8 + (data.count + 7) / 8 * 8 }
    }

    /// One write of the change; an fdatasync follows each before the next.
    struct Write: Equatable {
        var byteOffset: Int
        var bytes: [UInt8]
    }

    static let sectorBytes = 512

    /// Cluster 0 as read.
    let cluster: [UInt8]
    let headerLength: Int
    let extensions: [Extension]
    /// Where the end-of-extensions marker is.
    let endMarker: Int
    /// The live backing file name's bytes, when the header names one.
    let liveName: Range<Int>?

    /// Reads the extension list of `cluster` as stored; bounds are checked again (the header
    /// was checked at open, but these offsets drive writes).
    init(cluster: [UInt8]) throws(BlockError) {
        func corrupt(_ message: String) -> BlockError { BlockError(.corrupt, "qcow2: \(message)") }
        guard cluster.count >= 104 else { throw corrupt("the header cluster is truncated") }
        self.cluster = cluster
        let version = cluster.bigEndian(UInt32.self, at: 4)
        headerLength = version >= 3 ? Int(cluster.bigEndian(UInt32.self, at: 100)) : 72
        guard headerLength >= 72, headerLength <= cluster.count else { throw corrupt("qcow2 header exceeds cluster size") }
        var extensions: [Extension] = []
        var offset = headerLength
        var marker: Int?
        while offset + 8 <= cluster.count {
            let type = cluster.bigEndian(UInt32.self, at: offset)
            if type == 0 {
                marker = offset
                break
            }
            let length = Int(cluster.bigEndian(UInt32.self, at: offset + 4))
            guard length <= cluster.count - offset - 8 else {
                throw corrupt("ext_magic 0x\(String(type, radix: 16)): invalid extension length \(length)")
            }
            extensions.append(Extension(type: type, start: offset, data: Array(cluster[offset + 8..<offset + 8 + length])))
            offset += 8 + (length + 7) / 8 * 8
        }
        guard let marker else {
            throw BlockError(.noSpace, "No space left in the file header (the extensions fill the header cluster)")
        }
        self.extensions = extensions
        endMarker = marker
        let nameOffset = cluster.bigEndian(UInt64.self, at: 8), nameSize = Int(cluster.bigEndian(UInt32.self, at: 16))
        if nameOffset == 0 {
            liveName = nil
        } else {
            guard nameOffset <= UInt64(cluster.count), nameSize <= cluster.count - Int(nameOffset) else {
                throw corrupt("Backing file name is not inside the first cluster")
            }
            liveName = Int(nameOffset)..<Int(nameOffset) + nameSize
        }
    }

    /// Where the header and its extensions end, end marker included.
    var metadataEnd: Int { endMarker + 8 }

    /// The writes that make the header name `name` with `format` (nil: no backing file), each
    /// to be followed by an fdatasync. Throws before any write when the change cannot be made
    /// with a switch inside one sector, or the cluster has no room.
    func backingChange(name: [UInt8]?, format: [UInt8]?) throws(BlockError) -> [Write] {
        guard let name else { return [Write(byteOffset: 8, bytes: [UInt8](repeating: 0, count: 12))] }
        var writes: [Write] = []
        var layout = cluster
        layout.setBigEndian(UInt32(name.count), at: 16)
        let formatIndex = extensions.firstIndex { $0.type == Qcow2Header.backingFormatExtension }
        var metadataEnd = self.metadataEnd
        let switchStart = 8
        var switchEnd = 20

        switch (formatIndex.map { extensions[$0] }, format) {
        case (nil, nil):
            break
        case (let existing?, let format?) where existing.storedBytes == Self.extensionBytes(format)
                                                && existing.start + existing.storedBytes <= cluster.count:
            place(format, asExtensionAt: existing.start, in: &layout)
            switchEnd = existing.start + Self.extensionBytes(format)
        case (nil, let format?) where liveName == nil:
            // Step 2: appended while nothing reads it.
            let end = endMarker + Self.extensionBytes(format) + 8
            guard end <= cluster.count else { throw Self.noSpace }
            if cluster[endMarker + 8..<end].contains(where: { $0 != 0 }) {
                writes.append(Write(byteOffset: endMarker + 8, bytes: [UInt8](repeating: 0, count: end - endMarker - 8)))
            }
            var appended = [UInt8](repeating: 0, count: end - endMarker)
            place(format, asExtensionAt: 0, in: &appended)
            writes.append(Write(byteOffset: endMarker, bytes: appended))
            layout.replaceSubrange(endMarker..<end, with: appended)
            metadataEnd = end
        default:
            // The extension appears, goes or changes size while a name may be live: the whole
            // area, rebuilt in QEMU's order (the format first), is the switch.
            var area: [UInt8] = []
            if let format {
                area = [UInt8](repeating: 0, count: Self.extensionBytes(format))
                place(format, asExtensionAt: 0, in: &area)
            }
            for (index, kept) in extensions.enumerated() where index != formatIndex {
                // The last extension's padding may run past the cluster: stored as zeroes.
                let end = min(kept.start + kept.storedBytes, cluster.count)
                area += cluster[kept.start..<end]
                area += [UInt8](repeating: 0, count: kept.start + kept.storedBytes - end)
            }
            area += [UInt8](repeating: 0, count: 8)
            metadataEnd = headerLength + area.count
            guard metadataEnd <= cluster.count else { throw Self.noSpace }
            layout.replaceSubrange(headerLength..<metadataEnd, with: area)
            switchEnd = metadataEnd
        }

        // Step 3, or the name inside the switch when it fits sector 0 right after the extensions.
        let nameOffset: Int
        if metadataEnd + name.count <= Self.sectorBytes && max(switchEnd, metadataEnd) <= Self.sectorBytes {
            nameOffset = metadataEnd
            switchEnd = max(switchEnd, nameOffset + name.count)
        } else {
            nameOffset = try freeSpace(for: name.count, after: max(metadataEnd, self.metadataEnd))
            writes.append(Write(byteOffset: nameOffset, bytes: name))
        }
        layout.replaceSubrange(nameOffset..<nameOffset + name.count, with: name)
        layout.setBigEndian(UInt64(nameOffset), at: 8)

        guard switchEnd <= Self.sectorBytes else {
            throw BlockError(.unsupported, "the header's extensions reach past its first sector, so this change of the backing format could not be made crash-safely")
        }
        writes.append(Write(byteOffset: switchStart, bytes: Array(layout[switchStart..<switchEnd])))
        return writes
    }

    /// The writes that move the live backing file name clear of `reserved` (bytes the extension
    /// area is about to take), each to be followed by an fdatasync: the name copied where nothing
    /// points, then its offset (bytes 8–15) switched inside sector 0, so a crash leaves one copy
    /// or the other named, the same name. Empty when the name lies elsewhere.
    func movingName(clearOf reserved: Range<Int>) throws(BlockError) -> [Write] {
        guard let liveName, liveName.overlaps(reserved) else { return [] }
        let offset = try freeSpace(for: liveName.count, after: reserved.upperBound)
        var switched = [UInt8](repeating: 0, count: 8)
        switched.setBigEndian(UInt64(offset), at: 0)
        return [Write(byteOffset: offset, bytes: Array(cluster[liveName])), Write(byteOffset: 8, bytes: switched)]
    }

    /// Where `count` bytes fit in the cluster clear of the live name and of everything before
    /// `start`: right at `start` (QEMU's place for the name) or after the live name.
    private func freeSpace(for count: Int, after start: Int) throws(BlockError) -> Int {
        let candidates = [start, max(start, liveName?.upperBound ?? start)]
        for candidate in candidates where candidate + count <= cluster.count {
            if let liveName, liveName.overlaps(candidate..<candidate + count) { continue }
            return candidate
        }
        throw Self.noSpace
    }

    /// Bytes an extension holding `data` takes: type, length, data padded to 8.
    static func extensionBytes(_ data: [UInt8]) -> Int { 8 + (data.count + 7) / 8 * 8 }

    /// Writes a backing-format extension holding `format` at `offset` of `bytes`, its padding zeroed.
    private func place(_ format: [UInt8], asExtensionAt offset: Int, in bytes: inout [UInt8]) {
        let stored = Self.extensionBytes(format)
        bytes.replaceSubrange(offset..<offset + stored, with: [UInt8](repeating: 0, count: stored))
        bytes.setBigEndian(Qcow2Header.backingFormatExtension, at: offset)
        bytes.setBigEndian(UInt32(format.count), at: offset + 4)
        bytes.replaceSubrange(offset + 8..<offset + 8 + format.count, with: format)
    }

    static let noSpace = BlockError(.noSpace, "No space left in the file header")
}

extension Qcow2Driver {
    /// QEMU's qcow2_change_backing_file, in the order at the top of this file.
    public func changeBackingFile(_ name: String?, format: String?) throws(BlockError) {
        // An empty name is no backing file, as QEMU's -b "" says.
        let nameBytes = name.flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        if let nameBytes, nameBytes.count > 1023 {
            throw BlockError(.invalidRequest, "Invalid argument (a backing file name has at most 1023 bytes, this one \(nameBytes.count))")
        }
        if format != nil && nameBytes == nil {
            throw BlockError(.invalidRequest, "Invalid argument (a backing format without a backing file)")
        }
        try refuseWritesIfCorrupt()
        try writer.withLock { (state) throws(BlockError) in
            try writeBackMetadata(&state)
            try file.driver.flush()
            try file.during(.headerUpdate) { () throws(BlockError) in
                let headerBytes = Int(min(Int64(clusterSize), try file.driver.length()))
                let update = try Qcow2HeaderUpdate(cluster: try Self.readBytes(file, at: 0, count: headerBytes))
                try apply(try update.backingChange(name: nameBytes, format: format.map { Array($0.utf8) }))
            }
        }
    }

    /// Makes a header change's writes in order, an fdatasync after each.
    func apply(_ writes: [Qcow2HeaderUpdate.Write]) throws(BlockError) {
        for step in writes {
            try writeBytes(step.bytes, at: UInt64(step.byteOffset))
            try file.driver.flush()
        }
    }
}
