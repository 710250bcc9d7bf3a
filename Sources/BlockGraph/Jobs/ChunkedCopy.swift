// ChunkedCopy: what the copying jobs share (ImageConversion, ImageRebase, ImageCommit) — the
// guest range cut into chunks, and the work loop over them. Worker threads (one per core) each
// take the next chunk and prepare it — read it, compare it, compress it — in parallel; the
// chunks are then finished (written) strictly in order, so what a job writes lands in guest
// order. The first failure ends every worker and is what `run` throws.
import Dispatch
import Glibc
import Posix
import Synchronization

/// The first `length` bytes of an image in chunks, prepared in parallel and finished in order,
/// once.
public final class ChunkedCopy: Sendable {
    let length: Int64
    /// The unit a job skips, compares or writes: the image's cluster, or `holeBytes` for a
    /// format without clusters.
    let pieceBytes: Int
    /// Bytes a worker prepares and then finishes in its turn: large enough that syscalls and
    /// the hand-over between workers (a futex wake-up each) cost nothing next to the copy, and at
    /// least a piece.
    let chunkBytes: Int
    let count: Int
    private let nextChunk = Atomic(0)
    private let turns = OrderedTurns()
    private let failure = Mutex<BlockError?>(nil)
    private let started = Atomic(false)
    private let done = Atomic<Int64>(0)

    static let defaultChunkBytes = 4 << 20
    /// The piece of a format without clusters.
    static let holeBytes = 64 << 10

    /// The workers a copying job starts unless told otherwise: one per online core.
    public static var defaultWorkers: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The chunks of `length` bytes of an image with clusters of `clusterBytes` (nil: none).
    init(length: Int64, clusterBytes: Int?) {
        self.length = length
        pieceBytes = clusterBytes ?? Self.holeBytes
        chunkBytes = max(Self.defaultChunkBytes, pieceBytes)
        count = Int((length + Int64(chunkBytes) - 1) / Int64(chunkBytes))
    }

    /// One chunk: where it starts in the guest, and its bytes (a whole chunk but at the end).
    struct Chunk {
        let offset: Int64
        let count: Int
    }

    /// A piece of a chunk to write: bytes from a buffer's same place, or zeroes.
    struct Piece {
        var range: Range<Int>
        var zeroes: Bool
    }

    /// Walks `chunk` of `image` run by run as block status answers: `body` gets each run's
    /// bytes in the chunk and its status.
    static func forEachRun(of image: BlockImage, in chunk: Chunk,
                           _ body: (_ run: Range<Int>, _ status: BlockStatus) throws(BlockError) -> Void) throws(BlockError) {
        var position = 0
        while position < chunk.count {
            let status = try image.blockStatus(at: chunk.offset + Int64(position), byteCount: Int64(chunk.count - position))
            let run = position..<position + Int(status.byteCount)
            position = run.upperBound
            try body(run, status)
        }
    }

    /// Runs `workers` threads until every chunk is finished or a step failed, and throws that
    /// failure. Each thread has `buffers` buffers of a chunk of its own, which `prepare` fills
    /// and `finish` (in chunk order) writes from; both see them cut to the chunk's bytes.
    /// `progress` is called with the bytes finished after each chunk.
    func run<Prepared>(workers: Int, buffers: Int, progress: @escaping @Sendable (Int64) -> Void,
                       prepare: @escaping @Sendable (_ chunk: Chunk, _ buffers: [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Prepared,
                       finish: @escaping @Sendable (_ chunk: Chunk, _ prepared: Prepared, _ buffers: [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Void)
        throws(BlockError) {
        // The chunk counter and the turns only go forward: a second run would do nothing.
        guard !started.exchange(true, ordering: .relaxed) else { throw BlockError(.invalidRequest, "a copying job runs once") }
        let group = DispatchGroup()
        for _ in 0..<max(1, workers) {
            group.enter()
            startThread {
                defer { group.leave() }
                let owned = (0..<buffers).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: self.chunkBytes, alignment: 4096) }
                defer { owned.forEach { $0.deallocate() } }
                self.work(owned, prepare: prepare, finish: { (chunk, prepared, buffers) throws(BlockError) in
                    try finish(chunk, prepared, buffers)
                    progress(self.done.add(Int64(chunk.count), ordering: .relaxed).newValue)
                })
            }
        }
        group.wait()
        if let failure = failure.withLock({ $0 }) { throw failure }
    }

    private func work<Prepared>(_ buffers: [UnsafeMutableRawBufferPointer],
                                prepare: (Chunk, [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Prepared,
                                finish: (Chunk, Prepared, [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Void) {
        while true {
            let index = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < count else { return }
            let offset = Int64(index) * Int64(chunkBytes)
            let chunk = Chunk(offset: offset, count: Int(min(Int64(chunkBytes), length - offset)))
            let cut = buffers.map { UnsafeMutableRawBufferPointer(rebasing: $0[0..<chunk.count]) }
            var prepared: Result<Prepared, BlockError>
            do throws(BlockError) {
                prepared = .success(try prepare(chunk, cut))
            } catch {
                prepared = .failure(error)
            }
            turns.wait(for: index)
            defer { turns.endTurn() }
            guard failure.withLock({ $0 == nil }) else { return }
            do throws(BlockError) {
                try finish(chunk, try prepared.get(), cut)
            } catch {
                failure.withLock { $0 = $0 ?? error }
                return
            }
        }
    }
}

extension [ChunkedCopy.Piece] {
    /// Adds a piece, or lengthens the last one when this one follows it and is alike: one write
    /// for both.
    mutating func appendMerging(_ range: Range<Int>, zeroes: Bool) {
        if let last, last.range.upperBound == range.lowerBound, last.zeroes == zeroes {
            self[count - 1].range = last.range.lowerBound..<range.upperBound
        } else {
            append(ChunkedCopy.Piece(range: range, zeroes: zeroes))
        }
    }
}
