// RawDriver: the raw format — the child's bytes as they are, optionally a window of them
// (QEMU's raw `offset` and `size` options), so one file can hold several disks.
import BlockLocking

public final class RawDriver: BlockDriver {
    public let formatName = "raw"
    public let file: BlockNode
    public let byteOffset: Int64
    /// The window's size; nil: to the end of the child.
    public let windowSize: Int64?

    public init(file: BlockNode, byteOffset: Int64 = 0, windowSize: Int64? = nil) throws(BlockError) {
        self.file = file
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

    public func length() throws(BlockError) -> Int64 {
        if let windowSize { return windowSize }
        return try file.driver.length() - byteOffset
    }

    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try file.driver.read(at: self.byteOffset + byteOffset, into: buffer)
    }

    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try file.driver.write(at: self.byteOffset + byteOffset, from: buffer)
    }

    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try file.driver.writeZeroes(at: self.byteOffset + byteOffset, byteCount: byteCount, mayUnmap: mayUnmap)
    }

    public func flush() throws(BlockError) { try file.driver.flush() }

    public func readsAsZeroes(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> Bool {
        try file.driver.readsAsZeroes(at: self.byteOffset + byteOffset, byteCount: byteCount)
    }

    public func truncate(to byteCount: Int64) throws(BlockError) {
        guard windowSize == nil else { throw BlockError(.unsupported, "a raw window of fixed size cannot be resized") }
        try file.driver.truncate(to: self.byteOffset + byteCount)
    }

    public func allocatedBytes() throws(BlockError) -> Int64? { try file.driver.allocatedBytes() }

    public func eventBegan(_ event: BlockEvent) { file.driver.eventBegan(event) }
    public func eventEnded(_ event: BlockEvent) { file.driver.eventEnded(event) }
}
