// blk writing qcow2 images: `qemu-img check` finds them clean (exit 0) and QEMU reads back
// exactly what blk wrote — fresh images, mixed writers, copy-up over a backing file, overwriting
// compressed clusters.
import BlockLayer
import Foundation
import Testing

@Suite("qcow2 images written by blk")
struct Qcow2WriteTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func expectClean(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0, "\(checked)", sourceLocation: sourceLocation)
    }

    @Test("partial clusters, cluster and L2-table boundaries, zeroes, the end of a 4 GiB image")
    func freshImage() throws {
        let image = scratch.directory + "/fresh.qcow2"
        #expect(try blk("create", image, "4G").status == 0)
        let wrote = try run(blkPath, ["io", image] + Qcow2ReadTests.writes.flatMap { ["-c", $0] })
        #expect(wrote.status == 0, "\(wrote)")
        try expectClean(image)
        try qemuIO(["-f", "qcow2", "-r"] + Qcow2ReadTests.reads.flatMap { ["-c", $0] } + [image])
    }

    @Test("blk and qemu-io writing the same image in turn")
    func mixedWriters() throws {
        let image = try scratch.qcow2Image(size: "1G")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x01 0 192k", image])
        #expect(try blk("io", image, "-c", "write -P 0x02 100k 100k", "-c", "write -P 0x03 300M 1k").status == 0)
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x04 150k 10k", image])
        try expectClean(image)
        let expected = ["read -P 0x01 0 100k", "read -P 0x02 100k 50k", "read -P 0x04 150k 10k", "read -P 0x02 160k 40k",
                        "read -P 0 200k 56k", "read -P 0x03 300M 1k"]
        try qemuIO(["-f", "qcow2", "-r"] + expected.flatMap { ["-c", $0] } + [image])
        let read = try run(blkPath, ["io", "-r", image] + expected.flatMap { ["-c", $0] })
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
    }

    @Test("a partial write over a backing file copies the rest of the cluster up")
    func copyUp() throws {
        let base = try scratch.qcow2Image("base.qcow2", size: "16M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0xa1 0 16M", base])
        let overlay = scratch.directory + "/overlay.qcow2"
        #expect(try blk("create", "-b", "base.qcow2", overlay).status == 0)
        #expect(try blk("io", overlay, "-c", "write -P 0xa2 100k 10k").status == 0)
        try expectClean(overlay)
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0xa1 64k 36k", "-c", "read -P 0xa2 100k 10k",
                    "-c", "read -P 0xa1 112640 16664576", overlay])
    }

    @Test("overwriting compressed clusters leaks nothing")
    func overCompressed() throws {
        let source = try scratch.qcow2Image(size: "4M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x71 0 4M", source])
        let compressed = scratch.directory + "/compressed.qcow2"
        try qemuImg(["convert", "-c", "-O", "qcow2", source, compressed])
        #expect(try blk("io", compressed, "-c", "write -P 0x72 70k 1k", "-c", "write -P 0x73 1M 64k").status == 0)
        try expectClean(compressed)
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0x71 64k 6k", "-c", "read -P 0x72 70k 1k", "-c", "read -P 0x71 71k 953k",
                    "-c", "read -P 0x73 1M 64k", compressed])
    }

    @Test("write -c stores compressed clusters QEMU reads and counts; misaligned ones are refused")
    func compressedWrites() throws {
        let image = try scratch.qcow2Image(size: "1G")
        let wrote = try blk("io", image, "-c", "write -c -P 0x61 0 192k", "-c", "write -c -P 0x62 64k 64k", "-c", "write -c -P 0x63 512M 64k")
        #expect(wrote.status == 0, "\(wrote)")
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0 && checked.stdout.contains("100.00% compressed clusters"), "\(checked)")
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0x61 0 64k", "-c", "read -P 0x62 64k 64k", "-c", "read -P 0x61 128k 64k",
                    "-c", "read -P 0x63 512M 64k", image])
        let misaligned = try blk("io", image, "-c", "write -c 4k 64k")
        #expect(misaligned.status == 1 && misaligned.stderr.contains("whole clusters"), "\(misaligned)")
        let raw = try scratch.rawImage()
        let onRaw = try blk("io", "-f", "raw", raw, "-c", "write -c 0 64k")
        #expect(onRaw.status == 1 && onRaw.stderr.contains("Compression not supported for this file format"), "\(onRaw)")
    }

    @Test("unknown autoclear bits are cleared before the first write")
    func autoclear() throws {
        let image = try scratch.qcow2Image(size: "8M")
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try handle.seek(toOffset: 88)
        handle.write(Data([0, 0, 0, 0, 0, 0, 0, 0x20]))
        try handle.close()
        #expect(try blk("io", image, "-c", "write -P 9 0 4k").status == 0)
        let header = try Data(contentsOf: URL(fileURLWithPath: image)).prefix(96)
        #expect(header.suffix(8) == Data(count: 8))
        try expectClean(image)
    }

    /// Bytes of the file and of the blocks it has allocated.
    func sizes(_ path: String) throws -> (file: Int64, allocated: Int64) {
        var status = stat()
        guard stat(path, &status) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return (Int64(status.st_size), Int64(status.st_blocks) * 512)
    }

    // A writer grows its file ahead with blocks reserved for the clusters to come (fallocate),
    // not as a hole: buffered writes into a hole each pay for delayed allocation. A flush gives
    // back what was not used, so the image ends at its last cluster and leaks nothing.
    @Test("allocating writes grow the file ahead with its blocks reserved; a flush trims it back")
    func growthAhead() throws {
        let path = scratch.directory + "/ahead.qcow2"
        try Qcow2Format.create(at: path, options: ImageCreateOptions(virtualSize: 1 << 30))
        let image = try BlockImage.open(path, options: OpenOptions(format: "qcow2", writable: true))
        let cluster = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 4096)
        defer { cluster.deallocate() }
        cluster.initializeMemory(as: UInt8.self, repeating: 0x5a)
        try image.write(at: 0, from: UnsafeRawBufferPointer(cluster))
        let grown = try sizes(path)
        #expect(grown.file >= 128 << 20)
        #expect(grown.allocated >= 128 << 20, "the growth is reserved, not a hole: \(grown)")
        try image.flush()
        let trimmed = try sizes(path)
        #expect(trimmed.file < 1 << 20)
        #expect(trimmed.allocated < 1 << 20, "\(trimmed)")
        try image.close()
        try expectClean(path)
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0 64k 1023M", path])
    }
}
