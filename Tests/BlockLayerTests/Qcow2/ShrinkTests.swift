// `blk resize --shrink` and `blk amend -o size=` to a smaller size (Qcow2Shrink.swift): beside
// the same shrink made by qemu-img 7.2 (qemu-img compare finds them identical, before and after
// both grow back, so the cluster the end falls inside is kept as QEMU keeps it), images with
// snapshots, raw images, the refusals in qemu-img's words, and a hostile table past the end.
import Foundation
import Testing

/// A qcow2 image made and written by qemu-img and qemu-io: data, zeroes and a compressed cluster
/// before and past `newSize`, over several L2 tables.
struct ShrinkScenario: CustomStringConvertible, Sendable {
    var clusterSize: String
    var size: String
    var newSize: Int
    var writes: [String]
    var extendedL2 = false

    var description: String { "\(clusterSize) clusters\(extendedL2 ? ", extended L2" : ""), \(size) to \(newSize)" }

    static let all = [
        // 512-byte clusters: an L2 table covers 32 KiB, so most tables lie wholly past the end.
        ShrinkScenario(clusterSize: "512", size: "8M", newSize: (3 << 20) + 1024,
                       writes: ["write -P 0x11 0 1M", "write -P 0x22 3M 64k", "write -z 3200k 64k", "write -c -P 0x33 4M 512",
                                "write -P 0x44 6M 1M"]),
        // 64 KiB clusters: tables of 512 MiB; the new end inside the first, two more past it.
        ShrinkScenario(clusterSize: "64k", size: "2G", newSize: (300 << 20) + 4096,
                       writes: ["write -P 0x11 0 1M", "write -P 0x22 300M 256k", "write -z 301M 128k", "write -c -P 0x33 700M 64k",
                                "write -P 0x44 1536M 1M", "write -z 1900M 64k"]),
        ShrinkScenario(clusterSize: "32k", size: "64M", newSize: (20 << 20) + 512,
                       writes: ["write -P 0x11 0 1M", "write -P 0x22 20M 40k", "write -P 0x44 40M 1M"], extendedL2: true),
    ]

    func makeImage(_ path: String) throws {
        let options = "cluster_size=\(clusterSize)" + (extendedL2 ? ",extended_l2=on" : "")
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", options, path, size])
        try qemuIO(["-f", "qcow2"] + writes.flatMap { ["-c", $0] } + [path])
    }
}

/// The header's size field (bytes 24–31) as a file has it.
func qcow2VirtualSize(_ path: String) throws -> Int {
    let header = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(32)
    return header[24..<32].reduce(0) { $0 << 8 | Int($1) }
}

func fileSize(_ path: String) throws -> Int {
    try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
}

@Suite("blk resize --shrink")
struct ShrinkTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("blk's shrink and qemu-img's are identical, clean, and grow back the same", arguments: ShrinkScenario.all)
    func besideQemuImg(scenario: ShrinkScenario) throws {
        let image = scratch.directory + "/blk.qcow2", reference = scratch.directory + "/qemu.qcow2"
        try scenario.makeImage(image)
        try FileManager.default.copyItem(atPath: image, toPath: reference)
        let sizeBefore = try fileSize(image)
        let shrunk = try blk("resize", "--shrink", image, "\(scenario.newSize)")
        #expect(shrunk.status == 0 && shrunk.stdout == "Image resized.\n" && shrunk.stderr.isEmpty, "\(shrunk)")
        try qemuImg(["resize", "-q", "--shrink", reference, "\(scenario.newSize)"])
        #expect(try qcow2VirtualSize(image) == scenario.newSize)
        try expectSound(image, leaksAllowed: false, "\(scenario)")
        let compared = try run("/usr/bin/qemu-img", ["compare", "-s", image, reference])
        #expect(compared.status == 0, "\(scenario): \(compared)")
        #expect(try fileSize(image) < sizeBefore, "\(scenario): the file's tail is cut")
        print("shrink \(scenario): file \(sizeBefore) → blk \(try fileSize(image)), qemu-img \(try fileSize(reference)) bytes")
        // Grown back, the cluster the end fell inside reads as QEMU kept it; the rest as zeroes.
        #expect(try blk("resize", image, scenario.size).status == 0)
        try qemuImg(["resize", "-q", reference, scenario.size])
        let grown = try run("/usr/bin/qemu-img", ["compare", "-s", image, reference])
        #expect(grown.status == 0, "\(scenario), grown back: \(grown)")
        try expectSound(image, leaksAllowed: false, "\(scenario), grown back")
    }

    @Test("a version 3 image with snapshots from qemu-img: the snapshots keep their clusters")
    func withSnapshots() throws {
        let image = scratch.directory + "/snap.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", image, "16M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 2M", "-c", "write -P 0x22 6M 2M", "-c", "write -c -P 0x23 9M 4k",
                    "-c", "write -P 0x24 14M 1M", image])
        try qemuImg(["snapshot", "-c", "one", image])
        let atSnapshot = image + ".one.raw"
        try qemuImg(["convert", "-O", "raw", image, atSnapshot])
        // After the snapshot: some of its clusters overwritten (copies), some past the end new.
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x33 1M 64k", "-c", "write -P 0x34 7M 64k", "-c", "write -P 0x35 12M 1M", image])
        try qemuImg(["snapshot", "-c", "two", image])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x36 6M 8k", image])
        let reference = scratch.directory + "/snap-qemu.qcow2"
        try FileManager.default.copyItem(atPath: image, toPath: reference)

        let shrunk = try blk("resize", "--shrink", image, "-12M")
        #expect(shrunk.status == 0, "\(shrunk)")
        try qemuImg(["resize", "-q", "--shrink", reference, "-12M"])
        #expect(try qcow2VirtualSize(image) == 4 << 20)
        try expectSound(image, leaksAllowed: false, "shrunk with snapshots")
        #expect(try run("/usr/bin/qemu-img", ["compare", "-s", image, reference]).status == 0)
        // Each snapshot reads as qemu-img's shrink leaves it (convert -l reads the image's size of it).
        for name in ["one", "two"] {
            let mine = image + ".\(name).after", theirs = reference + ".\(name).after"
            try qemuImg(["convert", "-l", "snapshot.name=\(name)", "-O", "raw", image, mine])
            try qemuImg(["convert", "-l", "snapshot.name=\(name)", "-O", "raw", reference, theirs])
            #expect(try Data(contentsOf: URL(fileURLWithPath: mine)) == Data(contentsOf: URL(fileURLWithPath: theirs)), "snapshot \(name)")
        }
        // Applied (qemu-img resizes the image to the snapshot's size), a snapshot reads whole, past
        // the new end too: it kept its clusters. Deleting both leaves the image clean.
        try qemuImg(["snapshot", "-a", "one", image])
        #expect(try run("/usr/bin/qemu-img", ["compare", "-F", "raw", image, atSnapshot]).status == 0)
        try qemuImg(["snapshot", "-d", "one", image])
        try qemuImg(["snapshot", "-d", "two", image])
        try expectSound(image, leaksAllowed: false, "snapshots applied and deleted")
    }

    @Test("raw images shrink by ftruncate, to SIZE or by -SIZE without --")
    func raw() throws {
        let image = try scratch.rawImage(bytes: 3 << 20)
        let pattern = Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) })
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.write(contentsOf: pattern)
        try handle.close()
        let shrunk = try blk("resize", "--shrink", "-f", "raw", image, "-1M")
        #expect(shrunk.status == 0 && shrunk.stdout == "Image resized.\n", "\(shrunk)")
        #expect(try fileSize(image) == 2 << 20)
        #expect(try blk("resize", "-q", "--shrink", "-f", "raw", image, "1000").status == 0)
        #expect(try fileSize(image) == 1000)
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == pattern.prefix(1000))
    }

    @Test("refusals in qemu-img's words and order, the image untouched", arguments: [
        (["1M"], 64, "Use the --shrink option to perform a shrink operation.\nblk: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there."),
        (["--", "-1M"], 64, "Use the --shrink option to perform a shrink operation.\nblk: warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there."),
        (["--shrink", "-8M"], 64, "New image size must be positive"),
        (["-64M"], 64, "New image size must be positive"),
        (["--shrink", "1000"], 64, "The new size must be a multiple of 512"),
    ])
    func refusals(arguments: [String], status: Int32, message: String) throws {
        let image = try scratch.qcow2Image(size: "8M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 7 0 4M", image])
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let positional = arguments.firstIndex(of: "--").map { Array(arguments[..<$0]) + [image] + arguments[$0...] }
            ?? Array(arguments.dropLast()) + [image, arguments.last!]
        let refused = try run(blkPath, ["resize"] + positional)
        #expect(refused.status == status && refused.stderr == "blk: \(message)\n", "\(refused)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)
        let qemu = try run("/usr/bin/qemu-img", ["resize"] + positional.filter { $0 != "--" })
        let qemuWords = message.replacingOccurrences(of: "blk: warning:", with: "qemu-img: warning:")
        #expect(qemu.status == 1 && qemu.stderr == "qemu-img: \(qemuWords)\n", "\(qemu)")
    }

    @Test("a version 2 image with snapshots is refused (69), untouched")
    func unsupported() throws {
        let old = scratch.directory + "/v2.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", old, "8M"])
        try qemuImg(["snapshot", "-c", "s", old])
        let before = try Data(contentsOf: URL(fileURLWithPath: old))
        let refused = try blk("resize", "--shrink", old, "4M")
        #expect(refused.status == 69 && refused.stderr == "blk: Can't resize a v2 image which has snapshots\n", "\(refused)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: old)) == before)
        // qemu-img refuses the version 2 image in the same words; growing too.
        let qemu = try run("/usr/bin/qemu-img", ["resize", "--shrink", old, "4M"])
        #expect(qemu.status == 1 && qemu.stderr == "qemu-img: Can't resize a v2 image which has snapshots\n", "\(qemu)")
        #expect(try blk("resize", old, "16M").status == 69)
    }

    @Test("an external data file is cut to the new size, as QEMU cuts it; a raw one is refused (69)")
    func dataFile() throws {
        let mine = scratch.directory + "/mine.qcow2", theirs = scratch.directory + "/theirs.qcow2"
        for (image, data) in [(mine, mine + ".data"), (theirs, theirs + ".data")] {
            try qemuImg(["create", "-q", "-f", "qcow2", "-o", "data_file=\(data)", image, "8M"])
            try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 5M 2M", image])
        }
        let shrunk = try blk("resize", "--shrink", mine, "3M")
        #expect(shrunk.status == 0, "\(shrunk)")
        try qemuImg(["resize", "-q", "--shrink", theirs, "3M"])
        try expectSound(mine, leaksAllowed: false, "data file")
        #expect(try fileSize(mine + ".data") == 3 << 20)
        #expect(try run("/usr/bin/qemu-img", ["compare", "-s", mine, theirs]).status == 0)

        let raw = scratch.directory + "/raw.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "data_file=\(raw).data,data_file_raw=on", raw, "8M"])
        let refused = try blk("resize", "--shrink", raw, "3M")
        #expect(refused.status == 69, "\(refused)")
    }

    @Test("amend -o size= shrinks without --shrink, as qemu-img amend does")
    func amendShrinks() throws {
        let scenario = ShrinkScenario.all[0]
        let image = scratch.directory + "/amend.qcow2", reference = scratch.directory + "/amend-qemu.qcow2"
        try scenario.makeImage(image)
        try FileManager.default.copyItem(atPath: image, toPath: reference)
        let amended = try blk("amend", "-o", "size=\(scenario.newSize)", image)
        #expect(amended.status == 0 && amended.stdout.isEmpty && amended.stderr.isEmpty, "\(amended)")
        try qemuImg(["amend", "-o", "size=\(scenario.newSize)", reference])
        try expectSound(image, leaksAllowed: false, "amend size")
        #expect(try run("/usr/bin/qemu-img", ["compare", "-s", image, reference]).status == 0)
    }

    @Test("an L1 entry past the new end naming a table outside the file: corrupt (65), the size kept")
    func hostileTablePastTheEnd() throws {
        let image = try scratch.qcow2Image(size: "2G")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x77 0 64k", "-c", "write -P 0x78 1536M 64k", image])
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let l1 = 0x30000
        bytes.replaceSubrange(l1 + 16..<l1 + 24, with: Damage.be64(1 << 40 | 1 << 63))
        try bytes.write(to: URL(fileURLWithPath: image))
        let refused = try blk("resize", "--shrink", image, "1G")
        #expect(refused.status == 65, "\(refused)")
        #expect(refused.stderr.contains("L2 table offset 0x10000000000 is outside the image file"), "\(refused)")
        #expect(try qcow2VirtualSize(image) == 2 << 30, "nothing is shrunk past a table that cannot be read")
        let info = try run("/usr/bin/qemu-img", ["info", image])
        #expect(info.stdout.contains("virtual size: 2 GiB") && info.stdout.contains("corrupt: true"), "\(info)")
    }
}
