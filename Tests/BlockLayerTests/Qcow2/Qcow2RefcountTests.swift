// Refcounts of every width qcow2 allows (1 to 64 bits), and a refcount table that must grow:
// blk writes, qemu-img check finds the image clean, QEMU reads back what blk wrote.
import Foundation
import Testing

@Suite("qcow2 refcount widths and refcount-table growth")
struct Qcow2RefcountTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("blk writes images with every refcount width; with two bits or more, over a snapshot too", arguments: [1, 2, 4, 8, 32, 64])
    func widths(bits: Int) throws {
        let image = scratch.directory + "/r\(bits).qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "refcount_bits=\(bits)", image, "4G"])
        if bits >= 2 {
            // Shared with the snapshot: blk's writes over it must copy, and its tables too.
            try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x12 1G 64k", image])
            try qemuImg(["snapshot", "-c", "base", image])
        }
        let reads = bits >= 2
            ? ["read -P 0x11 0 1000", "read -P 0x11 4000 61000", "read -P 0x11 66000 65072"] + Qcow2ReadTests.reads.filter { !$0.contains(" 0 1000") && !$0.contains(" 4000 ") }
            : Qcow2ReadTests.reads
        let wrote = try run(blkPath, ["io", image] + Qcow2ReadTests.writes.flatMap { ["-c", $0] })
        #expect(wrote.status == 0, "\(wrote)")
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0, "\(checked)")
        #expect(try blk("check", image).stdout == checked.stdout)
        try qemuIO(["-f", "qcow2", "-r"] + reads.flatMap { ["-c", $0] } + [image])
    }

    @Test("with 512-byte clusters 20 MiB of data outgrow the refcount table twice; the image stays clean")
    func tableGrowth() throws {
        let image = scratch.directory + "/small-clusters.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=512", image, "64M"])
        let tableOffset = { () throws -> Data in try Data(contentsOf: URL(fileURLWithPath: image))[48..<60] }
        let before = try tableOffset()
        let wrote = try blk("io", image, "-c", "write -P 0x5a 0 20M", "-c", "write -P 0x5b 40M 512")
        #expect(wrote.status == 0, "\(wrote)")
        #expect(try tableOffset() != before, "the refcount table moved")
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0, "\(checked)")
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0x5a 0 20M", "-c", "read -P 0 20M 20M", "-c", "read -P 0x5b 40M 512", image])
        #expect(try qemuIOWrites(image))
    }

    /// QEMU goes on allocating in the image blk grew.
    func qemuIOWrites(_ image: String) throws -> Bool {
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x5c 30M 1M", image])
        return try run("/usr/bin/qemu-img", ["check", image]).status == 0
    }
}

@Suite("qcow2 metadata cache bound")
struct Qcow2CacheSizeTests {
    @Test("a metadata cache of four tables: writes and reads across 300 L2 tables stay right, the image clean")
    func tinyCache() throws {
        let scratch = try Scratch()
        let image = scratch.directory + "/small-cache.qcow2"
        #expect(try blk("create", "--cluster-size", "4k", image, "1G").status == 0)
        // One write every 3 MiB lands in a new 4 KiB L2 table (each maps 2 MiB) every time.
        let writes = (0..<300).map { "write -P \($0 % 250 + 1) \($0 * 3)M 4k" }
        let wrote = try run(blkPath, ["io", "--cache-size", "16k", image] + writes.flatMap { ["-c", $0] })
        #expect(wrote.status == 0, "\(wrote)")
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        let reads = (0..<300).map { "read -P \($0 % 250 + 1) \($0 * 3)M 4k" }
        let read = try run(blkPath, ["io", "-r", "--cache-size", "16k", image] + reads.flatMap { ["-c", $0] })
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 1 0 4k", "-c", "read -P 50 897M 4k", "-c", "read -P 0 1M 1M", image])
    }
}
