// ExportReply: a reply as the channel sends it — bytes made in memory and, between them, ranges of
// image files that the kernel sends from the page cache (sendfile), for the data chunks of reads
// (ExportReads.swift). A reply is written part after part with nothing of another reply between,
// so the parts make one reply on the wire.
import NBD
import NIOCore

struct ExportReply: Sendable {
    /// The reply's bytes, in order; never empty, and the first a buffer with the reply's first
    /// header.
    private(set) var parts: [IOData]

    /// A reply made whole in memory.
    init(_ bytes: ByteBuffer) { parts = [.byteBuffer(bytes)] }

    fileprivate init(parts: [IOData]) { self.parts = parts }

    /// The bytes of the reply the kernel sends from files.
    var bytesFromFiles: Int {
        parts.reduce(0) { sum, part in
            guard case .fileRegion(let region) = part else { return sum }
            return sum + region.readableBytes
        }
    }

    /// Whether the reply is an error (its first header says so; see nbdReplyReportsError).
    var reportsError: Bool {
        guard case .byteBuffer(let first) = parts.first else { return false }
        return first.nbdReplyReportsError
    }

}

/// A reply being made: the buffer written now, and the parts before it.
struct ExportReplyBuilder {
    /// Where the next bytes go.
    var buffer: ByteBuffer
    private var parts: [IOData] = []
    private let allocator: ByteBufferAllocator

    /// Where a header starts, to change its flags later.
    struct Position {
        fileprivate let part: Int
        fileprivate let index: Int
    }

    init(allocator: ByteBufferAllocator, capacity: Int) {
        self.allocator = allocator
        buffer = allocator.buffer(capacity: capacity)
    }

    /// Where the next header will start.
    var position: Position { Position(part: parts.count, index: buffer.writerIndex) }

    /// A range of a file, sent as it is after the bytes written so far.
    mutating func append(_ region: FileRegion) {
        // Empty only between two regions: no header waits in it to be flagged.
        if buffer.readableBytes > 0 { parts.append(.byteBuffer(buffer)) }
        parts.append(.fileRegion(region))
        // Headers and short copied runs: what follows a region is small.
        buffer = allocator.buffer(capacity: 64)
    }

    /// Sets `flags` on the structured chunk header at `position`.
    mutating func setChunkFlags(_ flags: NBDReplyFlags, at position: Position) {
        let offset = position.index + 4
        if position.part == parts.count {
            buffer.setInteger(flags.rawValue, at: offset)
        } else if case .byteBuffer(var bytes) = parts[position.part] {
            bytes.setInteger(flags.rawValue, at: offset)
            parts[position.part] = .byteBuffer(bytes)
        }
    }

    /// The reply, every part in order.
    func finished() -> ExportReply {
        var parts = self.parts
        if buffer.readableBytes > 0 || parts.isEmpty { parts.append(.byteBuffer(buffer)) }
        return ExportReply(parts: parts)
    }
}
