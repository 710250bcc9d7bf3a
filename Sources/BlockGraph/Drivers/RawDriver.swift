// RawDriver: the raw format — the child's bytes as they are, optionally a window of them
// (QEMU's raw `offset` and `size` options), so one file can hold several disks.
import BlockLocking

/// The raw format's node: no metadata, so its only work is the window, and block status comes
/// from the file's holes.
public final class RawDriver: BlockDriver {
    /// "raw", as `-f raw` names it.
    public let formatName = "raw"
    /// The node holding the bytes.
    public let file: BlockNode
    /// `file.driver`, one load from self (see BlockImage.rootDriver: no retain per request).
    private let fileDriver: any BlockDriver
    /// Where the window starts in the file: 0 for a whole-file image.
    public let byteOffset: Int64
    /// The window's size; nil: to the end of the child.
    public let windowSize: Int64?

    /// A raw node over `file`; a window that does not fit in the file is refused here, once, so
    /// requests need no check of their own.
    public init(file: BlockNode, byteOffset: Int64 = 0, windowSize: Int64? = nil) throws(BlockError) {
        self.file = file
        fileDriver = file.driver
        self.byteOffset = byteOffset
        self.windowSize = windowSize
        let available = try file.driver.length()
        guard byteOffset >= 0, byteOffset <= available else {
            throw BlockError(.invalidRequest, "offset \(byteOffset) is past the end of the file (\(available) bytes)")
        }
        if let windowSize, windowSize < 0 || byteOffset + windowSize > available {
            throw BlockError(.invalidRequest, "the window of \(windowSize) bytes at offset \(byteOffset) does not fit in the file (\(available) bytes)")
        }
    }

    /// The window's size, or the file's length past its start.
    public func length() throws(BlockError) -> Int64 {
        if let windowSize { return windowSize }
        return try fileDriver.length() - byteOffset
    }

    /// The file's bytes, shifted by the window's start.
    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try fileDriver.read(at: self.byteOffset + byteOffset, into: buffer)
    }

    /// Into the file, shifted by the window's start.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try fileDriver.write(at: self.byteOffset + byteOffset, from: buffer)
    }

    /// The file's zeroes, shifted by the window's start: holes are punched where allowed.
    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try fileDriver.writeZeroes(at: self.byteOffset + byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
    }

    /// Fast exactly where the file's zeroing is.
    public func writeZeroesWithoutFallback(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try fileDriver.writeZeroesWithoutFallback(at: self.byteOffset + byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
    }

    /// Raw keeps no state of its own: the file's flush is the flush.
    public func flush() throws(BlockError) { try fileDriver.flush() }

    /// The file's status where the window puts the range (QEMU's raw answers BDRV_BLOCK_RAW:
    /// ask the file), host offsets included.
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        try fileDriver.blockStatus(at: self.byteOffset + byteOffset, byteCount: byteCount)
    }

    /// The file's range where the window puts it.
    public func hostExtent(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> HostExtent {
        try fileDriver.hostExtent(at: self.byteOffset + byteOffset, byteCount: byteCount)
    }

    /// Resizes the file; a window of fixed size cannot be resized without moving what follows it.
    public func truncate(to byteCount: Int64) throws(BlockError) {
        guard windowSize == nil else { throw BlockError(.unsupported, "a raw window of fixed size cannot be resized") }
        try fileDriver.truncate(to: self.byteOffset + byteCount)
    }

    /// The whole file's figure, window or not, as qemu-img reports it.
    public func allocatedBytes() throws(BlockError) -> Int64? { try fileDriver.allocatedBytes() }

    /// Passed to the file: raw has no steps of its own.
    public func eventBegan(_ event: BlockEvent) { fileDriver.eventBegan(event) }
    /// Passed to the file, as its beginning was.
    public func eventEnded(_ event: BlockEvent) { fileDriver.eventEnded(event) }
}
