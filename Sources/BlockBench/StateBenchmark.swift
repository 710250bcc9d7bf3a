// StateBenchmark: what a device-state commit costs, against the cheapest durable write there is
// — one 4 KiB overwrite + fdatasync of a file on the same file system — measured interleaved in
// the same run (one of each per round, medians over the rounds), so the machine's mood hits both.
// Commits go through the library with the store open as a device keeps it (a writer), into a
// raw and a qcow2 image; 16 KiB and 256 KiB blobs, plain and AES-256-GCM. Then CRC32C's
// throughput with the SSE4.2 instruction beside the byte-table loop, over the same 1 MiB buffer.
import BlockLayer
import BlockLocking
import Crypto
import DeviceState
import FoundationEssentials
import Glibc
import Posix
import SystemPackage

package struct StateBenchmark {
    package struct Results: Encodable {
        package var rounds: Int
        package var baselineMicroseconds: Double
        /// Median commit latency by scenario ("raw 16 KiB", "qcow2 256 KiB encrypted", …).
        package var commitMicroseconds: [String: Double]
        package var crcHardware: Bool
        package var crcGigabytesPerSecond: Double
        package var crcTableGigabytesPerSecond: Double
    }

    package static let scenarios: [(format: String, bytes: Int, encrypted: Bool)] = [
        ("raw", 16 << 10, false), ("raw", 16 << 10, true), ("raw", 256 << 10, false), ("raw", 256 << 10, true),
        ("qcow2", 16 << 10, false), ("qcow2", 256 << 10, true),
    ]

    package static func name(_ scenario: (format: String, bytes: Int, encrypted: Bool)) -> String {
        "\(scenario.format) \(scenario.bytes >> 10) KiB\(scenario.encrypted ? " encrypted" : "")"
    }

    package let directory: String
    package let rounds: Int
    package let progress: any BenchmarkProgress

    package init(directory: String, rounds: Int, progress: any BenchmarkProgress) {
        self.directory = directory
        self.rounds = rounds
        self.progress = progress
    }

    package func run() throws -> Results {
        let prefix = directory + "/blk-bench-state-\(getpid())"
        let baselinePath = prefix + ".baseline"
        defer {
            unlink(baselinePath)
            for format in ["raw", "qcow2"] { for encrypted in [false, true] { unlink(prefix + "-\(format)-\(encrypted).img") } }
        }
        let baseline = try BaselineFile(path: baselinePath)
        defer { try? baseline.descriptor.close() }
        let key = try StateCredential.key(SymmetricKey(size: .bits256))
        var stores: [String: StateStore] = [:]
        for scenario in Self.scenarios {
            let path = prefix + "-\(scenario.format)-\(scenario.encrypted).img"
            let storeKey = "\(scenario.format)-\(scenario.encrypted)"
            if stores[storeKey] != nil { continue }
            try createBenchImage(scenario.format, at: path, ImageCreateOptions(virtualSize: 16 << 20))
            stores[storeKey] = try StateStore.open(path, role: .writer, credential: scenario.encrypted ? key : nil,
                                                   options: .init(format: scenario.format))
        }
        defer { for store in stores.values { try? store.close() } }
        var payloads: [Int: [UInt8]] = [:]
        for size in [16 << 10, 256 << 10] {
            // Random, as a TPM's state is and as ciphertext is: a storage layer that compresses or
            // deduplicates would otherwise flatter the plain commits.
            payloads[size] = (0..<size).map { _ in UInt8.random(in: 0...255) }
        }
        func commit(_ scenario: (format: String, bytes: Int, encrypted: Bool)) throws {
            try stores["\(scenario.format)-\(scenario.encrypted)"]!.put("blob-\(scenario.bytes)", payloads[scenario.bytes]!)
        }
        // Warm up: both copies of every blob exist (no first-time allocation in the figures).
        for _ in 0..<4 { for scenario in Self.scenarios { try commit(scenario) } }
        var baselineSamples: [Double] = []
        var commitSamples = [[Double]](repeating: [], count: Self.scenarios.count)
        for round in 0..<rounds {
            progress.update(Double(round) / Double(rounds), "commits")
            baselineSamples.append(try timed { try baseline.overwriteAndSync() })
            for (index, scenario) in Self.scenarios.enumerated() {
                commitSamples[index].append(try timed { try commit(scenario) })
            }
        }
        progress.finish()
        var commits: [String: Double] = [:]
        for (index, scenario) in Self.scenarios.enumerated() { commits[Self.name(scenario)] = commitSamples[index].median }
        let (hardware, table) = crcThroughput()
        return Results(rounds: rounds, baselineMicroseconds: baselineSamples.median, commitMicroseconds: commits,
                       crcHardware: CRC32C.usesHardware, crcGigabytesPerSecond: hardware, crcTableGigabytesPerSecond: table)
    }

    private func timed(_ body: () throws -> Void) throws -> Double {
        let start = currentMonotonicNanoseconds()
        try body()
        return Double(currentMonotonicNanoseconds() - start) / 1000
    }

    /// GB/s of CRC32C over a 1 MiB buffer: the library's (SSE4.2) and the byte-table loop's.
    private func crcThroughput() -> (Double, Double) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 64)
        defer { buffer.deallocate() }
        for index in 0..<buffer.count { buffer[index] = UInt8(truncatingIfNeeded: index &* 31) }
        let bytes = UnsafeRawBufferPointer(buffer)
        var sink: UInt32 = 0
        func gigabytesPerSecond(_ passes: Int, _ body: () -> UInt32) -> Double {
            var best = Double.infinity
            for _ in 0..<5 {
                let nanoseconds = nanosecondsPerIteration(passes) { sink ^= body() }
                best = min(best, nanoseconds)
            }
            return Double(bytes.count) / best
        }
        let hardware = gigabytesPerSecond(200) { CRC32C.checksum(bytes) }
        let table = gigabytesPerSecond(10) { CRC32C.tableChecksum(bytes) }
        withExtendedLifetime(sink) {}
        return (hardware, table)
    }
}

/// The baseline: a 1 MiB file written and synced once, then 4 KiB overwrites + fdatasync.
private struct BaselineFile {
    let descriptor: FileDescriptor
    let block: UnsafeMutableRawBufferPointer

    init(path: String) throws {
        let opened = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard opened >= 0 else { throw BlockError(.ioError, "Could not create '\(path)': \(String(cString: strerror(errno)))") }
        descriptor = FileDescriptor(rawValue: opened)
        block = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        block.initializeMemory(as: UInt8.self, repeating: 0x5a)
        for offset in stride(from: 0, to: 1 << 20, by: 4096) { _ = descriptor.writeFully(at: Int64(offset), from: UnsafeRawBufferPointer(block)) }
        _ = descriptor.synchronize()
    }

    func overwriteAndSync() throws {
        guard case .success = descriptor.writeFully(at: 0, from: UnsafeRawBufferPointer(block)), case .success = descriptor.synchronizeData() else {
            throw BlockError(.ioError, "baseline write failed: \(Errno.current)")
        }
    }
}
