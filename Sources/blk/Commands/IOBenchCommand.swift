// `blk bench io`: qemu-img bench's options, run by blk and by qemu-img bench on the same file in
// the same run (BlockBench's IOBenchmark). Without an image, the standard suite on temporary
// raw and qcow2 images, with 300,000 reads, not qemu-img's 75,000: a best run should not be one
// lucky tenth of a second.
import ArgumentParser
import BlockBench
import BlockCLI
import BlockIOScript
import BlockLayer
import FoundationEssentials
import Glibc
import Posix

struct IOBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io",
        abstract: "Read or write throughput beside qemu-img bench doing the same requests on the same file."
    )

    @Flag(name: .short, help: "Write instead of read.") var w = false
    @Option(name: .short, help: "Request size.") var s = ByteCount(4096)
    @Option(name: .short, help: "Number of requests (default: 75000, qemu-img bench's; 300000 reads in the standard pair).") var c: Int?
    @Option(name: .short, help: "Requests in flight.") var d = 64
    @Option(name: .customShort("S"), help: "Step between requests (default: the request size).") var step: ByteCount?
    @Option(name: .short, help: "Offset of the first request.") var o = ByteCount(0)
    @Option(name: .short, help: "Cache mode: writeback or none.") var t = CacheMode.writeback
    @Option(help: "Byte value written.") var pattern: UInt8 = 0
    @Option(name: .short, help: "Image format (probed when not given).") var f: String?
    @Option(help: "Runs of each side; the best is reported (interference only adds time).") var rounds = 5
    @Flag(help: "Without an image: the subcluster suite (qcow2 with extended L2 entries) instead of the standard pair.") var extendedL2 = false
    @Flag(help: "Instead: 4 KiB writes into qcow2 images with a persistent dirty bitmap enabled and disabled, overwrites of marked granules (-c of them, default 75000) and first touches.")
    var bitmap = false
    @OptionGroup var bench: BenchOptions
    @Argument(help: "The image; omit it for the standard pair on a temporary image.") var image: String?

    func validate() throws {
        // Bounded so that -c × -s and the progress arithmetic cannot overflow, and a request's
        // buffer is no larger than one `blk io` read may make.
        guard (1...1_000_000_000).contains(c ?? 1), (1...1024).contains(d), (1...IOCommandStep.maximumRequestBytes).contains(s.value),
              (1...1000).contains(rounds) else {
            throw ValidationError("-c takes 1 to 1000000000 requests, -d 1 to 1024, -s 1 to \(IOCommandStep.maximumRequestBytes) bytes, --rounds 1 to 1000")
        }
    }

    func run() throws {
        if bitmap { return try runBitmap() }
        let plans: [IOBenchmarkPlan]
        var temporaries: [String] = []
        if let image {
            plans = [IOBenchmarkPlan(image: image, format: f, write: w, requestBytes: Int(s.value), count: c ?? 75_000, depth: d,
                                     stepBytes: step?.value ?? s.value, startOffset: o.value, cache: t, pattern: pattern)]
        } else {
            let path = URL(fileURLWithPath: bench.dir).appendingPathComponent("blk-bench-io-\(getpid())").path
            temporaries = extendedL2 ? [path + ".qcow2"] : [path + ".raw", path + ".qcow2"]
            plans = extendedL2 ? IOBenchmarkPlan.subclusterSuite(at: path + ".qcow2", reads: c ?? 300_000, depth: d, cache: t)
                : IOBenchmarkPlan.standardSuite(at: path, reads: c ?? 300_000, depth: d, cache: t)
        }
        defer { temporaries.forEach { unlink($0) } }
        let results: [IOBenchmarkResult]
        do throws(BlockError) {
            results = try IOBenchmark.run(plans, rounds: rounds, progress: bench.progress)
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
            return
        }
        if results.count == 4 && !extendedL2 {
            // The standard suite: how qcow2 fares against raw, both written by blk the same way.
            print("blk bench io: qcow2 / raw, fresh-image writes by blk: " + formatted("%.2f× (target ≥ 0.95×)", results[2].blkMbPerS / results[0].blkMbPerS))
            print("blk bench io: qcow2 / raw, scattered reads by blk: " + formatted("%.2f× (target ≥ 0.95×)", results[3].blkIops / results[1].blkIops))
        }
        for result in results {
            print("blk bench io: \(result.scenario)")
            print("  blk        " + formatted("%9.1f MB/s %11.0f IOPS", result.blkMbPerS, result.blkIops))
            if let mb = result.qemuImgMbPerS, let iops = result.qemuImgIops, let ratio = result.ratio {
                print("  qemu-img   " + formatted("%9.1f MB/s %11.0f IOPS", mb, iops))
                print("  ratio      " + formatted("%.2f×", ratio) + " (target \(result.target))")
            } else {
                print("  qemu-img   not installed (Debian package qemu-utils): no baseline")
            }
        }
    }

    /// The bitmap's cost, enabled against disabled, in one run.
    private func runBitmap() throws {
        let path = URL(fileURLWithPath: bench.dir).appendingPathComponent("blk-bench-bitmap-\(getpid())").path
        let results: [BitmapBenchmarkResult]
        do throws(BlockError) {
            results = try BitmapBenchmark.run(at: path, overwrites: c ?? 75_000, rounds: rounds, progress: bench.progress)
        } catch {
            throw report(error, json: bench.json)
        }
        if bench.json {
            printJSON(results)
            return
        }
        for (result, target) in zip(results, ["≤ 1.05×", "the write-ahead mark's fdatasync"]) {
            print("blk bench io --bitmap: \(result.scenario)")
            print("  disabled   " + formatted("%9.0f writes/s", Double(result.writes) / result.plainSeconds))
            print("  enabled    " + formatted("%9.0f writes/s", Double(result.writes) / result.bitmapSeconds))
            print("  time ratio " + formatted("%.3f×", result.ratio) + " (target \(target), best of \(rounds))")
        }
    }
}
