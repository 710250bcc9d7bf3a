// ImageComparison: qemu-img compare's rules (qemu-img.c, img_compare), through block status.
//
//   - Both images are walked in segments over which neither one's block status changes.
//     Zeroes on both sides (holes, unallocated clusters, zero clusters) are equal unread; two
//     allocated segments are read and compared; where one side is allocated and the other not,
//     only the allocated side is read, and must be zeroes.
//   - A mismatch is reported at the first 512-byte sector that differs (qemu-img's
//     compare_buffers and find_nonzero work in sectors), counted from the start of the segment.
//   - Images of different sizes are compared over the common part; then the longer one's tail
//     must read as zeroes. Strict mode refuses different sizes at once, and stops at the first
//     offset where the two block statuses differ at all — allocation, zero, data, whether the
//     bytes have a host offset, whether the run reaches the image's end (QEMU's BDRV_BLOCK_EOF:
//     two runs that differ only there differ for qemu-img too).
//
// Reads are 2 MiB, as qemu-img's, but the two images' reads run at once on two threads: each is
// a copy out of the page cache or a wait on the disk, and neither needs the other.
import Dispatch
import Glibc
import Synchronization

/// Two images compared as `qemu-img compare` compares them: guest-visible bytes (and in strict
/// mode allocation), reading only what block status cannot settle.
public struct ImageComparison: Sendable {
    /// The verdict, with the offset qemu-img's message names.
    public enum Outcome: Sendable, Hashable {
        /// The same guest-visible bytes (and, in strict mode, the same allocation).
        case identical
        /// The first differing 512-byte sector.
        case contentMismatch(byteOffset: Int64)
        /// Strict mode: the sizes differ.
        case sizeMismatch
        /// Strict mode: the block status differs at this offset.
        case statusMismatch(byteOffset: Int64)
    }

    /// What a finished comparison found.
    public struct Result: Sendable, Hashable {
        /// The verdict.
        public var outcome: Outcome
        /// The sizes differ and the common part is identical: the comparison went on into the
        /// longer image's tail (where qemu-img warns of the size mismatch).
        public var reachedTail: Bool
    }

    /// The two images, in the order messages and exit codes name them.
    public let images: (BlockImage, BlockImage)
    /// qemu-img's -s: allocation must match too, and sizes must be equal.
    public let strict: Bool

    /// qemu-img's IO_BUF_SIZE: the most one read takes.
    static let chunkBytes = 2 << 20
    static let sectorBytes = 512

    /// A comparison of `first` with `second`; nothing is read until `run`.
    public init(_ first: BlockImage, _ second: BlockImage, strict: Bool) {
        images = (first, second)
        self.strict = strict
    }

    /// Compares, calling `progress` with the fraction done after each segment.
    public func run(progress: (Double) -> Void = { _ in }) throws(ComparisonError) -> Result {
        let sizes = (try size(of: 0), try size(of: 1))
        let common = min(sizes.0, sizes.1), total = max(sizes.0, sizes.1)
        if strict && sizes.0 != sizes.1 { return Result(outcome: .sizeMismatch, reachedTail: false) }
        let buffers = ChunkBuffers()
        var offset: Int64 = 0
        var runs: (Run?, Run?) = (nil, nil)
        while offset < common {
            if runs.0.map({ $0.end <= offset }) ?? true { runs.0 = try run(of: 0, at: offset, size: sizes.0) }
            if runs.1.map({ $0.end <= offset }) ?? true { runs.1 = try run(of: 1, at: offset, size: sizes.1) }
            let (first, second) = (runs.0!, runs.1!)
            let end = min(first.end, second.end)
            if strict && first.status != second.status {
                return Result(outcome: .statusMismatch(byteOffset: offset), reachedTail: false)
            }
            var mismatch: Int64?
            if first.status.isZero && second.status.isZero {
                // Equal without reading.
            } else if first.status.isAllocated == second.status.isAllocated {
                if first.status.isAllocated { mismatch = try firstDifference(in: offset..<end, buffers) }
            } else {
                mismatch = try firstNonZeroSector(of: first.status.isAllocated ? 0 : 1, in: offset..<end, buffers)
            }
            if let mismatch { return Result(outcome: .contentMismatch(byteOffset: mismatch), reachedTail: false) }
            offset = end
            progress(Double(offset) / Double(total))
        }
        guard sizes.0 != sizes.1 else { return Result(outcome: .identical, reachedTail: false) }
        do throws(ComparisonError) {
            let mismatch = try firstNonZeroByte(ofTail: sizes.0 > sizes.1 ? 0 : 1, from: offset, to: total, buffers, progress: progress)
            return Result(outcome: mismatch.map { .contentMismatch(byteOffset: $0) } ?? .identical, reachedTail: true)
        } catch {
            var failure = error
            failure.reachedTail = true
            throw failure
        }
    }

    /// The longer image's tail past the common part must read as zeroes: the first sector that
    /// does not, or nil.
    private func firstNonZeroByte(ofTail longer: Int, from start: Int64, to total: Int64, _ buffers: ChunkBuffers,
                                  progress: (Double) -> Void) throws(ComparisonError) -> Int64? {
        var offset = start
        while offset < total {
            let run = try self.run(of: longer, at: offset, size: total)
            if run.status.isAllocated && !run.status.isZero,
               let mismatch = try firstNonZeroSector(of: longer, in: offset..<run.end, buffers) {
                return mismatch
            }
            offset = run.end
            progress(Double(offset) / Double(total))
        }
        return nil
    }

    // MARK: block status

    /// What strict mode compares: QEMU's status word, from bdrv_block_status_above.
    struct StatusWord: Hashable {
        var isData: Bool
        var isZero: Bool
        /// Allocated anywhere in the chain, or read as zeroes past a shorter backing image
        /// (which QEMU counts as allocated in the image that is short).
        var isAllocated: Bool
        var hasHostOffset: Bool
        var reachesEnd: Bool
    }

    struct Run {
        var status: StatusWord
        var end: Int64
    }

    private func image(_ index: Int) -> BlockImage { index == 0 ? images.0 : images.1 }

    private func size(of index: Int) throws(ComparisonError) -> Int64 {
        do throws(BlockError) {
            return try image(index).length()
        } catch {
            throw ComparisonError(step: .size, imageIndex: index, cause: error)
        }
    }

    private func run(of index: Int, at offset: Int64, size: Int64) throws(ComparisonError) -> Run {
        let status: BlockStatus
        do throws(BlockError) {
            status = try image(index).blockStatus(at: offset, byteCount: size - offset)
            guard status.byteCount > 0, status.byteCount <= size - offset else {
                throw BlockError(.ioError, "block status at offset \(offset) answered \(status.byteCount) bytes")
            }
        } catch {
            throw ComparisonError(step: .blockStatus, imageIndex: index, cause: error)
        }
        let end = offset + status.byteCount
        return Run(status: StatusWord(isData: status.isData, isZero: status.isZero, isAllocated: status.isAllocated || status.isPastBackingEnd,
                                      hasHostOffset: status.hostOffset != nil, reachesEnd: end == size),
                   end: end)
    }

    // MARK: reading

    /// Two chunk-sized buffers, one per image (or per half of a zero check), and zeroes to
    /// compare with.
    final class ChunkBuffers: @unchecked Sendable {
        let buffers = (UnsafeMutableRawBufferPointer.allocate(byteCount: ImageComparison.chunkBytes, alignment: 4096),
                       UnsafeMutableRawBufferPointer.allocate(byteCount: ImageComparison.chunkBytes, alignment: 4096))
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageComparison.chunkBytes, alignment: 4096)

        init() { zeroes.initializeMemory(as: UInt8.self, repeating: 0) }

        deinit {
            buffers.0.deallocate()
            buffers.1.deallocate()
            zeroes.deallocate()
        }

        func buffer(_ index: Int) -> UnsafeMutableRawBufferPointer { index == 0 ? buffers.0 : buffers.1 }
    }

    /// Runs the two reads at once; the first failure is thrown.
    private func readBoth(_ reads: @Sendable (Int) throws(ComparisonError) -> Void) throws(ComparisonError) {
        let failures = FailureSlots()
        DispatchQueue.concurrentPerform(iterations: 2) { index in
            do throws(ComparisonError) {
                try reads(index)
            } catch {
                failures.set(index, error)
            }
        }
        if let failure = failures.first { throw failure }
    }

    private func read(_ index: Int, at offset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(ComparisonError) {
        do throws(BlockError) {
            try image(index).read(at: offset, into: buffer)
        } catch {
            throw ComparisonError(step: .read(byteOffset: offset), imageIndex: index, cause: error)
        }
    }

    /// The first differing sector of the two images in `range`, if any.
    private func firstDifference(in range: Range<Int64>, _ buffers: ChunkBuffers) throws(ComparisonError) -> Int64? {
        var chunkStart = range.lowerBound
        while chunkStart < range.upperBound {
            let count = Int(min(Int64(Self.chunkBytes), range.upperBound - chunkStart))
            let start = chunkStart
            try readBoth { (index: Int) throws(ComparisonError) in
                try read(index, at: start, into: UnsafeMutableRawBufferPointer(rebasing: buffers.buffer(index)[0..<count]))
            }
            if let sector = Self.firstDifferingSector(buffers.buffers.0.baseAddress!, buffers.buffers.1.baseAddress!, count) {
                return chunkStart + Int64(sector)
            }
            chunkStart += Int64(count)
        }
        return nil
    }

    /// The first sector in `range` of image `index` that is not all zeroes, if any. Each chunk
    /// is read in two halves at once.
    private func firstNonZeroSector(of index: Int, in range: Range<Int64>, _ buffers: ChunkBuffers) throws(ComparisonError) -> Int64? {
        var chunkStart = range.lowerBound
        while chunkStart < range.upperBound {
            let count = Int(min(Int64(Self.chunkBytes), range.upperBound - chunkStart))
            let half = count / 2 / Self.sectorBytes * Self.sectorBytes
            let start = chunkStart
            try readBoth { (part: Int) throws(ComparisonError) in
                let bytes = part == 0 ? 0..<half : half..<count
                guard !bytes.isEmpty else { return }
                try read(index, at: start + Int64(bytes.lowerBound), into: UnsafeMutableRawBufferPointer(rebasing: buffers.buffers.0[bytes]))
            }
            if let sector = Self.firstDifferingSector(buffers.buffers.0.baseAddress!, buffers.zeroes.baseAddress!, count) {
                return chunkStart + Int64(sector)
            }
            chunkStart += Int64(count)
        }
        return nil
    }

    /// The offset of the first 512-byte sector (the last may be shorter) where the two differ.
    static func firstDifferingSector(_ first: UnsafeRawPointer, _ second: UnsafeRawPointer, _ count: Int) -> Int? {
        guard memcmp(first, second, count) != 0 else { return nil }
        var sector = 0
        while memcmp(first + sector, second + sector, min(sectorBytes, count - sector)) == 0 { sector += sectorBytes }
        return sector
    }
}

/// Why a comparison could not finish: qemu-img tells a failed block status (exit 3) from a
/// failed read (exit 4).
public struct ComparisonError: Error, Sendable {
    /// What was being done when it failed, which decides qemu-img's exit code.
    public enum Step: Sendable, Hashable {
        /// Reading an image's length.
        case size
        /// Asking block status (exit 3).
        case blockStatus
        /// Reading the bytes at this offset (exit 4).
        case read(byteOffset: Int64)
    }

    /// The step that failed.
    public var step: Step
    /// 0: the first image; 1: the second.
    public var imageIndex: Int
    /// The block layer's error, whose message is shown.
    public var cause: BlockError
    /// It happened in the longer image's tail, after the common part compared equal.
    public var reachedTail = false
}

/// The failures of the two concurrent reads: the first image's is reported first.
private final class FailureSlots: Sendable {
    private let slots = Mutex<(ComparisonError?, ComparisonError?)>((nil, nil))

    func set(_ index: Int, _ failure: ComparisonError) {
        slots.withLock { if index == 0 { $0.0 = failure } else { $0.1 = failure } }
    }

    var first: ComparisonError? { slots.withLock { $0.0 ?? $0.1 } }
}
