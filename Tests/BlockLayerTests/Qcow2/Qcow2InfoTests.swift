// `blk info` beside `qemu-img info` on images where the two once differed: version 2 images,
// backing files named relative to an image opened by a relative path, persistent bitmaps. The
// text must be qemu-img's line for line (blk adds only its "held by" lines) and the JSON the
// same object (blk adds only "holders").
import Foundation
import Testing

@Suite("blk info beside qemu-img info")
struct Qcow2InfoTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Both programs' info on `image`, run from `folder` so a relative path means the same to both.
    func infos(_ image: String, in folder: String? = nil) throws -> (blkText: String, qemuText: String, blkJSON: NSDictionary, qemuJSON: NSDictionary) {
        func inFolder(_ program: String, _ arguments: [String]) throws -> Finished {
            let result = try run("/bin/sh", ["-c", "cd \"$0\" && exec \"$@\"", folder ?? scratch.directory, program] + arguments)
            guard result.status == 0 else { throw TestFailure("\(program) \(arguments): \(result)") }
            return result
        }
        func object(_ text: String) throws -> NSMutableDictionary {
            guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { throw TestFailure("not JSON: \(text)") }
            return NSMutableDictionary(dictionary: object)
        }
        let blkText = try inFolder(blkPath, ["info", image]).stdout
        let qemuText = try inFolder("/usr/bin/qemu-img", ["info", image]).stdout
        let blkJSON = try object(try inFolder(blkPath, ["info", "--json", image]).stdout)
        #expect(blkJSON["holders"] as? [Any] != nil)
        blkJSON.removeObject(forKey: "holders")
        return (blkText.replacingOccurrences(of: "held by: no other process\n", with: ""), qemuText, blkJSON,
                try object(try inFolder("/usr/bin/qemu-img", ["info", "--output=json", image]).stdout))
    }

    @Test("a version 2 image shows no lazy refcounts, corrupt bit or extended L2, as qemu-img")
    func version2() throws {
        let image = scratch.directory + "/v2.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "compat=0.10", image, "16M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 7 0 1M", image])
        let info = try infos(image)
        #expect(info.blkText == info.qemuText)
        #expect(!info.blkText.contains("lazy refcounts") && info.blkText.contains("compat: 0.10"), "\(info.blkText)")
        #expect(info.blkJSON == info.qemuJSON, "\(info.blkJSON) against \(info.qemuJSON)")
    }

    @Test("the actual path of a relative backing name joins it to the image's path as given", arguments: [false, true])
    func fullBackingFilename(absoluteBacking: Bool) throws {
        try FileManager.default.createDirectory(atPath: scratch.directory + "/sub", withIntermediateDirectories: true)
        let base = scratch.directory + "/sub/base.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", base, "16M"])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", absoluteBacking ? base : "base.qcow2", "-F", "qcow2",
                     scratch.directory + "/sub/top.qcow2"])
        let info = try infos("sub/top.qcow2")
        #expect(info.blkText == info.qemuText)
        #expect(info.blkText.contains(absoluteBacking ? "backing file: \(base)\n" : "backing file: base.qcow2 (actual path: sub/base.qcow2)\n"),
                "\(info.blkText)")
        #expect(info.blkJSON["full-backing-filename"] as? String == (absoluteBacking ? base : "sub/base.qcow2"))
        #expect(info.blkJSON == info.qemuJSON, "\(info.blkJSON) against \(info.qemuJSON)")
    }

    @Test("persistent bitmaps are listed as qemu-img lists them, before and after a write of blk's")
    func bitmaps() throws {
        let image = try scratch.qcow2Image("bitmaps.qcow2", size: "16M")
        try qemuImg(["bitmap", "--add", image, "first"])
        try qemuImg(["bitmap", "--add", "-g", "128k", "--disable", image, "second"])
        try setInUse(image)
        let listed = try infos(image)
        #expect(listed.blkText.contains("                [0]: in-use\n                [1]: auto\n            name: first\n"), "\(listed.blkText)")
        #expect(listed.blkText == listed.qemuText)
        #expect(listed.blkJSON == listed.qemuJSON, "\(listed.blkJSON) against \(listed.qemuJSON)")

        // blk keeps the bitmaps up to date, so its write leaves the bit that vouches for them.
        #expect(try blk("io", "-f", "qcow2", image, "-c", "write -P 1 0 64k").status == 0)
        let kept = try infos(image)
        #expect(kept.blkText.contains("bitmaps:"), "\(kept.blkText)")
        #expect(kept.blkText == kept.qemuText)
        #expect(kept.blkJSON == kept.qemuJSON, "\(kept.blkJSON) against \(kept.qemuJSON)")
    }

    /// Sets the in-use flag of the first bitmap, as a QEMU that died with it loaded leaves it.
    private func setInUse(_ image: String) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        defer { try? handle.close() }
        let header = try handle.read(upToCount: 65536) ?? Data()
        func be<T: FixedWidthInteger>(_: T.Type, _ offset: Int) -> T {
            header[offset..<offset + MemoryLayout<T>.size].reduce(T(0)) { $0 << 8 | T($1) }
        }
        var offset = Int(be(UInt32.self, 100))
        while be(UInt32.self, offset) != 0x2385_2875 {
            guard be(UInt32.self, offset) != 0 else { throw TestFailure("no bitmaps extension") }
            offset += 8 + (Int(be(UInt32.self, offset + 4)) + 7) / 8 * 8
        }
        let directory = be(UInt64.self, offset + 24)
        try handle.seek(toOffset: directory + 12)
        let flags = try handle.read(upToCount: 4) ?? Data()
        try handle.seek(toOffset: directory + 12)
        handle.write(Data([flags[0], flags[1], flags[2], flags[3] | 1]))
    }
}
