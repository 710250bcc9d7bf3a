// `blk check` beside `qemu-img check`: the same verdict (exit 0 clean, 2 corrupt, 3 leaks) on
// clean images of every kind and on images damaged here, and `-r leaks` repairs leaks so that
// qemu-img check then exits 0.
import Foundation
import Testing

/// Rewrites 16-bit refcounts of a qemu-img-made image (refcount block at 0x20000) and appends
/// clusters, to make leaks (refcount 1, no reference) and corruption (refcount 0, referenced).
func patchRefcounts(_ image: String, leakedClusters: Int, zeroRefcountOf corrupted: [Int] = []) throws {
    let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
    defer { try? handle.close() }
    let size = try handle.seekToEnd()
    let clusters = Int((size + 65535) / 65536)
    try handle.truncate(atOffset: UInt64((clusters + leakedClusters) * 65536))
    for index in 0..<leakedClusters {
        try handle.seek(toOffset: UInt64(0x20000 + (clusters + index) * 2))
        handle.write(Data([0, 1]))
    }
    for cluster in corrupted {
        try handle.seek(toOffset: UInt64(0x20000 + cluster * 2))
        handle.write(Data([0, 0]))
    }
}

@Suite("blk check beside qemu-img check")
struct Qcow2CheckTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func verdicts(_ image: String) throws -> (blk: Int32, qemu: Int32) {
        (try blk("check", image).status, try run("/usr/bin/qemu-img", ["check", image]).status)
    }

    @Test("clean images agree: written by QEMU, by blk, compressed, with snapshots, with a backing file")
    func cleanImages() throws {
        let qemuWritten = try scratch.qcow2Image("q.qcow2", size: "1G")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 3M", "-c", "write -z 1M 64k", "-c", "write -P 2 600M 64k", qemuWritten])
        let blkWritten = scratch.directory + "/b.qcow2"
        #expect(try blk("create", blkWritten, "1G").status == 0)
        #expect(try blk("io", blkWritten, "-c", "write -P 3 5000 200k", "-c", "write -P 4 700M 1k").status == 0)
        let compressed = scratch.directory + "/c.qcow2"
        try qemuImg(["convert", "-c", "-O", "qcow2", qemuWritten, compressed])
        let snapshotted = try scratch.qcow2Image("s.qcow2", size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 5 0 1M", snapshotted])
        try qemuImg(["snapshot", "-c", "first", snapshotted])
        try qemuIO(["-f", "qcow2", "-c", "write -P 6 512k 1M", snapshotted])
        try qemuImg(["snapshot", "-c", "second", snapshotted])
        let overlay = scratch.directory + "/o.qcow2"
        #expect(try blk("create", "-b", "q.qcow2", overlay).status == 0)
        #expect(try blk("io", overlay, "-c", "write -P 7 100k 1k").status == 0)
        for image in [qemuWritten, blkWritten, compressed, snapshotted, overlay] {
            let ours = try blk("check", image), theirs = try run("/usr/bin/qemu-img", ["check", image])
            #expect(ours.status == 0 && theirs.status == 0, "\(image): blk \(ours), qemu-img \(theirs)")
            // The same summary, down to the allocated, fragmented and compressed figures.
            #expect(ours.stdout == theirs.stdout)
        }
    }

    @Test("leaks: both exit 3; -r leaks repairs them and qemu-img check then exits 0")
    func leaks() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 128k", image])
        try patchRefcounts(image, leakedClusters: 2)
        #expect(try verdicts(image) == (3, 3))
        let found = try blk("check", image)
        #expect(found.stdout.contains("2 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data."))
        let repaired = try blk("check", "-r", "leaks", image)
        #expect(repaired.status == 0, "\(repaired)")
        #expect(repaired.stdout.contains("The following inconsistencies were found and repaired:\n\n    2 leaked clusters"))
        #expect(try verdicts(image) == (0, 0))
    }

    @Test("many leaks: the first 1000 listed and the rest counted; -r leaks repairs every one")
    func manyLeaks() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 128k", image])
        try patchRefcounts(image, leakedClusters: 1500)
        let ours = try blk("check", image), theirs = try run("/usr/bin/qemu-img", ["check", image])
        #expect(ours.status == 3 && theirs.status == 3)
        #expect(ours.stdout == theirs.stdout)
        #expect(ours.stderr.split(separator: "\n").filter { $0.hasPrefix("Leaked cluster ") }.count == 1000)
        #expect(ours.stderr.hasSuffix("\n... and 500 more leaked clusters (1500 in all)\n"), "\(ours.stderr.suffix(200))")
        let repaired = try blk("check", "-r", "leaks", image)
        #expect(repaired.status == 0, "\(repaired.stdout)")
        #expect(repaired.stdout.contains("The following inconsistencies were found and repaired:\n\n    1500 leaked clusters"))
        #expect(try verdicts(image) == (0, 0))
    }

    @Test("a referenced cluster with refcount 0: both exit 2, and -r leaks does not pretend to fix it")
    func corruption() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", image])
        try patchRefcounts(image, leakedClusters: 0, zeroRefcountOf: [3])
        #expect(try verdicts(image) == (2, 2))
        let found = try blk("check", "--json", image)
        #expect(found.stdout.contains("\"corruptions\" : 1"))
        #expect(try blk("check", "-r", "leaks", image).status == 2)
    }

    @Test("-r all raises refcounts that are too low, lowers leaked ones and sets COPIED right; qemu-img then agrees")
    func repairAll() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 128k", "-c", "write -P 2 1M 64k", image])
        // Cluster 4 is the L2 table (its L1 entry carries COPIED) and 5 a data cluster: refcount
        // 0. Cluster 2 (the refcount block) gets refcount 2 and one cluster is appended: leaks.
        try patchRefcounts(image, leakedClusters: 1, zeroRefcountOf: [4, 5])
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try handle.seek(toOffset: 0x20000 + 2 * 2)
        handle.write(Data([0, 2]))
        try handle.close()
        #expect(try verdicts(image) == (2, 2))
        let before = try blk("check", image)
        let qemuBefore = try run("/usr/bin/qemu-img", ["check", image])
        #expect(before.stdout == qemuBefore.stdout)
        #expect(before.stderr.contains("ERROR cluster 4 refcount=0 reference=1"))
        #expect(before.stderr.contains("ERROR OFLAG_COPIED data cluster: l2_entry=8000000000050000 refcount=0"))
        let leaksRepaired = try blk("check", "-r", "leaks", image)
        #expect(leaksRepaired.status == 2)
        #expect(leaksRepaired.stdout.hasPrefix("The following inconsistencies were found and repaired:\n\n    2 leaked clusters\n    0 corruptions\n"))

        let repaired = try blk("check", "-r", "all", image)
        #expect(repaired.status == 0, "\(repaired)")
        #expect(repaired.stdout.hasPrefix("The following inconsistencies were found and repaired:\n\n    0 leaked clusters\n    2 corruptions\n\n"
                                          + "Double checking the fixed image now...\nNo errors were found on the image."), "\(repaired)")
        #expect(try verdicts(image) == (0, 0))
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 1 0 128k", "-c", "read -P 2 1M 64k", image])
    }

    @Test("-r all clears the corrupt bit of an image it finds consistent, as qemu-img does")
    func corruptBitCleared() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", image])
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try handle.seek(toOffset: 79)
        handle.write(Data([2]))
        try handle.close()
        #expect(try blk("io", image, "-c", "write 0 512").status == 65)
        #expect(try blk("check", "-r", "all", image).status == 0)
        #expect(try run("/usr/bin/qemu-img", ["info", image]).stdout.contains("corrupt: false"))
        #expect(try blk("io", image, "-c", "write -P 3 0 512").status == 0)
        #expect(try verdicts(image) == (0, 0))
    }

    @Test("a dirty image (lazy refcounts, writer crashed): both checks see it alike; a blk write repairs it first")
    func dirtyImage() throws {
        let image = scratch.directory + "/lazy.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", image, "1G"])
        // qemu-io's abort leaves the refcounts it deferred unwritten and the dirty bit set.
        _ = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 4 0 1M", "-c", "write -P 5 600M 64k", "-c", "abort", image])
        let info = try blk("info", "--json", image)
        #expect(info.stdout.contains("\"dirty-flag\" : true"), "\(info)")
        let ours = try blk("check", image), theirs = try run("/usr/bin/qemu-img", ["check", image])
        #expect(ours.status == theirs.status && ours.stdout == theirs.stdout, "blk \(ours)\nqemu-img \(theirs)")
        #expect(try blk("io", image, "-c", "write -P 6 1M 4k").status == 0)
        #expect(try blk("info", "--json", image).stdout.contains("\"dirty-flag\" : false"))
        #expect(try verdicts(image) == (0, 0))
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 4 0 1M", "-c", "read -P 6 1M 4k", "-c", "read -P 5 600M 64k", image])
    }

    /// Replaces guest cluster 0's L2 entry with what `entry` makes of the file's length.
    func patchFirstL2Entry(_ image: String, _ entry: (_ fileLength: UInt64) -> UInt64) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        defer { try? handle.close() }
        func readBigEndian(at offset: UInt64) throws -> UInt64 {
            try handle.seek(toOffset: offset)
            return (try handle.read(upToCount: 8) ?? Data()).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        let l2 = try readBigEndian(at: try readBigEndian(at: 40)) & 0x00ff_ffff_ffff_fe00
        let fileLength = try handle.seekToEnd()
        try handle.seek(toOffset: l2)
        handle.write(withUnsafeBytes(of: entry(fileLength).bigEndian) { Data($0) })
    }

    @Test("an L2 entry a cluster or more past the end of the file: qemu-img's words and verdict, and less than a cluster is counted",
          arguments: ["data cluster far past the end", "compressed cluster partly past the end"])
    func pastTheEnd(damage: String) throws {
        let image = try scratch.qcow2Image("past.qcow2", size: "4M")
        if damage == "data cluster far past the end" {
            try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -P 2 64k 64k", image])
            try patchFirstL2Entry(image) { _ in 1 << 63 | 16 << 20 }
        } else {
            // Two sectors starting 256 bytes before the end: 512 bytes past it, in the cluster
            // after the file's last, which QEMU counts and compares too.
            try qemuIO(["-f", "qcow2", "-c", "write -c -P 1 0 64k", "-c", "write -P 2 64k 64k", image])
            try patchFirstL2Entry(image) { fileLength in 1 << 62 | 1 << 54 | (fileLength - 256) }
        }
        let ours = try blk("check", image), theirs = try run("/usr/bin/qemu-img", ["check", image])
        #expect(ours.status == 2 && ours.status == theirs.status, "\(ours)")
        #expect(ours.stdout == theirs.stdout)
        #expect(ours.stderr == theirs.stderr)
    }

    @Test("a raw image has nothing to check: exit 63, as qemu-img")
    func rawHasNothing() throws {
        let image = try scratch.rawImage()
        let result = try blk("check", image)
        #expect(result.status == 63)
        #expect(result.stderr == "blk: This image format does not support checks\n")
        #expect(try run("/usr/bin/qemu-img", ["check", "-f", "raw", image]).status == 63)
    }
}

@Suite("qcow2 writes interrupted by kill -9")
struct Qcow2KillTests {
    @Test("a writer killed at any point leaves at most leaks, never corruption", arguments: 0..<5)
    func killedWriter(round: Int) throws {
        let scratch = try Scratch()
        let image = scratch.directory + "/killed.qcow2"
        #expect(try blk("create", "--cluster-size", "4k", image, "256M").status == 0)
        // Scattered allocating writes: new L2 tables and refcount blocks keep being needed.
        let writes = (0..<400).flatMap { index in ["-c", "write -P \(index % 250 + 1) \((index * 7919 + round * 131) % 65000 * 4096) 6k"] }
        let writer = try LineProcess(blkPath, ["io", image] + writes)
        for _ in 0..<(20 + round * 37) { _ = try writer.nextLine() }
        writer.kill9()
        let qemu = try run("/usr/bin/qemu-img", ["check", image])
        #expect(qemu.status == 0 || qemu.status == 3, "round \(round): \(qemu)")
        #expect(try blk("check", image).status == qemu.status)
    }
}
