// ServeBenchmark: `blk bench serve`. blk serve beside qemu-nbd on the same image files, driven by
// the same clients (nbdcopy with 4 connections, qemu-img bench at depth 16), a fresh server for
// every run, in turn (blk first in even rounds, qemu-nbd first in odd ones): the median of each
// side is reported, as the typical run on a machine others share, and each server's peak
// resident memory at the end of its run. Only the client is timed, not the server's start or stop.
//
// The images: a raw and a qcow2 image of the same random bytes (data everywhere, nothing for
// block status to skip), fresh raw and qcow2 images recreated before each run that writes, and a
// raw image four times the size, to show the servers' memory does not grow with the image.
import BlockLayer
import Glibc

package struct ServeBenchmark {
    package let directory: String
    package let imageBytes: Int64
    package let reads: Int
    package let rounds: Int
    /// Only the rows whose name contains it (ignoring case); nil: every row.
    package let only: String?
    package let progress: any BenchmarkProgress

    package init(directory: String, imageBytes: Int64, reads: Int, rounds: Int, only: String? = nil, progress: any BenchmarkProgress) {
        self.directory = directory
        self.imageBytes = imageBytes
        self.reads = reads
        self.rounds = rounds
        self.only = only
        self.progress = progress
    }

    /// Clients at once: nbdcopy's --connections, and each server's --shared.
    package static let connections = 4
    /// Requests in flight of qemu-img bench, as many as each server takes per connection.
    package static let depth = 16

    /// One row: the medians of each side.
    package struct Scenario: Encodable {
        package var scenario: String
        /// The client's command, with SOCKET for the server's socket.
        package var client: String
        /// Bytes the client moves in one run.
        package var bytes: Int64
        package var blkSeconds: Double
        package var qemuNbdSeconds: Double
        /// qemu-nbd's median time over blk serve's: above 1, blk serve is faster.
        package var ratio: Double
        package var blkPeakBytes: Int64
        package var qemuNbdPeakBytes: Int64
        package var target: String
    }

    private struct Row {
        var name: String
        var image: String
        var format: String
        /// Recreated empty before every run of either side.
        var fresh = false
        /// The client's arguments: nbdcopy's, or a qemu-img bench plan's, with the URI for URI.
        var client: Client
        var bytes: Int64
        var target: String
    }

    private enum Client {
        /// nbdcopy's arguments, `nil` where the export's URI goes.
        case nbdcopy([String?])
        /// A plan whose image is replaced by the export's URI.
        case qemuImgBench(IOBenchmarkPlan)

        /// The program's arguments against the export at `uri`.
        func arguments(_ uri: String) -> [String] {
            switch self {
            case .nbdcopy(let arguments):
                return arguments.map { $0 ?? uri }
            case .qemuImgBench(var plan):
                plan.image = uri
                return plan.qemuArguments
            }
        }

        var program: String {
            switch self {
            case .nbdcopy: "nbdcopy"
            case .qemuImgBench: "qemu-img"
            }
        }
    }

    private var prefix: String { directory + "/blk-bench-serve-\(getpid())" }
    private var socket: String { prefix + ".sock" }

    /// What the image size must be a multiple of.
    package static let sizeUnit = 1 << 20

    package func run() throws(BlockError) -> [Scenario] {
        guard imageBytes > 0, imageBytes % Int64(Self.sizeUnit) == 0 else {
            throw BlockError(.invalidRequest, "the image size must be a whole number of MiB")
        }
        guard let nbdcopy = BenchPrograms.nbdcopy else { throw BlockError(.unsupported, "nbdcopy is not installed (Debian package libnbd-bin)") }
        guard BenchPrograms.qemuNBD != nil, BenchPrograms.qemuImg != nil else {
            throw BlockError(.unsupported, "qemu-nbd and qemu-img are not installed (Debian package qemu-utils)")
        }
        let source = prefix + ".raw", allocated = prefix + ".qcow2", large = prefix + "-large.raw"
        let freshRaw = prefix + "-fresh.raw", freshQcow2 = prefix + "-fresh.qcow2"
        defer { for path in [source, allocated, large, freshRaw, freshQcow2, socket] { unlink(path) } }

        let size = humanSize(imageBytes)
        let copy: [String?] = ["--connections", "\(Self.connections)"]
        let readStep: Int64 = 1236 << 10
        // qemu-img bench has no random mode: 1236 KiB is 309 blocks of 4 KiB, and 309 is prime to
        // every power of two, so on an image of 2^n blocks the reads visit every block, out of order.
        let randomReads = IOBenchmarkPlan(image: "", format: "raw", write: false, requestBytes: 4096, count: reads, depth: Self.depth,
                                          stepBytes: readStep, startOffset: 0, cache: .writeback, pattern: 0)
        let writes = IOBenchmarkPlan(image: "", format: "raw", write: true, requestBytes: 64 << 10,
                                     count: Int(imageBytes / (64 << 10)), depth: Self.depth, stepBytes: 64 << 10, startOffset: 0,
                                     cache: .writeback, pattern: 0x5a)
        let allRows = [
            Row(name: "nbdcopy export → null, raw, \(size)", image: source, format: "raw",
                client: .nbdcopy(copy + [nil, "null:"]), bytes: imageBytes, target: "≥ 1.2×"),
            Row(name: "nbdcopy export → null, qcow2 allocated, \(size)", image: allocated, format: "qcow2",
                client: .nbdcopy(copy + [nil, "null:"]), bytes: imageBytes, target: "≥ 1.2×"),
            Row(name: "nbdcopy file → export, raw fresh, \(size)", image: freshRaw, format: "raw", fresh: true,
                client: .nbdcopy(copy + [source, nil]), bytes: imageBytes, target: "≥ 1.2×"),
            Row(name: "nbdcopy file → export, qcow2 fresh, \(size)", image: freshQcow2, format: "qcow2", fresh: true,
                client: .nbdcopy(copy + [source, nil]), bytes: imageBytes, target: "≥ 1.2×"),
            Row(name: "qemu-img bench \(reads) reads of 4 KiB, step 1236 KiB, depth \(Self.depth), raw", image: source, format: "raw",
                client: .qemuImgBench(randomReads), bytes: Int64(reads) * 4096, target: "≥ 1.0×"),
            Row(name: "qemu-img bench \(reads) reads of 4 KiB, step 1236 KiB, depth \(Self.depth), qcow2 allocated", image: allocated,
                format: "qcow2", client: .qemuImgBench(randomReads), bytes: Int64(reads) * 4096, target: "≥ 1.0×"),
            Row(name: "qemu-img bench \(writes.count) writes of 64 KiB, depth \(Self.depth), qcow2 fresh", image: freshQcow2,
                format: "qcow2", fresh: true, client: .qemuImgBench(writes), bytes: imageBytes, target: "≥ 1.2×"),
            Row(name: "nbdcopy export → null, raw, \(humanSize(4 * imageBytes)) (peak memory at 4× the size)", image: large,
                format: "raw", client: .nbdcopy(copy + [nil, "null:"]), bytes: 4 * imageBytes,
                target: "peak memory as at \(size)"),
        ]
        let rows = allRows.filter { row in only.map { row.name.lowercased().contains($0.lowercased()) } ?? true }
        guard !rows.isEmpty else { throw BlockError(.invalidRequest, "no row's name contains \"\(only ?? "")\"") }
        progress.update(0, "writing the images")
        // The large image only for its row: writing it costs four times the others.
        try makeImages(source: source, allocated: allocated, large: rows.contains { $0.image == large } ? large : nil)
        var results: [Scenario] = []
        for (number, row) in rows.enumerated() {
            progress.update(Double(number + 1) / Double(rows.count + 1), row.name)
            var peaks: [BenchServer.Kind: [Double]] = [:]
            let (ours, theirs) = try alternating(rounds: rounds, ours: { () throws(BlockError) in
                let (seconds, peak) = try measure(row, on: .blk, nbdcopy: nbdcopy)
                peaks[.blk, default: []].append(Double(peak))
                return seconds
            }, baseline: { () throws(BlockError) -> Double? in
                let (seconds, peak) = try measure(row, on: .qemuNBD, nbdcopy: nbdcopy)
                peaks[.qemuNBD, default: []].append(Double(peak))
                return seconds
            })
            let client = ([row.client.program] + row.client.arguments("nbd+unix:///?socket=SOCKET")).joined(separator: " ")
            results.append(Scenario(scenario: row.name, client: client, bytes: row.bytes,
                                    blkSeconds: ours.median, qemuNbdSeconds: theirs.median, ratio: theirs.median / ours.median,
                                    blkPeakBytes: Int64(peaks[.blk, default: []].median),
                                    qemuNbdPeakBytes: Int64(peaks[.qemuNBD, default: []].median), target: row.target))
        }
        progress.finish()
        return results
    }

    /// One run of `row`'s client against a server of `kind` started for it: the client's
    /// seconds (nbdcopy's wall time; qemu-img bench's own figure) and the server's peak memory.
    private func measure(_ row: Row, on kind: BenchServer.Kind, nbdcopy: String) throws(BlockError) -> (seconds: Double, peak: Int64) {
        if row.fresh { try createBenchImage(row.format, at: row.image, ImageCreateOptions(virtualSize: imageBytes)) }
        // What earlier runs left dirty is written back now, not during this run.
        sync()
        let server = try BenchServer(kind, image: row.image, format: row.format, socket: socket, connections: Self.connections)
        let seconds: Double
        switch row.client {
        case .nbdcopy:
            seconds = try BenchProcess.timedRun(nbdcopy, row.client.arguments(server.uri)).seconds
        case .qemuImgBench(var plan):
            plan.image = server.uri
            guard let measured = try IOBenchmark.runQEMU(plan) else { throw BlockError(.unsupported, "qemu-img is not installed") }
            seconds = measured
        }
        let peak = try server.peakResidentBytes()
        try server.stop()
        return (seconds, peak)
    }

    /// The raw and qcow2 images of the same random bytes, and (when asked for) the raw image four
    /// times the size that goes on with the same random stream.
    private func makeImages(source: String, allocated: String, large: String?) throws(BlockError) {
        try createBenchImage("raw", at: source, ImageCreateOptions(virtualSize: imageBytes))
        try createBenchImage("qcow2", at: allocated, ImageCreateOptions(virtualSize: imageBytes))
        if let large { try createBenchImage("raw", at: large, ImageCreateOptions(virtualSize: 4 * imageBytes)) }
        let images = try [source, allocated, large].compactMap { $0 }.map { path throws(BlockError) in
            try BlockImage.open(path, options: OpenOptions(format: path == allocated ? "qcow2" : "raw", writable: true))
        }
        let chunkBytes = Self.sizeUnit
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkBytes, alignment: 4096)
        defer { chunk.deallocate() }
        var generator = SplitMix(seed: 0x5e7e)
        // Sizes are whole MiB (run checks), so every chunk is whole.
        for offset in stride(from: Int64(0), to: large == nil ? imageBytes : 4 * imageBytes, by: chunkBytes) {
            for word in 0..<chunkBytes / 8 { chunk.storeBytes(of: generator.next(), toByteOffset: word * 8, as: UInt64.self) }
            for image in offset < imageBytes ? images : [images[2]] { try image.write(at: offset, from: UnsafeRawBufferPointer(chunk)) }
        }
        for image in images { try image.close() }
    }
}
