// ConvertPipeline: the copy behind `blk convert`. Worker threads (one per core) each take the
// next chunk, read it and prepare it — which pieces are zeroes, and with -c the compressed
// clusters — in parallel; the chunks are then written strictly in order, so the new image is
// laid out as the guest sees it (no fragmentation), as qemu-img convert does without -W. On a
// 2-core machine reading and compressing one chunk overlaps writing the one before it.
import BlockLayer
import Dispatch
import Glibc
import Synchronization

final class ConvertPipeline: Sendable {
    let input: BlockImage
    let output: BlockImage
    /// -c: clusters are compressed by the workers and stored compressed, in order.
    let compressing: Bool
    /// The granularity at which zeroes are skipped: a cluster of qcow2 output, a hole of raw.
    let pieceBytes: Int
    let chunkBytes: Int
    let length: Int64
    private let nextChunk = Atomic(0)
    /// The chunk whose turn it is to be written, and the first failure (which ends every worker).
    private let turns = OrderedTurns()
    private let failure = Mutex<BlockError?>(nil)
    private let written = Atomic<Int64>(0)

    init(input: BlockImage, output: BlockImage, compressed: Bool, pieceBytes: Int, chunkBytes: Int) throws(BlockError) {
        self.input = input
        self.output = output
        self.compressing = compressed
        self.pieceBytes = pieceBytes
        self.chunkBytes = chunkBytes
        length = try input.length()
    }

    /// Copies everything, calling `progress` with the bytes done after each chunk.
    func run(workers: Int, progress: @escaping @Sendable (Int64) -> Void) throws(BlockError) {
        let group = DispatchGroup()
        for _ in 0..<max(1, workers) {
            group.enter()
            startThread {
                defer { group.leave() }
                self.work(progress)
            }
        }
        group.wait()
        if let failure = failure.withLock({ $0 }) { throw failure }
    }

    /// One piece of a prepared chunk: bytes to copy as they are, or a compressed cluster.
    private enum Piece {
        case copy(Range<Int>)
        case compressed(CompressedCluster)
    }

    private func work(_ progress: @Sendable (Int64) -> Void) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        let chunkCount = Int((length + Int64(chunkBytes) - 1) / Int64(chunkBytes))
        while true {
            let index = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < chunkCount else { return }
            let offset = Int64(index) * Int64(chunkBytes)
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(Int64(chunkBytes), length - offset))])
            var pieces: Result<[Piece], BlockError>
            do throws(BlockError) {
                pieces = .success(try prepare(chunk, at: offset))
            } catch {
                pieces = .failure(error)
            }
            turns.wait(for: index)
            defer { turns.endTurn() }
            guard failure.withLock({ $0 == nil }) else { return }
            do throws(BlockError) {
                try store(try pieces.get(), of: UnsafeRawBufferPointer(chunk), at: offset)
                progress(written.add(Int64(chunk.count), ordering: .relaxed).newValue)
            } catch {
                failure.withLock { $0 = $0 ?? error }
                return
            }
        }
    }

    /// Reads a chunk and says what to write of it. Holes are found a probe (a megabyte) at a
    /// time, and what reads as zeroes is not even read: the new image reads as zeroes already,
    /// and writing zeroes would only fill its holes.
    private func prepare(_ chunk: UnsafeMutableRawBufferPointer, at offset: Int64) throws(BlockError) -> [Piece] {
        var pieces: [Piece] = []
        let probeBytes = max(Self.probeBytes, pieceBytes)
        for probeStart in stride(from: 0, to: chunk.count, by: probeBytes) {
            let probe = probeStart..<min(probeStart + probeBytes, chunk.count)
            if try input.readsAsZeroes(at: offset + Int64(probe.lowerBound), byteCount: Int64(probe.count)) { continue }
            try input.read(at: offset + Int64(probe.lowerBound), into: UnsafeMutableRawBufferPointer(rebasing: chunk[probe]))
            for start in stride(from: probe.lowerBound, to: probe.upperBound, by: pieceBytes) {
                let range = start..<min(start + pieceBytes, probe.upperBound)
                let piece = UnsafeRawBufferPointer(rebasing: chunk[range])
                if Self.isZero(piece) { continue }
                if compressing {
                    pieces.append(.compressed(try output.compressCluster(at: offset + Int64(start), piece)))
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

    private func store(_ pieces: [Piece], of chunk: UnsafeRawBufferPointer, at offset: Int64) throws(BlockError) {
        for piece in pieces {
            switch piece {
            case .copy(let range):
                try output.write(at: offset + Int64(range.lowerBound), from: UnsafeRawBufferPointer(rebasing: chunk[range]))
            case .compressed(let cluster):
                try output.writeCompressed(cluster)
            }
        }
    }

    /// All zero: the first byte is, and every byte equals the one before it (one memcmp).
    static func isZero(_ piece: UnsafeRawBufferPointer) -> Bool {
        guard let start = piece.baseAddress, let first = piece.first else { return true }
        return first == 0 && memcmp(start, start + 1, piece.count - 1) == 0
    }
}
