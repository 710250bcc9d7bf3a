// SizeMeasurement: how much storage an image of a format takes (QEMU's bdrv_measure and its
// BlockMeasureInfo), for `blk measure`. The arithmetic is the target format's; what it is
// measured for is either a size alone or an image to be copied, whose allocation the format
// reads through block status.

/// What a measurement is for: a new empty image, or a copy of an image's guest bytes.
public enum MeasuredContent: Sendable {
    /// An image of this many guest bytes, none written.
    case empty(virtualSize: Int64)
    /// A copy of every guest byte of this image, backing chain included, as `convert` makes it.
    case copy(of: BlockImage)
}

extension MeasuredContent {
    /// The guest size in whole 512-byte sectors, as QEMU sees every image (bdrv_getlength) and
    /// so measures it; a size that cannot be rounded within Int64 is refused, as a usage error
    /// when given, as the image's fault when read from it.
    public func sectorAlignedSize() throws(BlockError) -> Int64 {
        let size: Int64, failure: BlockError.Code
        switch self {
        case .empty(let virtualSize): (size, failure) = (virtualSize, .invalidRequest)
        case .copy(let image): (size, failure) = (try image.length(), .corrupt)
        }
        let (end, overflow) = size.addingReportingOverflow(511)
        guard size >= 0, !overflow else { throw BlockError(failure, "Invalid image size: \(size) bytes is too large to measure") }
        return end / 512 * 512
    }
}

/// The three figures of qemu-img measure, in bytes.
public struct SizeMeasurement: Sendable, Hashable {
    /// The file a create and a copy would leave: what must be free on the storage.
    public var required: Int64
    /// The file with every guest cluster allocated (`preallocation=full`).
    public var fullyAllocated: Int64
    /// The room the input's persistent dirty bitmaps would take in the copy; nil where the
    /// input or the target cannot store them.
    public var bitmaps: Int64?

    /// The figures as a format computes them; no bitmaps unless both images can hold them.
    public init(required: Int64, fullyAllocated: Int64, bitmaps: Int64? = nil) {
        self.required = required
        self.fullyAllocated = fullyAllocated
        self.bitmaps = bitmaps
    }
}

/// A persistent dirty bitmap an image carries, as much as a copy's size depends on.
public struct PersistentBitmap: Sendable, Hashable {
    /// Its name, whose bytes take room in the bitmap directory.
    public var name: String
    /// The guest bytes one bit stands for.
    public var granularity: Int64

    /// A bitmap as the image's directory describes it.
    public init(name: String, granularity: Int64) {
        self.name = name
        self.granularity = granularity
    }
}

extension BlockImage {
    /// The bytes of the `clusterSize` clusters that hold data anywhere in the backing chain, as
    /// QEMU's qcow2_measure counts them: a run that reads as zeroes costs nothing; a data run
    /// counts from the start of its first cluster to the end of its last, and the walk goes on
    /// after that end, so no cluster counts twice.
    public func dataBytes(inClustersOf clusterSize: Int64) throws(BlockError) -> Int64 {
        let length = try length()
        var offset: Int64 = 0, counted: Int64 = 0
        while offset < length {
            let status = try blockStatus(at: offset, byteCount: length - offset)
            guard status.byteCount > 0, status.byteCount <= length - offset else {
                throw BlockError(.ioError, "Block status at offset \(offset) of '\(path)' answered \(status.byteCount) bytes")
            }
            guard !status.isZero && status.isData && status.isAllocated else {
                offset += status.byteCount
                continue
            }
            // Within Int64: the rounded end is below the length plus one cluster, and a length
            // that close to Int64.max is refused here rather than wrapped.
            let (runEnd, overflow) = (offset + status.byteCount).addingReportingOverflow(clusterSize - 1)
            guard !overflow else { throw BlockError(.corrupt, "'\(path)' is too large to measure (\(length) bytes)") }
            let clusterEnd = runEnd / clusterSize * clusterSize
            counted += clusterEnd - offset / clusterSize * clusterSize
            offset = clusterEnd
        }
        return counted
    }
}
