// Block status through the library against the real qemu-img map 7.2: the statuses of an image,
// merged and printed as qemu-img prints them, are its output byte for byte — raw sparse files,
// qcow2 with every kind of cluster, compressed clusters, a three-deep chain with shorter backing
// images, and a 1 TiB sparse qcow2 walked a table at a time.
import BlockLayer
import Qcow2
import Testing

@Suite("block status agrees with qemu-img map")
struct BlockStatusTests {
    let scratch: Scratch

    init() throws {
        scratch = try Scratch()
    }

    private func open(_ path: String) throws -> BlockImage {
        try BlockImage.open(path, formats: [RawFormat.self, Qcow2Format.self])
    }

    /// The image's statuses from start to end, asked for at most 1 GiB at a time as qemu-img map
    /// asks, with each run checked against what was asked.
    private func statuses(of image: BlockImage) throws -> [(start: Int64, status: BlockStatus)] {
        var runs: [(start: Int64, status: BlockStatus)] = []
        let length = try image.length()
        var offset: Int64 = 0
        while offset < length {
            let asked = min(1 << 30, length - offset)
            let status = try image.blockStatus(at: offset, byteCount: asked)
            #expect(status.byteCount >= 1 && status.byteCount <= asked, "at \(offset): \(status)")
            #expect((status.hostOffset == nil) == (status.file == nil), "at \(offset): \(status)")
            runs.append((offset, status))
            offset += status.byteCount
        }
        return runs
    }

    /// Runs merged as qemu-img map merges them (entry_mergeable) before it prints them.
    private func merged(_ runs: [(start: Int64, status: BlockStatus)]) -> [(start: Int64, status: BlockStatus)] {
        var merged: [(start: Int64, status: BlockStatus)] = []
        for run in runs {
            if let last = merged.last?.status, Self.mergeable(last, run.status) {
                merged[merged.count - 1].status.byteCount += run.status.byteCount
            } else {
                merged.append(run)
            }
        }
        return merged
    }

    private static func mergeable(_ current: BlockStatus, _ next: BlockStatus) -> Bool {
        guard current.isZero == next.isZero, current.isData == next.isData, current.depth == next.depth,
              current.isAllocated == next.isAllocated, current.isCompressed == next.isCompressed,
              (current.hostOffset == nil) == (next.hostOffset == nil) else { return false }
        guard let offset = current.hostOffset else { return true }
        return offset + current.byteCount == next.hostOffset
    }

    /// The runs as qemu-img map 7.2 prints them with --output=json.
    private func mapJSON(_ runs: [(start: Int64, status: BlockStatus)]) -> String {
        let lines = merged(runs).map { start, status in
            "{ \"start\": \(start), \"length\": \(status.byteCount), \"depth\": \(status.depth), \"present\": \(status.isAllocated), "
                + "\"zero\": \(status.isZero), \"data\": \(status.isData)" + (status.hostOffset.map { ", \"offset\": \($0)" } ?? "") + "}"
        }
        return "[" + lines.joined(separator: ",\n") + "]\n"
    }

    /// The runs as qemu-img map prints them for people: data runs, with the file each is in.
    private func mapHuman(_ runs: [(start: Int64, status: BlockStatus)]) -> String {
        let lines = merged(runs).filter { $0.status.isData && !$0.status.isZero }.map { start, status in
            [start, status.byteCount, status.hostOffset ?? 0].map(Self.hexColumn).joined() + (status.file ?? "") + "\n"
        }
        return "Offset          Length          Mapped to       File\n" + lines.joined()
    }

    /// printf's `%#-16llx`: 0 as "0", others with "0x", left-aligned in 16 columns.
    private static func hexColumn(_ value: Int64) -> String {
        let text = value == 0 ? "0" : "0x" + String(value, radix: 16)
        return text + String(repeating: " ", count: max(0, 16 - text.count))
    }

    private func qemuMap(_ path: String, _ options: [String] = [], output: String = "json") throws -> String {
        let mapped = try run("/usr/bin/qemu-img", ["map", "--output=\(output)"] + options + [path])
        guard mapped.status == 0 else { throw TestFailure("qemu-img map \(path): \(mapped)") }
        return mapped.stdout
    }

    @Test("a sparse raw file: data and holes, each present at its own offset")
    func rawSparse() throws {
        let path = try scratch.rawImage(bytes: 4 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 1 64k 64k", "-c", "write -P 2 1M 4k", "-c", "write -P 3 4092k 4k", path])
        let runs = try statuses(of: try open(path))
        #expect(mapJSON(runs) == (try qemuMap(path, ["-f", "raw"])))
        #expect(runs.allSatisfy { $0.status.isAllocated && $0.status.hostOffset == $0.start && $0.status.file == path })
    }

    @Test("qcow2 with data, plain and allocated zero clusters, unallocated and compressed clusters")
    func qcow2ClusterKinds() throws {
        let path = try scratch.qcow2Image(size: "4M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 128k", "-c", "write -z 256k 64k", "-c", "write -P 3 512k 128k",
                    "-c", "write -z 512k 64k", "-c", "write -P 4 1M 64k", "-c", "write -c -P 5 2M 64k",
                    "-c", "write -c -P 6 2112k 64k", "-c", "write -P 7 4032k 64k", path])
        let image = try open(path)
        let runs = try statuses(of: image)
        #expect(mapJSON(runs) == (try qemuMap(path)))
        let compressed = runs.filter { $0.status.isCompressed }
        #expect(compressed.map(\.start) == [2 << 20, 2112 << 10], "one run per compressed cluster")
        #expect(compressed.allSatisfy { $0.status.isData && $0.status.hostOffset == nil && $0.status.isAllocated })
        // Inside a cluster, and asked for less than the run: the host offset moves along, the run is cut.
        let inside = try image.blockStatus(at: 1000, byteCount: 100)
        #expect(inside.byteCount == 100 && inside.hostOffset == (runs[0].status.hostOffset ?? 0) + 1000)
        let zeroKept = try image.blockStatus(at: 512 << 10, byteCount: 1 << 20)
        #expect(zeroKept.isZero && !zeroKept.isData && zeroKept.hostOffset != nil && zeroKept.byteCount == 64 << 10)
        #expect(try image.readsAsZeroes(at: 128 << 10, byteCount: 384 << 10))
        #expect(try !image.readsAsZeroes(at: 128 << 10, byteCount: 512 << 10))
    }

    @Test("metadata preallocation: data clusters over holes of the file read as zeroes, as QEMU detects and reports them")
    func metadataPreallocation() throws {
        let path = scratch.directory + "/preallocated.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", path, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 1M 64k", path])
        let runs = try statuses(of: try open(path))
        #expect(runs.contains { $0.status.isData && $0.status.isZero })
        #expect(mapJSON(runs) == (try qemuMap(path)))
        // Clusters allocated with their blocks (falloc) are data, not zeroes: no preallocated metadata is detected.
        let allocated = scratch.directory + "/falloc.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "preallocation=falloc", allocated, "4M"])
        let allocatedRuns = try statuses(of: try open(allocated))
        #expect(allocatedRuns.allSatisfy { $0.status.isData && !$0.status.isZero })
        #expect(mapJSON(allocatedRuns) == (try qemuMap(allocated)))
    }

    @Test("a three-deep chain with shorter backing images: depth, and zeroes past each end")
    func backingChain() throws {
        let directory = scratch.directory
        try qemuImg(["create", "-q", "-f", "raw", directory + "/base.raw", "2M"])
        try qemuIO(["-f", "raw", "-c", "write -P 1 0 1M", directory + "/base.raw"])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", directory + "/mid.qcow2", "3M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 2 512k 64k", "-c", "write -P 2 2M 64k", directory + "/mid.qcow2"])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", directory + "/top.qcow2", "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 3 0 64k", "-c", "write -z 128k 64k", directory + "/top.qcow2"])
        let runs = try statuses(of: try open(directory + "/top.qcow2"))
        #expect(mapJSON(runs) == (try qemuMap(directory + "/top.qcow2")))
        #expect(Set(runs.map(\.status.depth)) == [0, 1, 2])
        // Files named as QEMU names them: the backing name beside the path the image was opened by.
        #expect(mapHuman(runs) == (try qemuMap(directory + "/top.qcow2", output: "human")))
    }

    @Test("a 1 TiB sparse qcow2 is walked one L2 table at most per status, as qemu-img map walks it")
    func terabyteSparse() throws {
        let path = try scratch.qcow2Image(size: "1T")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -P 2 300G 128k", "-c", "write -z 700G 64k",
                    "-c", "write -P 3 1048575M 64k", path])
        let runs = try statuses(of: try open(path))
        // One L2 table of a 64 KiB-cluster image maps 8192 clusters: 512 MiB.
        #expect(runs.allSatisfy { $0.status.byteCount <= 512 << 20 })
        #expect(runs.count >= 2048 && runs.count < 2100, "\(runs.count) statuses")
        #expect(mapJSON(runs) == (try qemuMap(path)))
    }
}
