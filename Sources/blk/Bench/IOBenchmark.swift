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
import Synchronization

struct IOBenchmarkPlan: Sendable {
    var image: String
    var format: String?
    var write: Bool
    var requestBytes: Int
    var count: Int
    var depth: Int
    var stepBytes: Int64
    var startOffset: Int64
    var cache: CacheMode
    var pattern: UInt8
    /// Recreate the image, empty, of this many bytes before every run (both sides): writes into
    /// a fresh image allocate, which is what qcow2 is measured on.
    var freshBytes: Int64?
    /// What the ratio should reach, for the report.
    var target = "≥ 0.95×"

    /// Makes the image new and empty, if the plan asks for it, and lets the system write back
    /// what earlier runs left dirty, so no run pays for the one before it — reads included: the
    /// kernel's flusher writing a gigabyte an earlier write run left behind takes one of the two
    /// cores from whichever run it happens to meet.
    func refresh() throws(BlockError) {
        if let freshBytes {
            if format == "qcow2" {
                try Qcow2Format.create(at: image, options: ImageCreateOptions(virtualSize: freshBytes))
            } else {
                try RawFormat.create(at: image, options: ImageCreateOptions(virtualSize: freshBytes))
            }
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

    var summary: String {
        "\(format ?? "image"): \(count) \(freshBytes != nil ? "fresh-image " : "")\(write ? "writes" : "reads") of \(humanSize(Int64(requestBytes))), step \(humanSize(stepBytes)), depth \(depth), cache \(cache.rawValue)"
    }
}

struct IOBenchmarkResult: Encodable {
    var scenario: String
    var blkMbPerS: Double
    var blkIops: Double
    var qemuImgMbPerS: Double?
    var qemuImgIops: Double?
    var ratio: Double?
    var target: String
}

enum IOBenchmark {
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
        let text = String(decoding: (try? readToEnd(process.output!)) ?? [], as: UTF8.self)
        guard process.wait() == 0,
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Run completed in ") }),
              let seconds = Double(line.dropFirst("Run completed in ".count).prefix { $0 != " " }) else {
            throw BlockError(.ioError, "qemu-img bench failed: \(text)")
        }
        return seconds
    }
}
