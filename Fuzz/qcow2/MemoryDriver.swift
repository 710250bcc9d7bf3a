// MemoryDriver: a protocol driver over bytes in memory, so each input reaches the qcow2 driver
// without a file, a descriptor, locks or the kernel: the open path's system calls cost far more
// than the parsing under test (30 inputs a second through a file on tmpfs, against thousands).
// Past what was written the node reads as zeroes, so growing it (the writer's growth ahead, a
// truncate) costs nothing; what is written is capped, so a hostile image cannot make the fuzzer
// hold more than `capacity` bytes.
import BlockLayer
import Synchronization

final class MemoryDriver: BlockDriver {
    static let capacity = 64 << 20

    private struct Contents {
        var bytes: [UInt8]
        var length: Int64
    }

    private let contents: Mutex<Contents>

    init(_ bytes: UnsafeRawBufferPointer) {
        contents = Mutex(Contents(bytes: Array(bytes), length: Int64(bytes.count)))
    }

    var formatName: String { "memory" }

    func length() throws(BlockError) -> Int64 { contents.withLock { $0.length } }

    func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        try contents.withLock { (contents) throws(BlockError) in
            try Self.checkRange(byteOffset, buffer.count, within: contents.length)
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            let start = Int(byteOffset)
            guard start < contents.bytes.count else { return }
            let stored = min(buffer.count, contents.bytes.count - start)
            contents.bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + start, byteCount: stored) }
        }
    }

    func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try contents.withLock { (contents) throws(BlockError) in
            let end = try Self.reserve(byteOffset, buffer.count, in: &contents)
            contents.bytes.replaceSubrange(Int(byteOffset)..<end, with: buffer)
        }
    }

    func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        try contents.withLock { (contents) throws(BlockError) in
            guard byteCount >= 0 else { throw BlockError(.invalidRequest, "memory: negative count \(byteCount)") }
            let end = try Self.reserve(byteOffset, Int(byteCount), in: &contents)
            contents.bytes.replaceSubrange(Int(byteOffset)..<end, with: repeatElement(0, count: end - Int(byteOffset)))
        }
    }

    func flush() throws(BlockError) {}

    func truncate(to byteCount: Int64) throws(BlockError) {
        guard byteCount >= 0 else { throw BlockError(.invalidRequest, "memory: negative length \(byteCount)") }
        contents.withLock { contents in
            contents.length = byteCount
            if Int64(contents.bytes.count) > byteCount { contents.bytes.removeLast(contents.bytes.count - Int(byteCount)) }
        }
    }

    func allocatedBytes() throws(BlockError) -> Int64? { contents.withLock { Int64($0.bytes.count) } }

    /// Makes `bytes` hold `count` bytes at `byteOffset` (the node grows if they pass its end);
    /// returns where they end.
    private static func reserve(_ byteOffset: Int64, _ count: Int, in contents: inout Contents) throws(BlockError) -> Int {
        let (end, overflow) = byteOffset.addingReportingOverflow(Int64(count))
        guard byteOffset >= 0, !overflow, end <= Int64(capacity) else {
            throw BlockError(.noSpace, "memory: \(count) bytes at offset \(byteOffset) pass the capacity of \(capacity) bytes")
        }
        if Int(end) > contents.bytes.count { contents.bytes += repeatElement(0, count: Int(end) - contents.bytes.count) }
        contents.length = max(contents.length, end)
        return Int(end)
    }

    private static func checkRange(_ byteOffset: Int64, _ count: Int, within length: Int64) throws(BlockError) {
        let (end, overflow) = byteOffset.addingReportingOverflow(Int64(count))
        guard byteOffset >= 0, !overflow, end <= length else {
            throw BlockError(.ioError, "memory: \(count) bytes at offset \(byteOffset) reach past the end (\(length) bytes)")
        }
    }
}
