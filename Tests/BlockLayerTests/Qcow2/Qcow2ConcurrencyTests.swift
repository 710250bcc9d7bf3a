// Reads racing an allocating writer in one process: reads of cached L2 tables take no lock
// (L2ReadIndex), so this is where a stale or misplaced table would show — as a cluster with
// another cluster's bytes, or a cluster read as zeroes after its write returned. The metadata cache holds four tables of the image's 48, so tables are
// evicted and their buffers reused all the while, and a resize midway replaces the L1 table.
import BlockLayer
import Foundation
import Synchronization
import Testing

@Suite("qcow2 reads racing writes")
struct Qcow2ConcurrencyTests {
    static let clusterSize = 4096
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Guest cluster `cluster` as the writer writes it: its number, then a byte it determines.
    static func contents(ofCluster cluster: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: UInt8(cluster % 251 + 1), count: clusterSize)
        withUnsafeBytes(of: UInt64(cluster).littleEndian) { bytes.replaceSubrange(0..<8, with: $0) }
        return bytes
    }

    /// What a read of `cluster` may return: its bytes once its write returned; zeroes or its
    /// bytes while the write may be under way or not yet begun.
    static func check(_ buffer: UnsafeRawBufferPointer, cluster: Int, written: Bool) -> String? {
        if contents(ofCluster: cluster).withUnsafeBytes({ same($0, buffer) }) || !written && same(zeroes, buffer) { return nil }
        let found = UInt64(littleEndian: buffer.loadUnaligned(as: UInt64.self))
        return "cluster \(cluster)\(written ? ", written before the read," : "") read back bytes of cluster \(found) (first byte after its number \(buffer[8]))"
    }

    /// memcmp: element-wise comparison in a debug build is what would take the test's time.
    static func same(_ one: UnsafeRawBufferPointer, _ other: UnsafeRawBufferPointer) -> Bool {
        one.count == other.count && memcmp(one.baseAddress!, other.baseAddress!, one.count) == 0
    }

    nonisolated(unsafe) static let zeroes = UnsafeRawBufferPointer(start: calloc(clusterSize, 1)!, count: clusterSize)

    @Test("readers on two threads see every cluster empty or whole, through evictions and an L1 growth")
    func readersRacingWriter() throws {
        let path = scratch.directory + "/race.qcow2"
        let firstSize: Int64 = 64 << 20, grownSize: Int64 = 96 << 20
        try Qcow2Format.create(at: path, options: ImageCreateOptions(virtualSize: firstSize, clusterSize: Self.clusterSize))
        // 20 KiB of metadata cache: four L2 tables (of 2 MiB of guest data each). Flushes do
        // nothing (cache=unsafe): the race is in memory, and the writer writes back often.
        let image = try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true, cache: .unsafe,
                                                                   metadataCacheBytes: 20 << 10))
        let clusters = Int(grownSize) / Self.clusterSize
        // Every 8th cluster, in an order that jumps between L2 tables.
        let order = stride(from: 0, to: clusters, by: 8).shuffled()
        // The clusters whose writes have returned, in order: a read of one must find its bytes.
        let written = Mutex<[Int]>([])
        let done = Atomic(false)
        let latest = Atomic(0)
        let reads = Atomic(0)
        let failures = Mutex<[String]>([])

        let readers = DispatchGroup()
        for _ in 1...2 {
            readers.enter()
            Thread.detachNewThread {
                defer { readers.leave() }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.clusterSize, alignment: 4096)
                defer { buffer.deallocate() }
                repeat {
                    let clusters = Int((try? image.length()) ?? firstSize) / Self.clusterSize
                    // A third of the reads of clusters already written, a third near the one just
                    // written (in a table the writer keeps cached and changes), a third anywhere
                    // (in tables being read in and evicted).
                    var cluster = Int.random(in: 0..<clusters), mustHaveData = false
                    switch Int.random(in: 0..<3) {
                    case 0:
                        if let finished = written.withLock({ $0.randomElement() }) { (cluster, mustHaveData) = (finished, true) }
                    case 1:
                        let near = latest.load(ordering: .relaxed) + Int.random(in: -64...64)
                        if (0..<clusters).contains(near) { cluster = near }
                    default:
                        break
                    }
                    do {
                        try image.read(at: Int64(cluster * Self.clusterSize), into: buffer)
                    } catch {
                        failures.withLock { $0.append("read of cluster \(cluster): \(error)") }
                        return
                    }
                    if let failure = Self.check(UnsafeRawBufferPointer(buffer), cluster: cluster, written: mustHaveData) {
                        failures.withLock { $0.append(failure) }
                        return
                    }
                    reads.add(1, ordering: .relaxed)
                } while !done.load(ordering: .acquiring)
            }
        }
        do {
            defer {
                done.store(true, ordering: .releasing)
                #expect(readers.wait(timeout: .now() + 300) == .success, "the readers did not finish")
            }
            for (number, cluster) in order.enumerated() {
                if number == order.count / 2 { try image.resize(to: grownSize) }
                if Int64(cluster * Self.clusterSize) >= (try image.length()) { continue }
                let bytes = Self.contents(ofCluster: cluster)
                try bytes.withUnsafeBytes { (bytes) throws -> Void in try image.write(at: Int64(cluster * Self.clusterSize), from: bytes) }
                written.withLock { $0.append(cluster) }
                latest.store(cluster, ordering: .relaxed)
                if failures.withLock({ !$0.isEmpty }) { break }
            }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(reads.load(ordering: .relaxed) >= 2)
        try image.close()

        let checked = try run("/usr/bin/qemu-img", ["check", path])
        #expect(checked.status == 0, "\(checked)")
        // Every cluster as QEMU reads it: what blk wrote where it wrote, zeroes elsewhere.
        let converted = scratch.directory + "/race.raw"
        #expect(try run("/usr/bin/qemu-img", ["convert", "-f", "qcow2", "-O", "raw", path, converted]).status == 0)
        let raw = try Data(contentsOf: URL(fileURLWithPath: converted))
        #expect(raw.count == Int(grownSize))
        let writtenSet = Set(written.withLock { $0 })
        var wrong: [Int] = []
        raw.withUnsafeBytes { raw in
            for cluster in 0..<min(clusters, raw.count / Self.clusterSize) {
                let bytes = UnsafeRawBufferPointer(rebasing: raw[cluster * Self.clusterSize..<(cluster + 1) * Self.clusterSize])
                let right = writtenSet.contains(cluster)
                    ? Self.contents(ofCluster: cluster).withUnsafeBytes { Self.same($0, bytes) } : Self.same(Self.zeroes, bytes)
                if !right { wrong.append(cluster) }
            }
        }
        #expect(wrong.isEmpty, "clusters QEMU reads wrongly: \(wrong.prefix(10))")
    }

    /// One cluster's worth of `byte`, written at guest cluster `cluster`.
    static func fill(_ image: BlockImage, cluster: Int, with byte: UInt8) throws {
        try [UInt8](repeating: byte, count: 65536).withUnsafeBytes { bytes throws in
            try image.write(at: Int64(cluster) << 16, from: bytes)
        }
    }

    /// A new qcow2 image at `path` and a writer open on it that has filled guest cluster 0 with 1s.
    static func writerWithFirstCluster(at path: String) throws -> BlockImage {
        try Qcow2Format.create(at: path, options: ImageCreateOptions(virtualSize: 64 << 20, clusterSize: 65536))
        let writer = try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true))
        try fill(writer, cluster: 0, with: 1)
        return writer
    }

    static func openInactive(_ path: String) throws -> BlockImage {
        try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true, inactive: true))
    }

    // As a migration destination beside its source: the writer allocates past the end of the
    // file as the inactive open first saw it, and the clusters it allocated are data, not
    // corruption — which an inactive open must not mark on its source's image in any case.
    @Test("an inactive open reads clusters its writer allocated after it opened")
    func inactiveReaderBesideWriter() throws {
        let path = scratch.directory + "/shared.qcow2"
        let writer = try Self.writerWithFirstCluster(at: path)
        try writer.flush()
        let destination = try Self.openInactive(path)
        let lengthAtOpen = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        for cluster in 1...4 { try Self.fill(writer, cluster: cluster, with: UInt8(cluster + 1)) }
        try writer.flush()
        #expect(try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int > lengthAtOpen,
                "the writer allocated past the file's end as the destination opened it")

        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
        defer { buffer.deallocate() }
        for cluster in 0...4 {
            try destination.read(at: Int64(cluster) << 16, into: buffer)
            #expect(buffer.allSatisfy { $0 == UInt8(cluster + 1) }, "cluster \(cluster)")
        }
        try destination.close()
        try writer.close()
        let checked = try run("/usr/bin/qemu-img", ["check", path])
        #expect(checked.status == 0, "\(checked)")
    }

    @Test("an inactive open that meets corruption fails the read and writes nothing")
    func inactiveReaderMarksNothing() throws {
        let path = scratch.directory + "/hostile.qcow2"
        let writer = try Self.writerWithFirstCluster(at: path)
        let l1Offset = (writer.root.driver as! Qcow2Driver).header.l1TableOffset
        try writer.close()
        // Guest cluster 0's L2 entry, sent a terabyte past the end of the file.
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: path))
        try handle.seek(toOffset: l1Offset)
        let l2Offset = try handle.read(upToCount: 8)!.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } & 0x00ff_ffff_ffff_fe00
        try handle.seek(toOffset: l2Offset)
        try handle.write(contentsOf: withUnsafeBytes(of: (UInt64(1) << 63 | UInt64(1) << 40).bigEndian) { Data($0) })
        try handle.close()
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        let destination = try Self.openInactive(path)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
        defer { buffer.deallocate() }
        #expect(throws: BlockError.self) { try destination.read(at: 0, into: buffer) }
        try destination.close()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, "the inactive open changed the image")
    }
}
