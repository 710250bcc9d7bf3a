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

/// qcow2 images written field by field into sparse files, for the checks that must stay bounded
/// whatever the metadata claims: a 32 GiB image takes a few MiB of disk.
enum CraftedQcow2 {
    /// A version 3 header with 16-bit refcounts, no extensions, no snapshots.
    static func header(clusterBits: UInt32, size: UInt64, l1Size: UInt32, l1Offset: UInt64,
                       refcountTableOffset: UInt64, refcountTableClusters: UInt32) -> [UInt8] {
        var bytes: [UInt8] = [0x51, 0x46, 0x49, 0xfb] + Damage.be32(3) + Damage.be64(0) + Damage.be32(0)
        bytes += Damage.be32(clusterBits) + Damage.be64(size) + Damage.be32(0) + Damage.be32(l1Size)
        bytes += Damage.be64(l1Offset) + Damage.be64(refcountTableOffset) + Damage.be32(refcountTableClusters)
        bytes += Damage.be32(0) + Damage.be64(0) // no snapshots
        bytes += Damage.be64(0) + Damage.be64(0) + Damage.be64(0) // no features
        bytes += Damage.be32(4) + Damage.be32(112) // refcount_order, header_length
        return bytes + Damage.be64(0) // the end of the (no) extensions
    }

    /// `pattern` `count` times over.
    static func repeated(_ pattern: [UInt8], count: Int) -> [UInt8] {
        var bytes = pattern
        bytes.reserveCapacity(pattern.count * count)
        while bytes.count < pattern.count * count { bytes += bytes.prefix(pattern.count * count - bytes.count) }
        return bytes
    }

    /// A sparse file of `length` bytes holding `pieces`.
    static func write(_ path: String, length: UInt64, _ pieces: [(offset: UInt64, bytes: [UInt8])]) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw TestFailure("create \(path)") }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.truncate(atOffset: length)
        for piece in pieces {
            try handle.seek(toOffset: piece.offset)
            try handle.write(contentsOf: piece.bytes)
        }
    }

    /// 512-byte clusters in a sparse file of `length` bytes, whose refcount table names one
    /// refcount block in every entry, a block that counts each of its clusters once: every
    /// cluster of the file is in use by the refcounts, and almost none is referenced. Returns
    /// how many clusters the metadata references (header, L1 table, refcount table and block).
    @discardableResult
    static func refcountsClaimEverything(_ path: String, length: UInt64) throws -> UInt64 {
        let entries = length / 512 / 256
        let table: UInt64 = 1 << 20, block = table + entries * 8
        try write(path, length: length, [
            (0, header(clusterBits: 9, size: 1 << 20, l1Size: 32, l1Offset: 512, refcountTableOffset: table,
                       refcountTableClusters: UInt32(entries * 8 / 512))),
            (table, repeated(Damage.be64(block), count: Int(entries))),
            (block, repeated([0, 1], count: 256)),
        ])
        return 1 + 1 + entries * 8 / 512 + 1
    }

    /// 64 KiB clusters: an L1 table of `l1Entries` entries, every one naming the same L2 table,
    /// whose first entry names a data cluster; all with refcount 1 and COPIED, as if each were
    /// named once. Returns the L2 table's cluster and the data cluster.
    @discardableResult
    static func l1EntriesShareOneL2Table(_ path: String, l1Entries: Int) throws -> (l2: UInt64, data: UInt64) {
        let clusterSize: UInt64 = 65536
        let l1 = clusterSize, l1Clusters = (UInt64(l1Entries) * 8 + clusterSize - 1) / clusterSize
        let l2 = l1 + l1Clusters * clusterSize, table = l2 + clusterSize, block = table + clusterSize, data = block + clusterSize
        let end = data + clusterSize
        try write(path, length: end, [
            (0, header(clusterBits: 16, size: UInt64(l1Entries) * 8192 * clusterSize, l1Size: UInt32(l1Entries), l1Offset: l1,
                       refcountTableOffset: table, refcountTableClusters: 1)),
            (l1, repeated(Damage.be64(l2 | 1 << 63), count: l1Entries)),
            (l2, Damage.be64(data | 1 << 63)),
            (table, Damage.be64(block)),
            (block, repeated([0, 1], count: Int(end / clusterSize))),
        ])
        return (l2 / clusterSize, data / clusterSize)
    }
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

    // The bounds of docs/reliability.md: `blk check` needs memory for the metadata it reads and
    // a byte per cluster of the file, and reads each table once, whatever the tables claim.
    @Test("check on a sparse 32 GiB file whose refcounts claim every cluster: within bounds, and qemu-img's findings")
    func refcountsClaimEverything() throws {
        let scratch = try Scratch()
        let image = scratch.directory + "/claims.qcow2"
        let length: UInt64 = 32 << 30
        let referenced = try CraftedQcow2.refcountsClaimEverything(image, length: length)
        let checked = try runMeasuringMemory(blkPath, ["check", image], within: 120)
        #expect(checked.status == 2, "\(checked.stdout)")
        #expect(checked.peakResidentKiB < 512 << 10, "peak RSS \(checked.peakResidentKiB) KiB")
        let leaks = length / 512 - referenced
        #expect(checked.stdout.contains("\n\(leaks) leaked clusters were found on the image."), "\(checked.stdout)")
        #expect(checked.stderr.contains("... and \(leaks - 1000) more leaked clusters (\(leaks) in all)\n"))
        // The same shape in 64 MiB, which qemu-img checks quickly: the same summary, to the count.
        let small = scratch.directory + "/small.qcow2"
        try CraftedQcow2.refcountsClaimEverything(small, length: 64 << 20)
        let ours = try run(blkPath, ["check", small], within: 60)
        let theirs = try run("/usr/bin/qemu-img", ["check", small], within: 60)
        #expect(ours.status == 2 && theirs.status == 2, "blk \(ours.stdout)\nqemu-img \(theirs.stdout)")
        #expect(ours.stdout == theirs.stdout)
    }

    @Test("check on an L1 table whose 4M entries all name one L2 table: read once, each reference counted, as qemu-img")
    func l1EntriesShareOneL2Table() throws {
        let scratch = try Scratch()
        let image = scratch.directory + "/shared.qcow2"
        let entries = 4 << 20
        let (l2, data) = try CraftedQcow2.l1EntriesShareOneL2Table(image, l1Entries: entries)
        let checked = try runMeasuringMemory(blkPath, ["check", image], within: 120)
        #expect(checked.status == 2, "\(checked)")
        #expect(checked.peakResidentKiB < 512 << 10, "peak RSS \(checked.peakResidentKiB) KiB")
        #expect(checked.stderr == "ERROR cluster \(l2) refcount=1 reference=\(entries)\nERROR cluster \(data) refcount=1 reference=\(entries)\n")
        // 1024 entries, which qemu-img checks quickly (it reads the table once per entry).
        let small = scratch.directory + "/small.qcow2"
        try CraftedQcow2.l1EntriesShareOneL2Table(small, l1Entries: 1024)
        let ours = try run(blkPath, ["check", small], within: 60)
        let theirs = try run("/usr/bin/qemu-img", ["check", small], within: 60)
        #expect(ours.status == 2 && theirs.status == 2, "blk \(ours)\nqemu-img \(theirs)")
        #expect(ours.stdout == theirs.stdout)
    }
}
