// ImageRebase: the copy behind a safe `blk rebase` (QEMU's img_rebase): wherever the image does
// not allocate a range itself, what its old backing chain reads there is compared with what the
// new backing image reads, and where they differ the old bytes go into the image — so that it
// reads the same once its header names the new backing image.
//
// Block status first, so that what needs no comparing is not read: ranges the image allocates,
// and ranges both chains report as zeroes (past a backing image's end, or no new backing image
// at all, counts as zeroes). The rest is read from both sides and compared a cluster at a time;
// a cluster that differs is written whole (no copy-on-write), or zeroed where the old chain
// reported zeroes. Workers read and compare chunks in parallel and write them in order
// (ChunkedCopy), so the image's new clusters are laid out in guest order.
//
// Crash safety: each write puts into the image what the guest already read through it, so a
// crash during the copy leaves an image that reads as before; the header names the new backing
// image only afterwards (BlockDriver.changeBackingFile, which makes the copy durable first).
import Glibc

/// The copy of a safe rebase of `image` onto `newBacking` (nil: onto no backing image, so the
/// image is to stand alone). The header is not changed here.
public final class ImageRebase: Sendable {
    /// The image to rebase, open writable with its old backing chain.
    public let image: BlockImage
    /// The new backing image, open read-only; nil to copy everything the old chain provides.
    public let newBacking: BlockImage?
    /// What the new backing image reads as: zeroes past it.
    let newLength: Int64
    /// The chunks; their pieces, compared and written, are the image's clusters.
    private let chunks: ChunkedCopy

    /// A rebase of `image` onto `newBacking`; nothing is read until `run`.
    public init(_ image: BlockImage, onto newBacking: BlockImage?) throws(BlockError) {
        self.image = image
        self.newBacking = newBacking
        newLength = try newBacking?.length() ?? 0
        chunks = ChunkedCopy(length: try image.length(), clusterBytes: image.clusterBytes)
    }

    /// Compares and copies everything, once, calling `progress` with the bytes done after each
    /// chunk, then flushes the image.
    public func run(workers: Int = ChunkedCopy.defaultWorkers,
                    progress: @escaping @Sendable (Int64) -> Void = { _ in }) throws(BlockError) {
        // Two buffers a worker: the old chain's bytes and the new backing image's.
        try chunks.run(workers: workers, buffers: 2, progress: progress, prepare: { (chunk, buffers) throws(BlockError) in
            try self.compare(chunk, old: buffers[0], new: buffers[1])
        }, finish: { (chunk, pieces, buffers) throws(BlockError) in
            for piece in pieces {
                let at = chunk.offset + Int64(piece.range.lowerBound)
                if piece.zeroes {
                    try self.image.writeZeroes(at: at, byteCount: Int64(piece.range.count))
                } else {
                    try self.image.write(at: at, from: UnsafeRawBufferPointer(rebasing: buffers[0][piece.range]))
                }
            }
        })
        try image.flush()
    }

    /// The pieces of one chunk where the old chain and the new backing image differ, with the
    /// old bytes left in `old` at the pieces' places.
    private func compare(_ chunk: ChunkedCopy.Chunk, old: UnsafeMutableRawBufferPointer,
                         new: UnsafeMutableRawBufferPointer) throws(BlockError) -> [ChunkedCopy.Piece] {
        let offset = chunk.offset
        var pieces: [ChunkedCopy.Piece] = []
        try ChunkedCopy.forEachRun(of: image, in: chunk) { (run, status) throws(BlockError) in
            if status.isAllocated && status.depth == 0 { return } // the image's own: the new base never shows
            var start = run.lowerBound
            while start < run.upperBound {
                let (newCount, newIsZero) = try newStatus(at: offset + Int64(start), byteCount: run.upperBound - start)
                let part = start..<start + newCount
                start = part.upperBound
                if status.isZero && newIsZero { continue }
                let oldBytes = UnsafeMutableRawBufferPointer(rebasing: old[part])
                if status.isZero {
                    oldBytes.initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    try image.read(at: offset + Int64(part.lowerBound), into: oldBytes)
                }
                let newBytes = UnsafeMutableRawBufferPointer(rebasing: new[part])
                if newIsZero {
                    newBytes.initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    try newBacking!.read(at: offset + Int64(part.lowerBound), into: newBytes)
                }
                appendDifferences(in: part, chunkOffset: offset, oldIsZero: status.isZero, old: old, new: new, to: &pieces)
            }
        }
        return pieces
    }

    /// How many bytes from `byteOffset` (at most `byteCount`) the new backing image answers
    /// alike, and whether it reports them as zeroes: past its end, or without one, it does.
    private func newStatus(at byteOffset: Int64, byteCount: Int) throws(BlockError) -> (Int, Bool) {
        guard let newBacking, byteOffset < newLength else { return (byteCount, true) }
        let inside = Int(min(Int64(byteCount), newLength - byteOffset))
        do throws(BlockError) {
            let status = try newBacking.blockStatus(at: byteOffset, byteCount: Int64(inside))
            return (Int(status.byteCount), status.isZero)
        } catch {
            // A format that cannot tell is read.
            guard error.code == .notSupportedByFormat else { throw error }
            return (inside, false)
        }
    }

    /// Compares `part` of the chunk piece by piece (pieces aligned to the image's clusters) and
    /// adds those that differ, merging neighbours that are alike into one write.
    private func appendDifferences(in part: Range<Int>, chunkOffset: Int64, oldIsZero: Bool, old: UnsafeMutableRawBufferPointer,
                                   new: UnsafeMutableRawBufferPointer, to pieces: inout [ChunkedCopy.Piece]) {
        let pieceBytes = chunks.pieceBytes
        var start = part.lowerBound
        while start < part.upperBound {
            let guestOffset = chunkOffset + Int64(start)
            let pieceEnd = min(part.upperBound, start + pieceBytes - Int(guestOffset % Int64(pieceBytes)))
            let range = start..<pieceEnd
            start = pieceEnd
            if memcmp(old.baseAddress! + range.lowerBound, new.baseAddress! + range.lowerBound, range.count) == 0 { continue }
            pieces.appendMerging(range, zeroes: oldIsZero)
        }
    }
}
