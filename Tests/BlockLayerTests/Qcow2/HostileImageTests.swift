// Hostile and damaged qcow2 images: each one a clear error and its exit code — never a crash,
// a hang, or a write to the image.
import Foundation
import Testing

/// One way to damage a fresh 64 MiB qcow2 image from qemu-img 7.2 (cluster 64 KiB, L1 at 0x30000,
/// header length 112, so extensions start at byte 112).
struct Damage: Sendable, CustomTestStringConvertible {
    var name: String
    var patches: [(offset: Int, bytes: [UInt8])]
    var truncateTo: Int?
    var exitStatus: Int32
    var message: String
    var testDescription: String { name }

    static func be64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }
    static func be32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (24 - 8 * $0)) } }

    static let all: [Damage] = [
        Damage(name: "truncated header", patches: [], truncateTo: 40, exitStatus: 65, message: "qcow2: the header is truncated (40 bytes)"),
        Damage(name: "version 4", patches: [(4, be32(4))], exitStatus: 69, message: "qcow2: Unsupported qcow2 version 4"),
        Damage(name: "cluster_bits 30", patches: [(20, be32(30))], exitStatus: 65,
               message: "qcow2: Cluster size must be a power of two between 512 and 2048k (cluster_bits 30)"),
        Damage(name: "cluster_bits 8", patches: [(20, be32(8))], exitStatus: 65,
               message: "qcow2: Cluster size must be a power of two between 512 and 2048k (cluster_bits 8)"),
        Damage(name: "absurd size", patches: [(24, be64(UInt64.max))], exitStatus: 65, message: "qcow2: L1 table is too small for the image size"),
        Damage(name: "huge L1", patches: [(36, be32(UInt32.max))], exitStatus: 65, message: "qcow2: Active L1 table too large"),
        Damage(name: "L1 unaligned", patches: [(40, be64(0x30200))], exitStatus: 65,
               message: "qcow2: Active L1 table offset invalid (not cluster-aligned)"),
        Damage(name: "L1 past the end", patches: [(40, be64(1 << 40))], exitStatus: 65,
               message: "qcow2: Active L1 table is past the end of the file"),
        Damage(name: "L1 over the header", patches: [(40, be64(0))], exitStatus: 65, message: "qcow2: Active L1 table overlaps the header"),
        Damage(name: "refcount table past the end", patches: [(48, be64(1 << 40))], exitStatus: 65,
               message: "qcow2: Reference count table is past the end of the file"),
        Damage(name: "refcount_order 7", patches: [(96, be32(7))], exitStatus: 65,
               message: "qcow2: Reference count entry width too large; may not exceed 64 bits"),
        Damage(name: "header_length over the cluster", patches: [(100, be32(1 << 20))], exitStatus: 65,
               message: "qcow2: qcow2 header exceeds cluster size"),
        Damage(name: "unknown incompatible feature", patches: [(72, be64(1 << 40))], exitStatus: 69,
               message: "qcow2: Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000"),
        Damage(name: "encrypted", patches: [(32, be32(1))], exitStatus: 69,
               message: "qcow2: encrypted images (crypt_method 1) are not supported"),
        Damage(name: "backing name outside the first cluster", patches: [(8, be64(0xfff0)), (16, be32(100))], exitStatus: 65,
               message: "qcow2: Backing file name is not inside the first cluster"),
        Damage(name: "extension longer than the cluster", patches: [(112, be32(0x1234_5678)), (116, be32(0xffff_fff0))], exitStatus: 65,
               message: "qcow2: ext_magic 0x12345678: invalid extension length"),
    ]
}

@Suite("hostile qcow2 images")
struct HostileImageTests {
    @Test("a damaged header is refused with its own message and exit code, and nothing is written", arguments: Damage.all)
    func damagedHeader(damage: Damage) throws {
        let scratch = try Scratch()
        let image = try scratch.qcow2Image(size: "64M")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        for patch in damage.patches { bytes.replaceSubrange(patch.offset..<patch.offset + patch.bytes.count, with: patch.bytes) }
        if let length = damage.truncateTo { bytes = bytes.prefix(length) }
        try bytes.write(to: URL(fileURLWithPath: image))

        for arguments in [["info", image], ["io", "-f", "qcow2", image, "-c", "read 0 512"]] {
            let refused = try run(blkPath, arguments, within: 20)
            #expect(refused.status == damage.exitStatus, "\(arguments): \(refused)")
            #expect(refused.stderr.hasPrefix("blk: " + damage.message), "\(arguments): \(refused.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == bytes, "the image was not modified")
    }

    @Test("an L2 table pointing past the end of the file fails the read as corrupt, and the rest still reads")
    func l2PastTheEnd() throws {
        let scratch = try Scratch()
        let image = try scratch.qcow2Image(size: "1G")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x77 0 64k", "-c", "write -P 0x78 512M 64k", image])
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let l1 = 0x30000
        bytes.replaceSubrange(l1 + 8..<l1 + 16, with: Damage.be64(1 << 40 | 1 << 63))
        try bytes.write(to: URL(fileURLWithPath: image))
        let read = try blk("io", "-r", image, "-c", "read -P 0x77 0 64k", "-c", "read 512M 64k")
        #expect(read.status == 1)
        #expect(read.stdout.contains("read 65536/65536 bytes at offset 0"))
        #expect(read.stderr == "blk: read failed: qcow2: L2 table offset 0x10000000000 is outside the image file (\(bytes.count) bytes)\n")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == bytes, "a read-only open leaves the image as it was")

        // Open read-write, the same finding marks the image corrupt, as QEMU does, and only that.
        let marked = try blk("io", image, "-c", "read 512M 64k")
        #expect(marked.stderr == "blk: read failed: qcow2: Marking image as corrupt: L2 table offset 0x10000000000 is outside the "
                + "image file (\(bytes.count) bytes); further corruption events will be suppressed\n")
        var expected = bytes
        expected[79] |= 2
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == expected)
        let info = try run("/usr/bin/qemu-img", ["info", image])
        #expect(info.stdout.contains("corrupt: true"))
        let refused = try blk("io", image, "-c", "write 0 512")
        #expect(refused.status == 65 && refused.stderr == "blk: qcow2: Image is corrupt; cannot be opened read/write\n", "\(refused)")
    }

    @Test("a snapshot whose L1 table lies at the top of the address space: check reports it, no crash, no write")
    func snapshotL1AtTheTop() throws {
        let scratch = try Scratch()
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", image])
        try qemuImg(["snapshot", "-c", "s", image])
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let table = Int(bytes[64..<72].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        bytes.replaceSubrange(table..<table + 8, with: Damage.be64(0xffff_ffff_ffff_fe00))
        try bytes.write(to: URL(fileURLWithPath: image))
        let checked = try run(blkPath, ["check", image], within: 20)
        #expect(checked.status == 2, "\(checked)")
        #expect(checked.stderr.contains("snapshot 1 L1 table at offset 0xfffffffffffffe00"), "\(checked)")
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status != 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == bytes)
    }

    @Test("a backing chain that loops back to itself is refused")
    func backingLoop() throws {
        let scratch = try Scratch()
        let first = scratch.directory + "/a.qcow2", second = scratch.directory + "/b.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", second, "1M"])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", first, "1M"])
        try qemuImg(["rebase", "-u", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", second])
        let refused = try run(blkPath, ["info", first], within: 20)
        #expect(refused.status == 65, "\(refused)")
        #expect(refused.stderr.contains("the backing chain loops back to an image already in it"))
    }
}
