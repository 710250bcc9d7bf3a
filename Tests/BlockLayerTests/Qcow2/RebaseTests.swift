// `blk rebase` beside `qemu-img rebase` on identical copies: safe mode, -u, -b "", a chain of
// three; the results compare identical (qemu-img compare), check clean, and name the same
// backing file and format. Then the refusals: -F missing, names too long, names with control
// characters, raw images.
import Foundation
import Testing

/// A small chain in a scratch folder: an old base, a new base that differs from it in places
/// (data, zeroes, shorter), and an overlay on the old base with clusters of its own.
struct RebaseChain {
    let directory: String
    var oldBase: String { directory + "/old.qcow2" }
    var newBase: String { directory + "/new.qcow2" }
    var overlay: String { directory + "/overlay.qcow2" }

    init(_ scratch: Scratch, overlayCreatedBy creator: String = "qemu-img") throws {
        directory = scratch.directory
        try qemuImg(["create", "-q", "-f", "qcow2", oldBase, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 2 2M 512k", "-c", "write -P 3 3200k 64k", oldBase])
        // Shorter than the overlay: past 3M the new chain reads zeroes.
        try qemuImg(["create", "-q", "-f", "qcow2", newBase, "3M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 512k", "-c", "write -P 9 512k 512k", "-c", "write -P 4 1536k 64k",
                    "-c", "write -P 2 2M 128k", newBase])
        if creator == "blk" {
            #expect(try blk("create", "-f", "qcow2", "-b", "old.qcow2", "-F", "qcow2", overlay, "4M").status == 0)
        } else {
            try qemuImg(["create", "-q", "-f", "qcow2", "-b", "old.qcow2", "-F", "qcow2", overlay, "4M"])
        }
        try qemuIO(["-f", "qcow2", "-c", "write -P 5 576k 64k", "-c", "write -P 6 2100k 4k", overlay])
    }

    /// A copy of the overlay beside it.
    func copy(_ name: String) throws -> String {
        let path = directory + "/" + name
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: overlay, toPath: path)
        return path
    }
}

/// qemu-img info's backing file and its format, from its JSON.
func backingOf(_ image: String) throws -> (file: String?, format: String?) {
    let info = try run("/usr/bin/qemu-img", ["info", "-U", "--output=json", image])
    guard info.status == 0, let object = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any] else {
        throw TestFailure("qemu-img info \(image): \(info)")
    }
    return (object["backing-filename"] as? String, object["backing-filename-format"] as? String)
}

/// Whether qemu-img compare finds the two images' guest views identical.
func sameGuestView(_ first: String, _ second: String) throws -> Bool {
    try run("/usr/bin/qemu-img", ["compare", "-U", first, second]).status == 0
}

@Suite("blk rebase")
struct RebaseTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("the same result as qemu-img rebase", arguments: [
        (["-b", "new.qcow2", "-F", "qcow2"], "qemu-img"), (["-b", "new.qcow2", "-F", "qcow2"], "blk"),
        (["-u", "-b", "new.qcow2", "-F", "qcow2"], "qemu-img"), (["-u", "-b", "new.qcow2", "-F", "raw"], "blk"),
        (["-b", ""], "qemu-img"), (["-u", "-b", ""], "blk"),
    ])
    func likeQemuImg(options: [String], creator: String) throws {
        let chain = try RebaseChain(scratch, overlayCreatedBy: creator)
        let ours = try chain.copy("ours.qcow2"), theirs = try chain.copy("theirs.qcow2")
        let rebased = try run(blkPath, ["rebase"] + options + [ours])
        #expect(rebased.status == 0 && rebased.stdout.isEmpty && rebased.stderr.isEmpty, "\(rebased)")
        try qemuImg(["rebase"] + options + [theirs])
        #expect(try sameGuestView(ours, theirs))
        if !options.contains("-u") { #expect(try sameGuestView(ours, chain.overlay), "a safe rebase keeps what the guest reads") }
        #expect(try run("/usr/bin/qemu-img", ["check", ours]).status == 0)
        #expect(try run(blkPath, ["check", ours]).status == 0)
        let (ourBacking, theirBacking) = (try backingOf(ours), try backingOf(theirs))
        #expect(ourBacking.file == theirBacking.file && ourBacking.format == theirBacking.format, "\(ourBacking) vs \(theirBacking)")
    }

    @Test("a chain of three: onto the bottom image, and onto another chain")
    func chainOfThree() throws {
        let chain = try RebaseChain(scratch)
        let top = scratch.directory + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "overlay.qcow2", "-F", "qcow2", top, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 8 64k 64k", "-c", "write -P 7 3M 4k", top])
        for target in ["old.qcow2", "new.qcow2"] {
            for name in ["ours", "theirs"] {
                try? FileManager.default.removeItem(atPath: scratch.directory + "/\(name)-top.qcow2")
                try FileManager.default.copyItem(atPath: top, toPath: scratch.directory + "/\(name)-top.qcow2")
            }
            let ours = scratch.directory + "/ours-top.qcow2", theirs = scratch.directory + "/theirs-top.qcow2"
            let rebased = try run(blkPath, ["rebase", "-p", "-b", target, "-F", "qcow2", ours])
            #expect(rebased.status == 0, "\(rebased)")
            try qemuImg(["rebase", "-b", target, "-F", "qcow2", theirs])
            #expect(try sameGuestView(ours, theirs), "onto \(target)")
            #expect(try sameGuestView(ours, top), "onto \(target)")
            #expect(try run("/usr/bin/qemu-img", ["check", ours]).status == 0)
            #expect(try backingOf(ours).file == target)
        }
        _ = chain
    }

    @Test("-u needs no old backing file; the header can be rewritten again and again")
    func unsafeWithoutOldBase() throws {
        let chain = try RebaseChain(scratch)
        try FileManager.default.removeItem(atPath: chain.oldBase)
        for (name, format) in [("new.qcow2", "qcow2"), (String(repeating: "n", count: 600), "raw"), ("new.qcow2", "qcow2"),
                               (String(repeating: "m", count: 1023), "qcow2"), ("x", "raw")] {
            let rebased = try run(blkPath, ["rebase", "-u", "-b", name, "-F", format, chain.overlay])
            #expect(rebased.status == 0, "\(rebased)")
            let backing = try backingOf(chain.overlay)
            #expect(backing.file == name && backing.format == format)
            // qemu-img check opens the backing file: only where it exists.
            if name == "new.qcow2" { #expect(try run("/usr/bin/qemu-img", ["check", chain.overlay]).status == 0) }
        }
        // A standalone image gets a backing file (the extension is appended, then the name).
        #expect(try run(blkPath, ["rebase", "-u", "-b", "", chain.overlay]).status == 0)
        #expect(try backingOf(chain.overlay).file == nil)
        #expect(try run(blkPath, ["rebase", "-u", "-b", "new.qcow2", "-F", "qcow2", chain.overlay]).status == 0)
        let reattached = try backingOf(chain.overlay)
        #expect(reattached.file == "new.qcow2" && reattached.format == "qcow2")
        let fresh = scratch.directory + "/standalone.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", fresh, "4M"])
        #expect(try run(blkPath, ["rebase", "-u", "-b", "new.qcow2", "-F", "qcow2", fresh]).status == 0)
        let attached = try backingOf(fresh)
        #expect(attached.file == "new.qcow2" && attached.format == "qcow2")
        #expect(try run("/usr/bin/qemu-img", ["check", fresh]).status == 0)
    }

    @Test("refusals leave the image as it was, in qemu-img's words")
    func refusals() throws {
        let chain = try RebaseChain(scratch)
        let before = try Data(contentsOf: URL(fileURLWithPath: chain.overlay))
        let noFormat = try run(blkPath, ["rebase", "-b", "new.qcow2", chain.overlay])
        #expect(noFormat.status == 64)
        #expect(noFormat.stderr == "blk: Could not change the backing file to 'new.qcow2': backing format must be specified\n")
        let noBacking = try run(blkPath, ["rebase", chain.overlay])
        #expect(noBacking.status == 64 && noBacking.stderr.contains("Must specify backing file (-b) or use unsafe mode (-u)"), "\(noBacking)")
        let badFormat = try run(blkPath, ["rebase", "-u", "-b", "new.qcow2", "-F", "foo", chain.overlay])
        #expect(badFormat.status == 69 && badFormat.stderr == "blk: Invalid format name: 'foo'\n", "\(badFormat)")
        let long = String(repeating: "x", count: 1024)
        let tooLong = try run(blkPath, ["rebase", "-u", "-b", long, "-F", "raw", chain.overlay])
        #expect(tooLong.status == 64 && tooLong.stderr.contains("Could not change the backing file to '\(long)': Invalid argument"), "\(tooLong)")
        let hostile = "a\u{1b}[2Jb\tc"
        let missing = try run(blkPath, ["rebase", "-b", hostile, "-F", "qcow2", chain.overlay])
        #expect(missing.status == 66, "\(missing)")
        #expect(missing.stderr.hasPrefix("blk: Could not open new backing file 'a\\x1b[2Jb\\x09c'") && !missing.stderr.contains("\u{1b}"), "\(missing)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: chain.overlay)) == before)
        let raw = try scratch.rawImage()
        let notQcow2 = try run(blkPath, ["rebase", "-f", "raw", "-u", "-b", "new.qcow2", "-F", "qcow2", raw])
        #expect(notQcow2.status == 69 && notQcow2.stderr == "blk: Could not change the backing file to 'new.qcow2': Operation not supported\n", "\(notQcow2)")
    }

    @Test("a name with control characters is stored as given and shown escaped")
    func controlCharactersInName() throws {
        let chain = try RebaseChain(scratch)
        let hostile = "b\u{1b}]0;x\u{07}.raw"
        #expect(try run(blkPath, ["rebase", "-u", "-b", hostile, "-F", "raw", chain.overlay]).status == 0)
        #expect(try backingOf(chain.overlay).file == hostile)
        let info = try run(blkPath, ["info", "-U", chain.overlay])
        #expect(!info.stdout.contains("\u{1b}") && !info.stderr.contains("\u{1b}"), "\(info)")
    }
}
