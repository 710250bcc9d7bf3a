// ImageConversion: the copy behind `blk convert`, as a job any tool of the block layer can run.
// Worker threads (one per core) each take the next chunk, read it and prepare it — which pieces
// are zeroes, and when compressing the compressed clusters — in parallel; the chunks are then
// written strictly in order, so the new image is laid out as the guest sees it (no
// fragmentation), as qemu-img convert does without -W. On a 2-core machine reading and
// compressing one chunk overlaps writing the one before it.
//
// Zeroes are skipped cluster by cluster in a format with clusters (an unallocated cluster), in
// 64 KiB holes in raw; what reads as zeroes by block status is not even read, since the new
// image reads as zeroes already and writing zeroes would only fill its holes.

/// A copy of every guest-visible byte of one image into another of at least its length, as
/// `qemu-img convert` makes it: sparse (runs of zeroes left unallocated), laid out in guest
/// order, optionally with every cluster compressed.
///
/// The target is written without the flushes that order a live image's metadata — a copy cut
/// short by a crash is made again, not repaired — so open it with ``CacheMode/unsafe`` and let
/// ``run(workers:syncAtEnd:rateLimit:progress:)`` make it durable with one `fdatasync` at the end, which
/// lets the page cache write everything back in one go.
public final class ImageConversion: Sendable {
    /// The image read.
    public let source: BlockImage
    /// The image written: new, reading as zeroes, opened writable.
    public let target: BlockImage
    /// Clusters are compressed by the workers and stored compressed, in order.
    public let compressing: Bool
    /// The chunks; their pieces, at which zeroes are skipped, are the target's clusters.
    private let chunks: ChunkedCopy

    /// A conversion of `source` into `target`; nothing is copied until `run`. Fails when
    /// `target` is shorter than `source`. A target format that cannot store compressed clusters
    /// fails the run with `notSupportedByFormat` before anything is written.
    public init(from source: BlockImage, to target: BlockImage, compressed: Bool) throws(BlockError) {
        self.source = source
        self.target = target
        compressing = compressed
        let length = try source.length()
        let targetLength = try target.length()
        guard targetLength >= length else {
            throw BlockError(.invalidRequest, "the target image (\(targetLength) bytes) is shorter than the source (\(length) bytes)")
        }
        chunks = ChunkedCopy(length: length, clusterBytes: target.clusterBytes)
    }

    /// Copies everything, once, calling `progress` with the bytes done after each chunk, then flushes
    /// the target: with `syncAtEnd`, whatever its cache mode (one `fdatasync` that makes the
    /// copy durable); without, as its cache mode says. With `rateLimit`, the data written
    /// averages at most its bytes per second.
    public func run(workers: Int = ChunkedCopy.defaultWorkers, syncAtEnd: Bool, rateLimit: RateLimit? = nil,
                    progress: @escaping @Sendable (Int64) -> Void = { _ in }) throws(BlockError) {
        try chunks.run(workers: workers, buffers: 1, progress: progress, prepare: { (chunk, buffers) throws(BlockError) in
            try self.prepare(buffers[0], at: chunk.offset)
        }, finish: { (chunk, pieces, buffers) throws(BlockError) in
            let written = try self.store(pieces, of: UnsafeRawBufferPointer(buffers[0]), at: chunk.offset)
            rateLimit?.pace(written)
        })
        if syncAtEnd { try target.flushIgnoringCacheMode() } else { try target.flush() }
    }

    /// One piece of a prepared chunk: bytes to copy as they are, or a compressed cluster.
    enum Piece {
        case copy(Range<Int>)
        case compressed(CompressedCluster)
    }

    /// Reads a chunk and says what to write of it. Holes are found a probe (a megabyte) at a
    /// time.
    private func prepare(_ chunk: UnsafeMutableRawBufferPointer, at offset: Int64) throws(BlockError) -> [Piece] {
        var pieces: [Piece] = []
        let pieceBytes = chunks.pieceBytes
        let probeBytes = max(Self.probeBytes, pieceBytes)
        for probeStart in stride(from: 0, to: chunk.count, by: probeBytes) {
            let probe = probeStart..<min(probeStart + probeBytes, chunk.count)
            if try source.readsAsZeroes(at: offset + Int64(probe.lowerBound), byteCount: Int64(probe.count)) { continue }
            try source.read(at: offset + Int64(probe.lowerBound), into: UnsafeMutableRawBufferPointer(rebasing: chunk[probe]))
            for start in stride(from: probe.lowerBound, to: probe.upperBound, by: pieceBytes) {
                let range = start..<min(start + pieceBytes, probe.upperBound)
                let piece = UnsafeRawBufferPointer(rebasing: chunk[range])
                if piece.isAllZeroes { continue }
                if compressing {
                    pieces.append(.compressed(try target.compressCluster(at: offset + Int64(start), piece)))
                } else if case .copy(let run) = pieces.last, run.upperBound == start {
                    pieces[pieces.count - 1] = .copy(run.lowerBound..<range.upperBound) // runs go out as one write
                } else {
                    pieces.append(.copy(range))
                }
            }
        }
        return pieces
    }

    /// How much of a chunk one hole probe covers (at least a piece).
    static let probeBytes = 1 << 20

    /// Writes the pieces; returns the bytes written.
    private func store(_ pieces: [Piece], of chunk: UnsafeRawBufferPointer, at offset: Int64) throws(BlockError) -> Int64 {
        var written = 0
        for piece in pieces {
            switch piece {
            case .copy(let range):
                try target.write(at: offset + Int64(range.lowerBound), from: UnsafeRawBufferPointer(rebasing: chunk[range]))
                written += range.count
            case .compressed(let cluster):
                try target.writeCompressed(cluster)
                switch cluster.payload {
                case .compressed(let bytes), .uncompressed(let bytes): written += bytes.count
                }
            }
        }
        return Int64(written)
    }
}
