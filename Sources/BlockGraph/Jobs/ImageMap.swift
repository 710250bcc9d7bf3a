// ImageMap: qemu-img map's walk over an image (qemu-img.c, img_map): block status run after
// run, each run widened while the next one has the same properties (entry_mergeable), so that
// `blk map` prints the lines qemu-img 7.2 prints.
//
// Merging is by properties only: where the drivers split their answers (one qcow2 L2 table, one
// SEEK_DATA extent) never shows. qemu-img's human format ignores the difference between
// unallocated, zero and zero-with-data, and folds it away before merging the next run
// (`foldingZeroes`), so those lines merge further than the JSON ones.

/// One line of the map: a range of guest bytes and where they come from.
public struct MapEntry: Sendable, Hashable {
    /// The first guest byte of the range (qemu-img's "start").
    public var start: Int64
    /// How many guest bytes the range covers; 0 only for the entry past the end.
    public var length: Int64
    /// The image of the backing chain that answered: 0 the image itself, 1 its backing file…
    public var depth: Int
    /// Allocated in that image (qemu-img's "present").
    public var isAllocated: Bool
    /// The bytes read as zeroes (qemu-img's "zero").
    public var isZero: Bool
    /// The bytes are stored data rather than known zeroes (qemu-img's "data").
    public var isData: Bool
    /// Where the bytes are in `file`; nil where they are not stored as they are (unallocated,
    /// zero without a cluster, compressed).
    public var hostOffset: Int64?
    /// The file holding them, as the user would name it; only with a host offset.
    public var file: String?

    /// The first guest byte after the range: where the next entry starts.
    public var end: Int64 { start + length }

    /// qemu-img's entry_mergeable: `next` continues this entry when everything but the range
    /// matches and, for stored bytes, the host offsets run on.
    func isContinued(by next: MapEntry) -> Bool {
        guard length > 0, isZero == next.isZero, isData == next.isData, depth == next.depth,
              isAllocated == next.isAllocated, file == next.file, (hostOffset == nil) == (next.hostOffset == nil) else {
            return false
        }
        guard let hostOffset else { return true }
        return hostOffset + length == next.hostOffset
    }
}

/// The entries of `image` from `start` up to `end` (the image's end at most), merged as
/// qemu-img merges them. The last entry comes even when it is empty (a start at or past the
/// end): qemu-img's JSON prints it.
public struct ImageMap: Sendable {
    /// The image walked, whose backing chain answers for unallocated runs.
    public let image: BlockImage
    /// The first guest byte mapped (`--start-offset`).
    public let start: Int64
    /// Where mapping stops: the start plus `--max-length`, at most the image's end.
    public let end: Int64
    /// Merges as qemu-img's human format does, which does not tell zeroes from unallocated.
    public let foldingZeroes: Bool
    private var current: MapEntry
    /// The last entry has been returned.
    public private(set) var isFinished = false

    /// `maxLength` nil: to the end of the image.
    public init(image: BlockImage, start: Int64, maxLength: Int64?, foldingZeroes: Bool) throws(BlockError) {
        guard start >= 0, (maxLength ?? 0) >= 0 else {
            throw BlockError(.invalidRequest, "The start offset and the length must not be negative")
        }
        let length = try image.length()
        self.image = image
        self.start = start
        self.foldingZeroes = foldingZeroes
        // An end past the image's, or past Int64, is the image's.
        end = maxLength.map { start.addingReportingOverflow($0) }.map { $0.overflow ? length : min($0.partialValue, length) } ?? length
        current = MapEntry(start: start, length: 0, depth: 0, isAllocated: false, isZero: false, isData: false)
    }

    /// The next entry, nil after the last.
    public mutating func next() throws(BlockError) -> MapEntry? {
        guard !isFinished else { return nil }
        while current.end < end {
            let following = try entry(at: current.end)
            if current.isContinued(by: following) {
                current.length += following.length
                continue
            }
            guard current.length > 0 else {
                current = following
                continue
            }
            let done = current
            current = following
            if foldingZeroes && (!current.isData || current.isZero) {
                current.isData = false
                current.isZero = true
            }
            return done
        }
        isFinished = true
        return current
    }

    private func entry(at offset: Int64) throws(BlockError) -> MapEntry {
        let status = try image.blockStatus(at: offset, byteCount: end - offset)
        guard status.byteCount > 0, status.byteCount <= end - offset else {
            throw BlockError(.ioError, "Block status at offset \(offset) of '\(image.path)' answered \(status.byteCount) bytes")
        }
        return MapEntry(start: offset, length: status.byteCount, depth: status.depth, isAllocated: status.isAllocated,
                        isZero: status.isZero, isData: status.isData, hostOffset: status.hostOffset,
                        file: status.hostOffset == nil ? nil : status.file)
    }
}
