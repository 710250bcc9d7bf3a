// Persistent dirty bitmaps: blk keeps QEMU's bitmaps (qemu-img 7.2 makes, checks and reads them
// back), marks exactly the granules its writes touch — compared with QEMU's own view through a
// `qemu:dirty-bitmap` NBD export — and `blk bitmap` changes them as `qemu-img bitmap` does.
import Foundation
import Testing

@Suite("qcow2: persistent dirty bitmaps")
struct BitmapTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    static let qemuImg = "/usr/bin/qemu-img"

    /// A 16 MiB qcow2 image from qemu-img with bitmaps b1 (64 KiB), b2 (128 KiB, enabled) and
    /// off (64 KiB, disabled).
    func qemuImageWithBitmaps() throws -> String {
        let image = scratch.directory + "/bitmaps.qcow2"
        for arguments in [["create", "-f", "qcow2", image, "16M"], ["bitmap", "--add", image, "b1"],
                          ["bitmap", "--add", "-g", "128k", image, "b2"], ["bitmap", "--add", "--disable", image, "off"]] {
            let made = try run(Self.qemuImg, arguments)
            #expect(made.status == 0, "\(made)")
        }
        return image
    }

    /// The granules QEMU says `bitmap` marks: qemu-nbd exports it, and qemu-img map reports its
    /// dirty ranges as not data (QEMU's x-dirty-bitmap, as its iotests read bitmaps).
    func qemuDirtyGranules(_ image: String, _ bitmap: String, granularity: Int) throws -> Set<Int> {
        let socket = scratch.directory + "/nbd.sock"
        try? FileManager.default.removeItem(atPath: socket)
        let served = try run("/usr/bin/qemu-nbd", ["--fork", "-k", socket, "-B", bitmap, "-r", "-f", "qcow2", image])
        #expect(served.status == 0, "\(served)")
        let map = try run(Self.qemuImg, ["map", "--output=json", "--image-opts",
                                         "driver=nbd,server.type=unix,server.path=\(socket),x-dirty-bitmap=qemu:dirty-bitmap:\(bitmap)"])
        #expect(map.status == 0, "\(map)")
        return granules(ofRanges: try Self.ranges(map.stdout, where: { !($0["data"] as? Bool ?? true) }), granularity: granularity)
    }

    static func ranges(_ json: String, where keep: ([String: Any]) -> Bool) throws -> [Range<Int>] {
        let entries = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]] ?? []
        return entries.filter(keep).map { ($0["start"] as! Int)..<($0["start"] as! Int) + ($0["length"] as! Int) }
    }

    func granules(ofRanges ranges: [Range<Int>], granularity: Int) -> Set<Int> {
        Set(ranges.flatMap { $0.lowerBound / granularity...($0.upperBound - 1) / granularity })
    }

    /// Writes as blk io would: (offset, length) pairs.
    static let writes = [(0x1_0000, 4096), (0x5_0000, 0x3_0000), (0x7f_f000, 0x2000), (0xff_ffff, 1)]

    @Test("blk writes mark exactly the granules written, as QEMU reads them, and qemu-img checks clean")
    func marksWhatItWrites() throws {
        let image = try qemuImageWithBitmaps()
        let commands = Self.writes.map { "write -P 0x5a \($0.0) \($0.1)" }
        let wrote = try run(blkPath, ["io", "-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [image])
        #expect(wrote.status == 0, "\(wrote)")
        let check = try run(Self.qemuImg, ["check", image])
        #expect(check.status == 0, "\(check)")
        let info = try run(Self.qemuImg, ["info", "--output=json", image])
        #expect(!info.stdout.contains("in-use") && info.stdout.contains("\"b2\""), "\(info)")
        let written = Self.writes.map { $0.0..<$0.0 + $0.1 }
        for (name, granularity) in [("b1", 65536), ("b2", 131072)] {
            let expected = granules(ofRanges: written, granularity: granularity)
            #expect(try qemuDirtyGranules(image, name, granularity: granularity) == expected, "\(name)")
            let listed = try run(blkPath, ["map", "--bitmap", name, image])
            #expect(listed.status == 0, "\(listed)")
            #expect(granules(ofRanges: try Self.ranges(listed.stdout, where: { _ in true }), granularity: granularity) == expected, "\(listed)")
        }
        #expect(try qemuDirtyGranules(image, "off", granularity: 65536).isEmpty)
        let blkCheck = try run(blkPath, ["check", image])
        #expect(blkCheck.status == 0, "\(blkCheck)")
    }

    @Test("blk bitmap's operations, read and undone by qemu-img")
    func bitmapVerb() throws {
        let image = scratch.directory + "/verb.qcow2"
        #expect(try run(blkPath, ["create", "-f", "qcow2", image, "8M"]).status == 0)
        for arguments in [["--add", image, "a"], ["--add", "-g", "128k", image, "b"], ["--add", "--disable", image, "c"]] {
            let changed = try run(blkPath, ["bitmap"] + arguments)
            #expect(changed.status == 0, "\(changed)")
        }
        let info = try run(Self.qemuImg, ["info", "--output=json", image])
        let bitmaps = try Self.bitmapList(info.stdout)
        #expect(bitmaps.map(\.name) == ["a", "b", "c"], "\(info)")
        #expect(bitmaps.map(\.granularity) == [65536, 131072, 65536])
        #expect(bitmaps.map(\.flags) == [["auto"], ["auto"], []])
        #expect(try run(Self.qemuImg, ["check", image]).status == 0)
        // QEMU writes and marks; blk merges and lists.
        #expect(try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 1 1M 64k", image]).status == 0)
        let merged = try run(blkPath, ["bitmap", "--merge", "a", "--enable", image, "c"])
        #expect(merged.status == 0, "\(merged)")
        let listed = try run(blkPath, ["map", "--bitmap", "c", image])
        #expect(try Self.ranges(listed.stdout, where: { _ in true }) == [0x10_0000..<0x11_0000], "\(listed)")
        #expect(try qemuDirtyGranules(image, "c", granularity: 65536) == [16])
        // From another image (-b): qemu-img's bitmap merged into blk's.
        let other = scratch.directory + "/other.qcow2"
        #expect(try run(Self.qemuImg, ["create", "-f", "qcow2", other, "8M"]).status == 0)
        #expect(try run(Self.qemuImg, ["bitmap", "--add", other, "o"]).status == 0)
        #expect(try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write 3M 4k", other]).status == 0)
        let fromOther = try run(blkPath, ["bitmap", "--merge", "o", "-b", other, "-F", "qcow2", image, "b"])
        #expect(fromOther.status == 0, "\(fromOther)")
        #expect(try qemuDirtyGranules(image, "b", granularity: 131072) == [8, 24])
        for arguments in [["--clear", image, "a"], ["--remove", image, "c"], ["--disable", image, "b"]] {
            let changed = try run(blkPath, ["bitmap"] + arguments)
            #expect(changed.status == 0, "\(changed)")
            let check = try run(Self.qemuImg, ["check", image])
            #expect(check.status == 0, "\(arguments): \(check)")
        }
        let after = try Self.bitmapList(try run(Self.qemuImg, ["info", "--output=json", image]).stdout)
        #expect(after.map(\.name) == ["a", "b"] && after.map(\.flags) == [["auto"], []])
        #expect(try qemuDirtyGranules(image, "a", granularity: 65536).isEmpty)
        // Refusals, in qemu-img's words, and qemu-img removing what blk made.
        let again = try run(blkPath, ["bitmap", "--add", image, "a"])
        #expect(again.status != 0 && again.stderr.contains("Operation add on bitmap a failed: Bitmap already exists: a"), "\(again)")
        let missing = try run(blkPath, ["bitmap", "--remove", image, "zz"])
        #expect(missing.status == 66, "\(missing)")
        let none = try run(blkPath, ["bitmap", image, "a"])
        #expect(none.status == 64, "\(none)")
        for name in ["a", "b"] { #expect(try run(Self.qemuImg, ["bitmap", "--remove", image, name]).status == 0) }
        let final = try run(Self.qemuImg, ["check", image])
        #expect(final.status == 0, "\(final)")
    }

    @Test("blk commit marks the base's bitmap where it writes the overlay's data")
    func commitMarksTheBase() throws {
        let base = scratch.directory + "/base.qcow2", top = scratch.directory + "/top.qcow2"
        #expect(try run(Self.qemuImg, ["create", "-f", "qcow2", base, "8M"]).status == 0)
        #expect(try run(Self.qemuImg, ["bitmap", "--add", base, "b"]).status == 0)
        #expect(try run(Self.qemuImg, ["create", "-f", "qcow2", "-b", base, "-F", "qcow2", top]).status == 0)
        #expect(try run(blkPath, ["io", "-f", "qcow2", "-c", "write -P 3 2M 4k", "-c", "write -P 4 5M 128k", top]).status == 0)
        let committed = try run(blkPath, ["commit", top])
        #expect(committed.status == 0, "\(committed)")
        #expect(try qemuDirtyGranules(base, "b", granularity: 65536) == [32, 80, 81])
        #expect(try run(Self.qemuImg, ["check", base]).status == 0)
    }

    @Test("a bitmap added to an overlay moves its backing file name out of the way; every crash state keeps the chain",
          arguments: ["qemu-img", "blk"])
    func addToOverlay(creator: String) throws {
        let base = scratch.directory + "/base.qcow2", top = scratch.directory + "/top.qcow2"
        #expect(try run(Self.qemuImg, ["create", "-f", "qcow2", base, "8M"]).status == 0)
        #expect(try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 7 0 64k", base]).status == 0)
        // Both put the name right after the extensions, where the new extension must go.
        let made = try run(creator == "blk" ? blkPath : Self.qemuImg, ["create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top])
        #expect(made.status == 0, "\(made)")
        let original = try Data(contentsOf: URL(fileURLWithPath: top))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let added = try run(blkPath, ["bitmap", "--record-writes", journal, "--add", top, "b1"])
        #expect(added.status == 0, "\(added)")

        /// QEMU sees the same base through `image`, and one of `bitmaps`, consistent.
        func expectChain(_ image: String, bitmaps allowed: [[String]], _ label: String) throws {
            let info = try run(Self.qemuImg, ["info", "--output=json", image])
            let object = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any] ?? [:]
            #expect(object["backing-filename"] as? String == "base.qcow2" && object["backing-filename-format"] as? String == "qcow2",
                    "\(label): \(info)")
            let bitmaps = try Self.bitmapList(info.stdout)
            #expect(allowed.contains(bitmaps.map(\.name)) && bitmaps.allSatisfy { !$0.flags.contains("in-use") }, "\(label): \(bitmaps)")
            let read = try run("/usr/bin/qemu-io", ["-r", "-f", "qcow2", "-c", "read -P 7 0 64k", image])
            #expect(read.status == 0 && !read.stdout.contains("fail"), "\(label): \(read)")
        }
        try expectChain(top, bitmaps: [["b1"]], "after the add")
        try expectSound(top, leaksAllowed: false, "after the add")
        let probe = scratch.directory + "/crashed.qcow2"
        try CrashStates.check("bitmap add over a backing name, \(creator)", before: original,
                              journal: try Data(contentsOf: URL(fileURLWithPath: journal)), probe: probe, sample: 30) { state in
            try expectSound(probe, leaksAllowed: true, state.label)
            try expectChain(probe, bitmaps: [[], ["b1"]], state.label)
        }
    }

    static func bitmapList(_ json: String) throws -> [(name: String, granularity: Int, flags: [String])] {
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        let data = (object?["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        return (data?["bitmaps"] as? [[String: Any]] ?? []).map {
            ($0["name"] as! String, $0["granularity"] as! Int, $0["flags"] as! [String])
        }
    }

    @Test("blk info lists bitmaps as qemu-img does")
    func infoMatchesQemu() throws {
        let image = try qemuImageWithBitmaps()
        let ours = try run(blkPath, ["info", image])
        let theirs = try run(Self.qemuImg, ["info", image])
        let section = { (text: String) in text.components(separatedBy: "bitmaps:").dropFirst().first?.components(separatedBy: "refcount").first }
        #expect(ours.status == 0 && section(ours.stdout) != nil && section(ours.stdout) == section(theirs.stdout), "\(ours)\n\(theirs)")
    }
}
