// BlockStatus: what a range of an image is without reading it — QEMU's bdrv_block_status, with
// the backing chain walked as `qemu-img map` walks it. A run starts at the asked offset and is
// as long as its answer holds, capped by the request and by what the driver sees in one look
// (qcow2: one L2 table), so a caller walks an image of any size in steps of bounded memory.

/// The status of a run of bytes from an asked offset; the fields are qemu-img map's.
public struct BlockStatus: Sendable, Hashable {
    /// The length of the run from the asked offset: at least 1 when at least 1 byte was asked.
    public var byteCount: Int64
    /// The bytes are stored (qemu-img map "data").
    public var isData: Bool
    /// The bytes read as zeroes ("zero"); may be true beside `isData` for data known to be zero.
    public var isZero: Bool
    /// Some node of the backing chain holds the run ("present"); false where it reads as zeroes
    /// only because no node does (past a shorter backing image, or no backing image at all).
    public var isAllocated: Bool
    /// Stored compressed ("compressed"): there is no host offset to read it at.
    public var isCompressed: Bool
    /// The node of the chain the answer comes from ("depth"): 0 the image itself, 1 its backing
    /// image, and so on.
    public var depth: Int
    /// Where the run starts in that node's file, when stored there as it reads ("offset").
    public var hostOffset: Int64?
    /// The file `hostOffset` is in, as its path was given or derived (qemu-img map's filename).
    public var file: String?
    /// Unallocated, and read as zeroes because the backing image of the node at `depth` ends
    /// before the run. qemu-img map shows it as any unallocated run; QEMU's
    /// bdrv_block_status_above counts these zeroes as allocated in the shorter image, so
    /// qemu-img compare -s tells them from zeroes that no image of the chain holds.
    public var isPastBackingEnd: Bool

    /// A status as a driver answers it; depth and offset are filled in on the way down the chain.
    public init(byteCount: Int64, isData: Bool, isZero: Bool, isAllocated: Bool, isCompressed: Bool = false,
                depth: Int = 0, hostOffset: Int64? = nil, file: String? = nil, isPastBackingEnd: Bool = false) {
        self.byteCount = byteCount
        self.isData = isData
        self.isZero = isZero
        self.isAllocated = isAllocated
        self.isCompressed = isCompressed
        self.depth = depth
        self.hostOffset = hostOffset
        self.file = file
        self.isPastBackingEnd = isPastBackingEnd
    }

    /// A run no node of the chain holds, which reads as zeroes; `pastBackingEnd`: because the
    /// backing image ends before it.
    public static func unallocatedZeroes(byteCount: Int64, pastBackingEnd: Bool = false) -> BlockStatus {
        BlockStatus(byteCount: byteCount, isData: false, isZero: true, isAllocated: false, isPastBackingEnd: pastBackingEnd)
    }

    /// The same answer one node further down a backing chain.
    public func inBacking() -> BlockStatus {
        var deeper = self
        deeper.depth += 1
        return deeper
    }
}

extension BlockDriver {
    /// Whether `byteCount` bytes at `byteOffset` are known to read as zeroes without reading
    /// them (holes, zero or unallocated clusters): copies skip them. False when unknown.
    public func readsAsZeroes(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> Bool {
        var offset = byteOffset
        let end = byteOffset + byteCount
        while offset < end {
            let status: BlockStatus
            do {
                status = try blockStatus(at: offset, byteCount: end - offset)
            } catch {
                if error.code == .notSupportedByFormat { return false }
                throw error
            }
            guard status.isZero, status.byteCount > 0 else { return false }
            offset += status.byteCount
        }
        return true
    }
}
