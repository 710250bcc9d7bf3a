// `blk resize`: growing qcow2 images (within the L1 table, and past it, which moves the table)
// and raw ones; qemu-img check stays clean, old data stays, new space reads as zeroes.
// Shrinking is ShrinkTests'.
import BlockLayer
import Foundation
import Testing

@Suite("blk resize")
struct ResizeTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("qcow2, within the L1 table and past it", arguments: [("64k", "64M", "+64M", 134_217_728), ("512", "1M", "2G", 2_147_483_648)])
    func growQcow2(clusterSize: String, size: String, newSize: String, expectedBytes: Int) throws {
        let image = scratch.directory + "/grow.qcow2"
        #expect(try blk("create", "--cluster-size", clusterSize, image, size).status == 0)
        try qemuIO(["-f", "qcow2", "-c", "write -P 3 0 512k", image])
        let resized = try blk("resize", image, newSize)
        #expect(resized.status == 0 && resized.stdout == "Image resized.\n", "\(resized)")
        let info = try run("/usr/bin/qemu-img", ["info", "--output=json", image])
        #expect(info.stdout.contains("\"virtual-size\": \(expectedBytes)"), "\(info)")
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        let tail = expectedBytes - 65536
        try qemuIO(["-f", "qcow2", "-c", "read -P 3 0 512k", "-c", "read -P 0 \(tail) 64k",
                    "-c", "write -P 4 \(tail) 64k", "-c", "read -P 4 \(tail) 64k", image])
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
    }

    @Test("an open reopened read-write still holds write after a resize")
    func resizeAfterReopen() throws {
        let image = try scratch.qcow2Image(size: "1M")
        let opened = try BlockImage.open(image, options: OpenOptions(format: "qcow2"))
        try opened.reopen(writable: true)
        try opened.resize(to: 2 << 20)
        #expect(try kernelLocks(on: image).contains { $0.covers(byte: 101) }, "write (byte 101) is still held")
        try [UInt8](repeating: 5, count: 4096).withUnsafeBytes { bytes throws in try opened.write(at: (2 << 20) - 4096, from: bytes) }
        try opened.close()
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
    }

    @Test("raw grows; shrinking without --shrink is refused with exit 64 and the image untouched")
    func rawAndShrink() throws {
        let image = try scratch.rawImage(bytes: 1 << 20)
        #expect(try blk("resize", "-f", "raw", image, "+2M").status == 0)
        #expect(try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int == 3 << 20)
        let refused = try blk("resize", "-f", "raw", image, "1M")
        #expect(refused.status == 64)
        #expect(refused.stderr.hasPrefix("blk: Use the --shrink option to perform a shrink operation.\n"))
        #expect(try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int == 3 << 20)
    }

    @Test("a qcow2 image QEMU has open read-write cannot be resized")
    func refusedBesideQEMU() throws {
        let image = try scratch.qcow2Image(size: "8M")
        let writer = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? writer.finish() }
        let refused = try blk("resize", image, "16M")
        #expect(refused.status == 75)
        #expect(refused.stderr.contains("Is another process using the image [\(image)]?\nheld by pid \(writer.pid) (qemu-io)"))
    }
}
