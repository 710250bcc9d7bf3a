// Extended L2 entries (subclusters) against the real qemu-img and qemu-io 7.2: images QEMU made
// read by blk byte for byte and mapped alike, images blk made and wrote read by QEMU and checked
// clean, damaged bitmaps refused with 65 and reported by check as qemu-img reports them, and the
// crash states of partial writes.
import Foundation
import Testing

@Suite("qcow2: extended L2 entries (subclusters)")
struct SubclusterTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Partial writes of a few subclusters, writes across clusters, zeroes and discards of whole
    /// and partial subclusters and clusters, over a backing file of 0xaa.
    static let qemuWrites = [
        "write -P 0x11 4k 2k", "write -P 0x22 70k 100k", "write -z 200k 8k", "write -z 212k 1k", "discard 300k 64k",
        "write -z 512k 64k", "write -P 0x33 1000k 3k", "discard 1001k 2k",
    ]

    /// A 2 MiB backing image full of 0xaa, and an overlay with extended L2 entries over it.
    func overlay(clusterSize: String = "64k") throws -> String {
        let base = scratch.directory + "/base.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", base, "2M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0xaa 0 2M", base])
        let top = scratch.directory + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=\(clusterSize)", "-b", "base.qcow2", "-F", "qcow2", top])
        return top
    }

    /// The guest's bytes as qemu-img and as blk read them, compared whole.
    func expectSameContent(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let byQEMU = scratch.directory + "/by-qemu.raw", byBlk = scratch.directory + "/by-blk.raw"
        try qemuImg(["convert", "-O", "raw", image, byQEMU])
        let converted = try blk("convert", "-O", "raw", image, byBlk)
        #expect(converted.status == 0, "\(converted)", sourceLocation: sourceLocation)
        #expect(FileManager.default.contentsEqual(atPath: byQEMU, andPath: byBlk), "\(image) reads differently", sourceLocation: sourceLocation)
    }

    func expectSameMap(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let byQEMU = try run("/usr/bin/qemu-img", ["map", "--output=json", image])
        let byBlk = try blk("map", "--output=json", image)
        #expect(byBlk.status == 0 && byBlk.stdout == byQEMU.stdout, "qemu-img:\n\(byQEMU.stdout)\nblk:\n\(byBlk)", sourceLocation: sourceLocation)
    }

    func expectQEMUCheckClean(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0, "\(checked)", sourceLocation: sourceLocation)
    }

    @Test("an image QEMU wrote: read, mapped, checked and described as QEMU does")
    func qemuImage() throws {
        let top = try overlay()
        try qemuIO(["-f", "qcow2"] + Self.qemuWrites.flatMap { ["-c", $0] } + [top])
        try expectSameContent(top)
        try expectSameMap(top)
        let checked = try blk("check", top)
        #expect(checked.status == 0, "\(checked)")
        let info = try blk("info", top)
        #expect(info.stdout.contains("    extended l2: true\n"), "\(info)")
        // Without a backing image, unallocated subclusters of an allocated cluster show its offset.
        let alone = scratch.directory + "/alone.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on", alone, "1M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 4k 2k", "-c", "write -z 100k 30k", alone])
        try expectSameContent(alone)
        try expectSameMap(alone)
    }

    @Test("an image blk made and wrote: QEMU reads it back and checks it clean", arguments: ["32k", "64k", "2M"])
    func blkImage(clusterSize: String) throws {
        let base = scratch.directory + "/base.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", base, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0xaa 0 4M", base])
        let top = scratch.directory + "/top.qcow2"
        let created = try blk("create", "-o", "extended_l2=on", "--cluster-size", clusterSize, "-b", "base.qcow2", "-F", "qcow2", top)
        #expect(created.status == 0 && created.stdout.contains("extended_l2=on"), "\(created)")
        let writes = ["write -P 0x11 4k 2k", "write -P 0x12 5k 1k", "write -P 0x22 70k 100k", "write -z 200k 8k", "write -z 213k 1k",
                      "write -P 0x33 1000k 3k", "write -z 1000k 1k", "write -P 0x44 2M 1M", "write -P 0x55 2100k 5k", "write -z 2M 64k",
                      "write -P 0x66 3999k 1k"]
        let wrote = try run(blkPath, ["io", top] + writes.flatMap { ["-c", $0] })
        #expect(wrote.status == 0, "\(wrote)")
        try expectQEMUCheckClean(top)
        let checked = try blk("check", top)
        #expect(checked.status == 0, "\(checked)")
        try expectSameContent(top)
        try expectSameMap(top)
        // The same writes by QEMU read the same.
        let byQEMU = scratch.directory + "/qemu-top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=\(clusterSize)", "-b", "base.qcow2", "-F", "qcow2", byQEMU])
        try qemuIO(["-f", "qcow2"] + writes.flatMap { ["-c", $0] } + [byQEMU])
        let compared = try run("/usr/bin/qemu-img", ["compare", top, byQEMU])
        #expect(compared.status == 0, "\(compared)")
    }

    @Test("a partial write into an unallocated cluster fills only the subclusters it touches")
    func partialWriteAllocatesSubclusters() throws {
        let top = try overlay()
        #expect(try blk("io", top, "-c", "write -P 0x11 5k 1k").status == 0)
        let map = try run("/usr/bin/qemu-img", ["map", "--output=json", top])
        // 64 KiB clusters: subclusters of 2 KiB; the write touches subcluster 2 only.
        #expect(map.stdout.contains("{ \"start\": 4096, \"length\": 2048, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"),
                "\(map)")
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0xaa 0 5k", "-c", "read -P 0x11 5k 1k", "-c", "read -P 0xaa 6k 2042k", top])
        try expectQEMUCheckClean(top)
    }

    @Test("QEMU's cluster size rule for extended L2 entries")
    func createRules() throws {
        let image = scratch.directory + "/small.qcow2"
        let refused = try blk("create", "-o", "extended_l2=on", "--cluster-size", "8k", image, "1M")
        let byQEMU = try run("/usr/bin/qemu-img", ["create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=8k", image, "1M"])
        #expect(refused.status == 64 && byQEMU.status == 1, "\(refused)")
        #expect(refused.stderr.contains("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"), "\(refused)")
        let made = try blk("create", "-o", "extended_l2=on", "--cluster-size", "16k", "--preallocation", "metadata", image, "3M")
        #expect(made.status == 0, "\(made)")
        try expectQEMUCheckClean(image)
        try expectSameMap(image)
    }

    /// Entry 0 of the overlay's L2 table after one QEMU write: where its bitmap word is.
    func damaged(_ bitmap: UInt64, entry: UInt64? = nil) throws -> String {
        let top = try overlay()
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 4k", top])
        let l1 = try Data(contentsOf: URL(fileURLWithPath: top))
        let l1Offset = Int(l1[40..<48].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        let l2Offset = Int(l1[l1Offset..<l1Offset + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } & 0x00ff_ffff_ffff_fe00)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: top))
        defer { try? handle.close() }
        if let entry {
            try handle.seek(toOffset: UInt64(l2Offset))
            try handle.write(contentsOf: Damage.be64(entry))
        }
        try handle.seek(toOffset: UInt64(l2Offset + 8))
        try handle.write(contentsOf: Damage.be64(bitmap))
        return top
    }

    @Test("damaged bitmaps: refused with 65, the image unchanged, reported by check as qemu-img does", arguments: [
        (UInt64(0x0000_0001_0000_0001), nil, "Allocated cluster has corrupted subcluster allocation bitmap"),
        (UInt64(0x0000_0000_0000_0003), UInt64(0), "Unallocated cluster has non-zero subcluster allocation map"),
    ] as [(UInt64, UInt64?, String)])
    func damagedBitmap(bitmap: UInt64, entry: UInt64?, finding: String) throws {
        let top = try damaged(bitmap, entry: entry)
        let before = try Data(contentsOf: URL(fileURLWithPath: top))
        let read = try blk("convert", "-O", "raw", top, scratch.directory + "/out.raw")
        #expect(read.status == 65 && read.stderr.contains("Invalid cluster entry found"), "\(read)")
        let mapped = try blk("map", top)
        #expect(mapped.status == 65, "\(mapped)")
        let checked = try blk("check", top)
        let byQEMU = try run("/usr/bin/qemu-img", ["check", top])
        #expect(checked.status == 2 && byQEMU.status == 2, "\(checked)\n\(byQEMU)")
        #expect(checked.stdout.contains(finding) || checked.stderr.contains(finding), "\(checked)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: top)) == before, "a read-only step changed the image")
        // A write meets the entry and marks the image corrupt, as QEMU's does.
        let wrote = try blk("io", top, "-c", "write 2k 1k")
        #expect(wrote.stderr.contains("Marking image as corrupt"), "\(wrote)")
    }

    @Test("a compressed cluster with a non-zero bitmap: reported by check as qemu-img does")
    func compressedWithBitmap() throws {
        let source = try scratch.qcow2Image("source.qcow2", size: "1M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x5a 0 1M", source])
        let image = scratch.directory + "/compressed.qcow2"
        try qemuImg(["convert", "-c", "-O", "qcow2", "-o", "extended_l2=on", source, image])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let l1Offset = Int(bytes[40..<48].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        let l2Offset = Int(bytes[l1Offset..<l1Offset + 8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } & 0x00ff_ffff_ffff_fe00)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.seek(toOffset: UInt64(l2Offset + 8))
        try handle.write(contentsOf: Damage.be64(1))
        try handle.close()
        let checked = try blk("check", image)
        let byQEMU = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 2 && byQEMU.status == 2, "\(checked)\n\(byQEMU)")
        #expect((checked.stdout + checked.stderr).contains("ERROR compressed cluster 0 with non-zero subcluster allocation bitmap"), "\(checked)")
    }

    @Test("crash states of partial writes check clean or with leaks only, and read as before or after")
    func crashStates() throws {
        let top = try overlay()
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 64k 4k", top])
        let base = try Data(contentsOf: URL(fileURLWithPath: top))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let writes = ["write -P 0x22 5k 1k", "flush", "write -P 0x33 66k 3k", "write -P 0x44 130k 70k", "write -z 300k 4k"]
        let wrote = try run(blkPath, ["io", "-f", "qcow2", "--record-writes", journal, top] + writes.flatMap { ["-c", $0] })
        #expect(wrote.status == 0, "\(wrote)")
        let states = CrashStates(base: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)))
        #expect(states.count >= 4, "\(states.count) states")
        let checked = states.sample(Soak.enabled ? states.count : 40)
        let probe = scratch.directory + "/crashed.qcow2"
        for (position, state) in checked.enumerated() {
            try states.image(state).write(to: URL(fileURLWithPath: probe))
            let blkCheck = try run(blkPath, ["check", "-f", "qcow2", probe])
            #expect(blkCheck.status == 0 || blkCheck.status == 3, "\(state.label): \(blkCheck)")
            // What no write touched reads as before in every state: the edges copied in included.
            let reads = ["read -P 0xaa 0 5k", "read -P 0xaa 6k 58k", "read -P 0x11 64k 2k", "read -P 0xaa 69k 61k", "read -P 0xaa 200k 100k"]
            let read = try run(blkPath, ["io", "-r", "-f", "qcow2", probe] + reads.flatMap { ["-c", $0] })
            #expect(read.status == 0 && !read.stdout.contains("failed"), "\(state.label): \(read)")
            if position.isMultiple(of: 10) || position == checked.count - 1 {
                let qemuCheck = try run("/usr/bin/qemu-img", ["check", "-f", "qcow2", probe])
                #expect(qemuCheck.status == 0 || qemuCheck.status == 3, "\(state.label): \(qemuCheck)")
            }
        }
        print("qcow2 extended L2: \(states.count) crash states, \(checked.count) checked")
    }
}
