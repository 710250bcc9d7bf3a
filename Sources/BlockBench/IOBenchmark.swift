// IOBenchmark: `blk bench io`, request for request what `qemu-img bench` does — the same
// count, size, step, starting offset, queue depth, cache mode and pattern — on the same file,
// alternating blk and qemu-img runs so both see the same machine. Offsets advance by the step
// and wrap at the image size, as qemu-img 7.2's do (later versions wrap at size − request size);
// a step that is not a multiple of the request size can then run a request past the end, which
// fails in both.
import BlockLayer
import BlockLocking
import Dispatch
import FoundationEssentials
import Glibc
import Posix
import Synchronization
import SystemPackage

package struct IOBenchmarkPlan: Sendable {
    package var image: String
    package var format: String?
    package var write: Bool
    package var requestBytes: Int
    package var count: Int
    package var depth: Int
    package var stepBytes: Int64
    package var startOffset: Int64
    package var cache: CacheMode
    package var pattern: UInt8
    /// Recreate the image, empty, of this many bytes before every run (both sides): writes into
    /// a fresh image allocate, which is what qcow2 is measured on.
    package var freshBytes: Int64?
    /// What the ratio should reach, for the report.
    package var target = "≥ 0.95×"
    /// The fresh image's create options (`-o`): extended_l2 for the subcluster suite.
    package var createOptions: FormatOptions?

    package init(image: String, format: String?, write: Bool, requestBytes: Int, count: Int, depth: Int, stepBytes: Int64,
                 startOffset: Int64, cache: CacheMode, pattern: UInt8, freshBytes: Int64? = nil, target: String = "≥ 0.95×") {
        self.image = image
        self.format = format
        self.write = write
        self.requestBytes = requestBytes
        self.count = count
        self.depth = depth
        self.stepBytes = stepBytes
        self.startOffset = startOffset
        self.cache = cache
        self.pattern = pattern
        self.freshBytes = freshBytes
        self.target = target
    }

    /// The standard suite on temporary 1 GiB raw and qcow2 images at `path` + ".raw"/".qcow2":
    /// 64 KiB sequential writes into a fresh image (recreated before every run of either side),
    /// then `reads` 4 KiB reads of the written image scattered by a 1236 KiB step (qemu-img
    /// bench has no random mode; 1236 KiB is 309 blocks of 4 KiB, and 309 is prime to the
    /// image's 262144 blocks, so the reads visit every block, out of order).
    package static func standardSuite(at path: String, reads: Int, depth: Int, cache: CacheMode) -> [IOBenchmarkPlan] {
        [(path + ".raw", "raw"), (path + ".qcow2", "qcow2")].flatMap { image, format in
            [IOBenchmarkPlan(image: image, format: format, write: true, requestBytes: 64 << 10, count: 16_384, depth: depth,
                             stepBytes: 64 << 10, startOffset: 0, cache: cache, pattern: 0x5a, freshBytes: 1 << 30,
                             target: format == "qcow2" ? "≥ 1.3×" : "≥ 0.95×"),
             IOBenchmarkPlan(image: image, format: format, write: false, requestBytes: 4096, count: reads, depth: depth,
                             stepBytes: 1236 << 10, startOffset: 0, cache: cache, pattern: 0,
                             target: format == "qcow2" ? "≥ 1.0×" : "≥ 0.95×")]
        }
    }

    /// The subcluster suite on a temporary 1 GiB qcow2 image with extended L2 entries (64 KiB
    /// clusters, 2 KiB subclusters) at `path`: 4 KiB fresh-image writes a cluster apart, each
    /// allocating a cluster and filling two of its subclusters (where QEMU copies nothing in),
    /// then `reads` scattered 4 KiB reads of that image, half data and half unallocated; then the
    /// same over whole clusters: 64 KiB fresh-image writes, and scattered reads of the full image.
    package static func subclusterSuite(at path: String, reads: Int, depth: Int, cache: CacheMode) -> [IOBenchmarkPlan] {
        let extendedL2 = try? FormatOptions(parsing: ["extended_l2=on"])
        return [4 << 10, 64 << 10].flatMap { (writeBytes: Int) -> [IOBenchmarkPlan] in
            var write = IOBenchmarkPlan(image: path, format: "qcow2", write: true, requestBytes: writeBytes, count: 16_384, depth: depth,
                                        stepBytes: 64 << 10, startOffset: 0, cache: cache, pattern: 0x5a, freshBytes: 1 << 30, target: "≥ 1.0×")
            write.createOptions = extendedL2
            let read = IOBenchmarkPlan(image: path, format: "qcow2", write: false, requestBytes: 4096, count: reads, depth: depth,
                                       stepBytes: 1236 << 10, startOffset: 0, cache: cache, pattern: 0, target: "≥ 1.0×")
            return [write, read]
        }
    }

    /// Makes the image new and empty, if the plan asks for it, and lets the system write back
    /// what earlier runs left dirty, so no run pays for the one before it — reads included: the
    /// kernel's flusher writing a gigabyte an earlier write run left behind takes one of the two
    /// cores from whichever run it happens to meet.
    func refresh() throws(BlockError) {
        if let freshBytes {
            var options = ImageCreateOptions(virtualSize: freshBytes)
            options.formatOptions = createOptions
            try createBenchImage(format ?? "raw", at: image, options)
        }
        sync()
    }

    /// The arguments that make qemu-img bench do the same work.
    var qemuArguments: [String] {
        var arguments = ["bench", "-c", "\(count)", "-d", "\(depth)", "-s", "\(requestBytes)", "-S", "\(stepBytes)",
                         "-o", "\(startOffset)", "-t", cache == .none ? "none" : "writeback", "--pattern=\(pattern)"]
        if write { arguments.append("-w") }
        if let format { arguments += ["-f", format] }
        return arguments + [image]
    }

    package var summary: String {
        "\(format ?? "image"): \(count) \(freshBytes != nil ? "fresh-image " : "")\(write ? "writes" : "reads") of \(humanSize(Int64(requestBytes))), step \(humanSize(stepBytes)), depth \(depth), cache \(cache.rawValue)"
    }
}

package struct IOBenchmarkResult: Encodable {
    package var scenario: String
    package var blkMbPerS: Double
    package var blkIops: Double
    package var qemuImgMbPerS: Double?
    package var qemuImgIops: Double?
    package var ratio: Double?
    package var target: String
}

package enum IOBenchmark {
    /// Runs every plan `rounds` times on each side and reports the best run of each.
    ///
    /// Rounds outside, plans inside: every scenario sees the same stretch of the machine's
    /// weather, so ratios between scenarios (qcow2 ÷ raw) are as fair as those within one.
    /// Every other round starts with the second half (the qcow2 pair of the standard suite), so
    /// neither format always runs after the other: measured apart, fresh qcow2 writes ran as
    /// fast as raw, and always after raw 5–8 % slower.
    package static func run(_ plans: [IOBenchmarkPlan], rounds: Int, progress: any BenchmarkProgress) throws(BlockError) -> [IOBenchmarkResult] {
        defer { progress.finish() }
        var ours = [[Double]](repeating: [], count: plans.count), theirs = ours
        for round in 0..<rounds {
            let half = round.isMultiple(of: 2) ? 0 : plans.count / 2
            let order = Array(plans.indices.dropFirst(half)) + Array(plans.indices.prefix(half))
            for (step, number) in order.enumerated() {
                let plan = plans[number]
                progress.update(Double(round * plans.count + step) / Double(plans.count * rounds), plan.summary)
                // Alternate who goes first, so neither always meets the other's cache state.
                if round.isMultiple(of: 2) { ours[number].append(try runBlk(plan)) }
                if let seconds = try runQEMU(plan) { theirs[number].append(seconds) }
                if !round.isMultiple(of: 2) { ours[number].append(try runBlk(plan)) }
            }
        }
        return plans.enumerated().map { number, plan in
            let bytes = Double(plan.count * plan.requestBytes)
            let blkSeconds = ours[number].best
            let qemuSeconds = theirs[number].isEmpty ? nil : theirs[number].best
            return IOBenchmarkResult(
                scenario: plan.summary, blkMbPerS: bytes / blkSeconds / 1e6, blkIops: Double(plan.count) / blkSeconds,
                qemuImgMbPerS: qemuSeconds.map { bytes / $0 / 1e6 }, qemuImgIops: qemuSeconds.map { Double(plan.count) / $0 },
                ratio: qemuSeconds.map { $0 / blkSeconds }, target: plan.target)
        }
    }

    /// Seconds blk takes for the plan, with `depth` requests in flight: one thread per request
    /// with O_DIRECT, where the device's latency is what parallel requests hide; through the page
    /// cache at most one per core for reads, where the CPU is the limit, and one for writes, which
    /// the file system serializes on the inode's lock anyway (a second writer only convoys).
    static func runBlk(_ plan: IOBenchmarkPlan) throws(BlockError) -> Double {
        try plan.refresh()
        let image = try BlockImage.open(plan.image, options: OpenOptions(format: plan.format, writable: plan.write, cache: plan.cache))
        let length = try image.length()
        guard length >= Int64(plan.requestBytes) else {
            throw BlockError(.invalidRequest, "the image (\(length) bytes) is smaller than one request")
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        let threads = max(1, min(plan.depth, plan.cache == .none ? 64 : plan.write ? 1 : cores))
        let next = Atomic<Int>(0)
        let failure = Mutex<BlockError?>(nil)
        let started = currentMonotonicNanoseconds()
        let workers = DispatchGroup()
        for _ in 0..<threads {
            workers.enter()
            startThread {
                defer { workers.leave() }
                worker()
            }
        }
        @Sendable func worker() {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: plan.requestBytes, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: plan.pattern)
            while true {
                let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
                if index >= plan.count { return }
                let offset = Self.offset(of: index, plan, wrap: length)
                do throws(BlockError) {
                    if plan.write {
                        try image.write(at: offset, from: UnsafeRawBufferPointer(buffer))
                    } else {
                        try image.read(at: offset, into: buffer)
                    }
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                    return
                }
            }
        }
        workers.wait()
        if let error = failure.withLock({ $0 }) { throw error }
        // Timed like qemu-img bench, which ends with its writes in the page cache, not on disk.
        let seconds = Double(currentMonotonicNanoseconds() - started) / 1e9
        try image.close() // qemu-img bench opens the file next
        return seconds
    }

    /// Offset of request `index`: start + index × step, wrapped at `wrap` as qemu-img bench wraps it.
    static func offset(of index: Int, _ plan: IOBenchmarkPlan, wrap: Int64) -> Int64 {
        guard index > 0 else { return plan.startOffset }
        guard wrap > 0 else { return 0 }
        let modulus = UInt64(wrap)
        let product = (UInt64(index) % modulus).multipliedFullWidth(by: UInt64(plan.stepBytes) % modulus)
        let stepped = modulus.dividingFullWidth(product).remainder
        return Int64((UInt64(plan.startOffset) % modulus + stepped) % modulus)
    }

    /// Seconds `qemu-img bench` reports for the same plan ("Run completed in X seconds": its own
    /// timing, without process start-up), or nil when qemu-img is not installed.
    static func runQEMU(_ plan: IOBenchmarkPlan) throws(BlockError) -> Double? {
        guard let qemuImg = BenchPrograms.qemuImg else { return nil }
        try plan.refresh()
        let process: BenchProcess
        do {
            process = try BenchProcess(qemuImg, plan.qemuArguments, stdin: .null, stdout: .pipe, stderr: .sameAsOutput)
        } catch {
            throw BlockError(.ioError, error.description)
        }
        let text = String(decoding: (try? FileDescriptor(rawValue: process.output!).readToEnd().get()) ?? [], as: UTF8.self)
        guard process.wait() == 0,
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Run completed in ") }),
              let seconds = Double(line.dropFirst("Run completed in ".count).prefix { $0 != " " }) else {
            throw BlockError(.ioError, "qemu-img bench failed: \(text)")
        }
        return seconds
    }
}
