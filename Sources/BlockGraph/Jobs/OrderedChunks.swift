// OrderedChunks: the work loop the copying jobs share (ImageConversion, ImageRebase). Worker
// threads (one per core) each take the next chunk and prepare it — read it, compare it,
// compress it — in parallel; the chunks are then finished (written) strictly in order, so what a
// job writes lands in guest order. The first failure ends every worker and is what `run` throws.
import Dispatch
import Posix
import Synchronization

/// Chunks `0..<count`, prepared in parallel and finished in order, once.
final class OrderedChunks: Sendable {
    let count: Int
    private let nextChunk = Atomic(0)
    private let turns = OrderedTurns()
    private let failure = Mutex<BlockError?>(nil)
    private let started = Atomic(false)

    init(count: Int) { self.count = count }

    /// Runs `workers` threads until every chunk is finished or a step failed, and throws that
    /// failure. Each thread has `buffers` buffers of `bufferBytes` of its own, which `prepare`
    /// fills and `finish` (in chunk order) writes from.
    func run<Prepared>(workers: Int, buffers: Int, bufferBytes: Int,
                       prepare: @escaping @Sendable (_ chunk: Int, _ buffers: [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Prepared,
                       finish: @escaping @Sendable (_ chunk: Int, _ prepared: Prepared, _ buffers: [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Void)
        throws(BlockError) {
        // The chunk counter and the turns only go forward: a second run would do nothing.
        guard !started.exchange(true, ordering: .relaxed) else { throw BlockError(.invalidRequest, "a copying job runs once") }
        let group = DispatchGroup()
        for _ in 0..<max(1, workers) {
            group.enter()
            startThread {
                defer { group.leave() }
                let owned = (0..<buffers).map { _ in UnsafeMutableRawBufferPointer.allocate(byteCount: bufferBytes, alignment: 4096) }
                defer { owned.forEach { $0.deallocate() } }
                self.work(owned, prepare: prepare, finish: finish)
            }
        }
        group.wait()
        if let failure = failure.withLock({ $0 }) { throw failure }
    }

    private func work<Prepared>(_ buffers: [UnsafeMutableRawBufferPointer],
                                prepare: (Int, [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Prepared,
                                finish: (Int, Prepared, [UnsafeMutableRawBufferPointer]) throws(BlockError) -> Void) {
        while true {
            let index = nextChunk.wrappingAdd(1, ordering: .relaxed).oldValue
            guard index < count else { return }
            var prepared: Result<Prepared, BlockError>
            do throws(BlockError) {
                prepared = .success(try prepare(index, buffers))
            } catch {
                prepared = .failure(error)
            }
            turns.wait(for: index)
            defer { turns.endTurn() }
            guard failure.withLock({ $0 == nil }) else { return }
            do throws(BlockError) {
                try finish(index, try prepared.get(), buffers)
            } catch {
                failure.withLock { $0 = $0 ?? error }
                return
            }
        }
    }
}
