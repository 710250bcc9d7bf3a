// `blk create` for qcow2: images that the real qemu-img checks clean, QEMU writes into, and
// blk then reads — across cluster sizes and with backing files.
import Foundation
import Testing

@Suite("qcow2 images created by blk")
struct Qcow2CreateTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("qemu-img check finds them clean, QEMU writes into them, blk reads that back",
          arguments: [("512", "64M"), ("4k", "3G"), ("64k", "3G"), ("2M", "100G")])
    func checkedClean(clusterSize: String, size: String) throws {
        let image = scratch.directory + "/new.qcow2"
        let created = try blk("create", "--cluster-size", clusterSize, image, size)
        #expect(created.status == 0, "\(created)")
        let checked = try run("/usr/bin/qemu-img", ["check", image])
        #expect(checked.status == 0, "\(checked)")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x3c 48M 100k", image])
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        let read = try blk("io", "-r", image, "-c", "read -P 0x3c 48M 100k", "-c", "read -P 0 0 1M")
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
    }

    @Test("with a backing file: the size comes from it, the format is recorded, reads fall through")
    func withBacking() throws {
        let base = scratch.directory + "/base.qcow2"
        #expect(try blk("create", base, "16M").status == 0)
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x5e 0 1M", base])
        let overlay = scratch.directory + "/overlay.qcow2"
        let created = try blk("create", "-b", "base.qcow2", overlay)
        #expect(created.stdout == "Formatting '\(overlay)', fmt=qcow2 cluster_size=65536 extended_l2=off compression_type=zlib "
                + "size=16777216 backing_file=base.qcow2 backing_fmt=qcow2 lazy_refcounts=off refcount_bits=16\n")
        let info = try run("/usr/bin/qemu-img", ["info", "--output=json", overlay])
        #expect(info.stdout.contains("\"backing-filename\": \"base.qcow2\"") && info.stdout.contains("\"backing-filename-format\": \"qcow2\""), "\(info)")
        #expect(try run("/usr/bin/qemu-img", ["check", overlay]).status == 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x5e 0 1M", overlay])
        let read = try blk("io", "-r", overlay, "-c", "read -P 0x5e 0 1M", "-c", "read -P 0 1M 15M")
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
    }

    /// blk's options and qemu-img's -o for the same creation.
    struct Creation: Sendable, CustomTestStringConvertible {
        var format: String
        var clusterSize: String?
        var preallocation: String?
        var backing: Bool
        var succeeds = true
        var testDescription: String { "\(format) \(clusterSize ?? "") \(preallocation ?? "") \(backing ? "backed" : "")" }
    }

    @Test("the Formatting line is qemu-img's byte for byte, and refusals come after it as qemu-img's do", arguments: [
        Creation(format: "qcow2", backing: false), Creation(format: "qcow2", clusterSize: "4k", preallocation: "falloc", backing: false),
        Creation(format: "qcow2", clusterSize: "2M", backing: true), Creation(format: "qcow2", preallocation: "metadata", backing: true, succeeds: false),
        Creation(format: "raw", backing: false), Creation(format: "raw", preallocation: "full", backing: false),
        Creation(format: "raw", preallocation: "metadata", backing: false, succeeds: false),
    ])
    func formattingLine(_ creation: Creation) throws {
        let base = scratch.directory + "/base.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", base, "16M"])
        var ours = ["create", "-f", creation.format], qemuOptions: [String] = []
        if let clusterSize = creation.clusterSize {
            ours += ["--cluster-size", clusterSize]
            qemuOptions.append("cluster_size=\(clusterSize)")
        }
        if let preallocation = creation.preallocation {
            ours += ["--preallocation", preallocation]
            qemuOptions.append("preallocation=\(preallocation)")
        }
        let backing = creation.backing ? ["-b", "base.qcow2", "-F", "qcow2"] : []
        let image = scratch.directory + "/new." + creation.format
        let theirs = try run("/usr/bin/qemu-img", ["create", "-f", creation.format] + (qemuOptions.isEmpty ? [] : ["-o", qemuOptions.joined(separator: ",")])
                             + backing + [image, "32M"])
        unlink(image)
        let created = try run(blkPath, ours + backing + [image, "32M"])
        #expect(created.stdout == theirs.stdout, "\(created)")
        #expect((created.status == 0) == creation.succeeds && (theirs.status == 0) == creation.succeeds, "\(created) \(theirs)")
    }

    @Test("raw refuses a cluster size, as qemu-img refuses the option, and makes no file")
    func rawClusterSize() throws {
        let image = scratch.directory + "/new.raw"
        let refused = try blk("create", "-f", "raw", "--cluster-size", "4k", image, "1M")
        #expect(refused.status != 0 && refused.stderr.contains("Invalid parameter 'cluster_size'"), "\(refused)")
        #expect(access(image, F_OK) != 0)
    }

    @Test("creating over a qcow2 image QEMU has open is refused, and the image is left whole")
    func refusedWhileInUse() throws {
        let image = try scratch.qcow2Image(size: "8M")
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let writer = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? writer.finish() }
        let refused = try blk("create", image, "1M")
        #expect(refused.status == 75)
        #expect(refused.stderr.contains("Is another process using the image [\(image)]?\nheld by pid \(writer.pid) (qemu-io)"), "\(refused)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)
    }

    @Test("preallocation: the layout qemu-img makes (same file size), every cluster mapped, writes land in place",
          arguments: [("metadata", "4k", "2G"), ("metadata", "64k", "3G"), ("falloc", "64k", "256M"), ("full", "64k", "64M")])
    func preallocated(mode: String, clusterSize: String, size: String) throws {
        let ours = scratch.directory + "/ours.qcow2", theirs = scratch.directory + "/theirs.qcow2"
        let created = try blk("create", "--preallocation", mode, "--cluster-size", clusterSize, ours, size)
        #expect(created.status == 0, "\(created)")
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "preallocation=\(mode),cluster_size=\(clusterSize)", theirs, size])
        let fileSize = { (path: String) throws -> Int in (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
        #expect(try fileSize(ours) == fileSize(theirs))
        let checked = try run("/usr/bin/qemu-img", ["check", ours])
        #expect(checked.status == 0, "\(checked)")
        #expect(checked.stdout == (try run("/usr/bin/qemu-img", ["check", theirs]).stdout))
        let before = try fileSize(ours)
        #expect(try blk("io", ours, "-c", "write -P 0x21 1M 100k", "-c", "write -P 0x22 40M 1k").status == 0)
        #expect(try fileSize(ours) == before, "writes go to the preallocated clusters")
        #expect(try run("/usr/bin/qemu-img", ["check", ours]).status == 0)
        try qemuIO(["-f", "qcow2", "-r", "-c", "read -P 0 0 1M", "-c", "read -P 0x21 1M 100k", "-c", "read -P 0x22 40M 1k",
                    "-c", "read -P 0 41M 1M", ours])
    }

    @Test("preallocation refused where qemu-img refuses it: with a backing file, metadata for raw")
    func preallocationRefused() throws {
        let base = try scratch.qcow2Image("base.qcow2", size: "8M")
        let withBacking = try blk("create", "--preallocation", "metadata", "-b", base, scratch.directory + "/o.qcow2")
        #expect(withBacking.status == 64, "\(withBacking)")
        #expect(withBacking.stderr == "blk: Backing file and preallocation can only be used at the same time if extended_l2 is on\n")
        let raw = try blk("create", "-f", "raw", "--preallocation", "metadata", scratch.directory + "/r.raw", "1M")
        #expect(raw.status == 64 && raw.stderr == "blk: Unsupported preallocation mode: metadata\n", "\(raw)")
    }
}
