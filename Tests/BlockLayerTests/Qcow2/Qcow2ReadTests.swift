// qcow2 images made and written by the real qemu-img and qemu-io, read by blk: byte for byte,
// through backing chains, zero and compressed clusters, and the qcow2 rows of the lock table.
import Foundation
import Testing

func qemuIO(_ arguments: [String]) throws {
    let result = try run("/usr/bin/qemu-io", arguments)
    guard result.status == 0, !result.stdout.contains("failed") else { throw TestFailure("qemu-io \(arguments): \(result)") }
}

func qemuImg(_ arguments: [String]) throws {
    let result = try run("/usr/bin/qemu-img", arguments)
    guard result.status == 0 else { throw TestFailure("qemu-img \(arguments): \(result)") }
}

@Suite("qcow2 images written by QEMU, read by blk")
struct Qcow2ReadTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Writes at partial clusters, across a cluster boundary and an L2 table boundary (512 MiB with
    /// 64 KiB clusters), zero writes, and data near the end of a 4 GiB image.
    static let writes = [
        "write -P 0x11 1000 3000", "write -P 0x22 65000 1000", "write -P 0x33 511M 2M",
        "write -P 0x44 1G 64k", "write -z 1G 4k", "write -P 0x55 4095M 1M",
    ]
    static let reads = [
        "read -P 0 0 1000", "read -P 0x11 1000 3000", "read -P 0 4000 61000", "read -P 0x22 65000 1000",
        "read -P 0x33 511M 2M", "read -P 0 1G 4k", "read -P 0x44 1052676 0", "read -P 0x44 1073745920 60k",
        "read -P 0x55 4095M 1M", "read -P 0 2G 1M",
    ]

    @Test("a 4 GiB image written by qemu-io reads back byte for byte, and converts to the same raw bytes")
    func readsWhatQEMUWrote() throws {
        let image = try scratch.qcow2Image(size: "4G")
        try qemuIO(["-f", "qcow2"] + Self.writes.flatMap { ["-c", $0] } + [image])
        let read = try run(blkPath, ["io", "-r", image] + Self.reads.flatMap { ["-c", $0] })
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")

        let copy = scratch.directory + "/copy.raw"
        let converted = try blk("convert", "-O", "raw", image, copy)
        #expect(converted.status == 0, "\(converted)")
        let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", image, copy])
        #expect(compared.status == 0, "\(compared)")
    }

    @Test("a backing chain with relative names: reads fall through, overlays win")
    func backingChain() throws {
        let base = scratch.directory + "/base.raw"
        try qemuImg(["create", "-q", "-f", "raw", base, "8M"])
        try qemuIO(["-f", "raw", "-c", "write -P 0xb0 0 8M", base])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", scratch.directory + "/middle.qcow2", "16M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0xb1 1M 1M", scratch.directory + "/middle.qcow2"])
        let top = scratch.directory + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "middle.qcow2", "-F", "qcow2", top, "16M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0xb2 1536k 64k", "-c", "write -z 0 64k", top])
        let read = try blk("io", "-r", top, "-c", "read -P 0 0 64k", "-c", "read -P 0xb0 64k 960k", "-c", "read -P 0xb1 1M 512k",
                           "-c", "read -P 0xb2 1536k 64k", "-c", "read -P 0xb1 1600k 448k", "-c", "read -P 0 8M 8M")
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
        let info = try blk("info", top)
        #expect(info.stdout.contains("backing file: middle.qcow2 (actual path: \(scratch.directory)/middle.qcow2)\nbacking file format: qcow2"), "\(info)")
    }

    @Test("compressed clusters from qemu-img convert -c read back identically", arguments: ["zlib", "zstd"])
    func compressedClusters(compression: String) throws {
        let source = try scratch.qcow2Image(size: "32M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x61 0 5M", "-c", "write -P 0x62 17M 100k", source])
        let compressed = scratch.directory + "/compressed.qcow2"
        try qemuImg(["convert", "-c", "-O", "qcow2", "-o", "compression_type=\(compression)", source, compressed])
        #expect(try blk("info", compressed).stdout.contains("compression type: \(compression)"))
        let copy = scratch.directory + "/copy.raw"
        #expect(try blk("convert", compressed, copy).status == 0)
        let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "qcow2", "-F", "raw", source, copy])
        #expect(compared.status == 0, "\(compared)")
    }

    @Test("a qcow2 backing file is held as QEMU holds it: consistent read, not sharing write or resize")
    func backingLocks() throws {
        let base = try scratch.qcow2Image("base.qcow2", size: "8M")
        let top = scratch.directory + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, "8M"])
        let holder = try LineProcess(blkPath, ["io", "-r", top, "-c", "sleep 600000"])
        defer { holder.kill9() }
        try waitUntilLocked(base, .qcow2ReadOnly, by: holder)
        let writer = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write 0 512", base])
        #expect(writer.stderr == "qemu-io: can't open device \(base): Failed to get \"write\" lock\nIs another process using the image [\(base)]?\n")
    }
}
