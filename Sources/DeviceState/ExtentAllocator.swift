// ExtentAllocator: where a new blob copy may go — the first run of free blocks in the data area
// that no blob of the current directory uses. Writing only there is what makes a commit atomic:
// until the new directory is durable, the current one's bytes are untouched. First fit keeps
// copies ping-ponging between the same two places, so a qcow2 image stops allocating clusters
// once both exist.

struct ExtentAllocator {
    let dataStart: UInt64
    let dataEnd: UInt64
    /// Extents in use, as block-rounded [start, end) ranges, sorted.
    private(set) var used: [Range<UInt64>]

    init(superblock: Superblock, live blobs: [BlobRecord]) {
        dataStart = superblock.dataStart
        dataEnd = superblock.storeSize
        used = blobs.compactMap { $0.extent.map { $0.lowerBound..<Self.roundUp($0.upperBound) } }.sorted { $0.lowerBound < $1.lowerBound }
    }

    static func roundUp(_ value: UInt64) -> UInt64 {
        let block = UInt64(Superblock.blockSize)
        return (value + block - 1) / block * block
    }

    var capacity: UInt64 { dataEnd - dataStart }
    var free: UInt64 { capacity - used.reduce(0) { $0 + UInt64($1.count) } }

    /// Reserves `byteCount` bytes (rounded up to whole blocks) and returns where they start.
    mutating func allocate(_ byteCount: UInt64, for name: String) throws(StateError) -> UInt64 {
        let size = max(Self.roundUp(byteCount), UInt64(Superblock.blockSize))
        guard size <= capacity else {
            throw StateError(.noRoom, "blob '\(name)' needs \(size) bytes; the store's data area holds \(capacity)")
        }
        var candidate = dataStart
        var index = 0
        while index <= used.count {
            let nextUsed = index < used.count ? used[index].lowerBound : dataEnd
            if nextUsed >= candidate && nextUsed - candidate >= size {
                used.insert(candidate..<candidate + size, at: index)
                return candidate
            }
            if index < used.count { candidate = max(candidate, used[index].upperBound) }
            index += 1
        }
        throw StateError(.noRoom, "blob '\(name)' needs \(size) bytes; the store's data area has \(free) of \(capacity) free beside the live copies (a commit needs room for the new copy while the old one stays)")
    }
}
