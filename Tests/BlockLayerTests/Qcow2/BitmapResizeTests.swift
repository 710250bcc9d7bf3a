// Growing and shrinking a qcow2 image that has persistent dirty bitmaps (Qcow2BitmapResize.swift):
// the tables that must change do, QEMU then opens the image with every bitmap consistent (and, on
// a shrink, with the marks qemu-img's own shrink keeps), and a crash at any point leaves the old
// size or the new one with the bitmaps marking what they marked inside it — or, only where the
// bitmaps extension lies past sector 0 (as qemu-img writes it), the changing bitmaps in use, as
// QEMU leaves them after a crash.
import Foundation
import Testing

@Suite("qcow2: growing and shrinking an image with persistent bitmaps")
struct BitmapResizeTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    static let qemuImg = "/usr/bin/qemu-img"
    static let oldSize = 200 << 20, newSize = 300 << 20
    /// b1: 64 KiB granules, one table entry covers 32 GiB, so its table stays. b2 and off (512
    /// bytes, off disabled): an entry covers 256 MiB, so their tables grow from one entry to two.
    static let bitmaps = [("b1", 65536), ("b2", 512), ("off", 512)]

    /// A 200 MiB image made by `creator` (qemu-img puts the bitmaps extension after its feature
    /// name table, past sector 0; blk right after the header) with the bitmaps above and data
    /// blk wrote, so marked granules at both ends (a QEMU write would rewrite the header in
    /// QEMU's layout).
    func image(madeBy creator: String, size: Int = oldSize, writes: [String]? = nil) throws -> String {
        let image = scratch.directory + "/\(creator).qcow2"
        let tool = creator == "blk" ? blkPath : Self.qemuImg
        #expect(try run(tool, ["create", "-f", "qcow2", image, "\(size)"]).status == 0)
        for (name, granularity) in Self.bitmaps {
            let added = try run(tool, ["bitmap", "--add", "-g", "\(granularity)"] + (name == "off" ? ["--disable"] : []) + [image, name])
            #expect(added.status == 0, "\(added)")
        }
        let commands = writes ?? ["write -P 1 0 64k", "write -P 2 \(size - 4096) 4k"]
        let wrote = try run(blkPath, ["io", "-f", "qcow2"] + commands.flatMap { ["-c", $0] } + [image])
        #expect(wrote.status == 0, "\(wrote)")
        let layout = try #require(BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image))))
        #expect((layout.extensionData >= 512) == (creator == "qemu-img"), "\(creator): bitmaps extension data at \(layout.extensionData)")
        return image
    }

    func qemuInfo(_ image: String) throws -> (size: Int, bitmaps: [(name: String, granularity: Int, flags: [String])]) {
        let info = try run(Self.qemuImg, ["info", "-U", "--output=json", image])
        #expect(info.status == 0, "\(info)")
        let object = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any] ?? [:]
        return (object["virtual-size"] as? Int ?? -1, try BitmapTests.bitmapList(info.stdout))
    }

    @Test("blk resize grows the tables that must grow; QEMU opens the image consistent and marks the new space",
          arguments: ["qemu-img", "blk"])
    func growThenQemuWrites(creator: String) throws {
        let image = try image(madeBy: creator)
        let before = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image)))!
        let resized = try blk("resize", image, "\(Self.newSize)")
        #expect(resized.status == 0 && resized.stdout == "Image resized.\n", "\(resized)")
        #expect(try run(Self.qemuImg, ["check", image]).status == 0)
        let info = try qemuInfo(image)
        #expect(info.size == Self.newSize)
        #expect(info.bitmaps.map(\.name) == ["b1", "b2", "off"] && info.bitmaps.allSatisfy { !$0.flags.contains("in-use") }, "\(info)")
        let after = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image)))!
        #expect(after.entries.map(\.tableSize) == [1, 2, 2], "\(after.entries)")
        for (name, _) in Self.bitmaps { #expect(after.granules(of: name) == before.granules(of: name), "\(name)") }
        // QEMU loads every bitmap (it refuses to open an image whose consistent bitmap has a
        // table of the wrong size) and marks a write in the new space; so does blk.
        let qemuWrote = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 3 \(290 << 20) 4k", image])
        #expect(qemuWrote.status == 0, "\(qemuWrote)")
        let blkWrote = try blk("io", "-f", "qcow2", "-c", "write -P 4 \(295 << 20) 512", image)
        #expect(blkWrote.status == 0, "\(blkWrote)")
        let marked = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image)))!.granules(of: "b2")
        let expected = before.granules(of: "b2").union((290 << 20) / 512..<((290 << 20) + 4096) / 512).union([(295 << 20) / 512])
        #expect(marked == expected)
        #expect(try run(Self.qemuImg, ["check", image]).status == 0)
        #expect(!(try qemuInfo(image)).bitmaps.contains { $0.flags.contains("in-use") })
    }

    @Test("every crash state of a grow has the old size or the new one and bitmaps that mark what they marked",
          arguments: ["qemu-img", "blk"])
    func crashStatesOfGrowing(creator: String) throws {
        let image = try image(madeBy: creator)
        let inUse = try checkCrashStates("grow with bitmaps, \(creator)", of: image, resizedTo: Self.newSize, creator: creator)
        // Only a growing table is switched through the window; b1's already covers 300 MiB.
        #expect(!inUse.contains("b1"), "\(inUse)")
        if creator == "blk" { #expect(inUse.isEmpty) }
        #expect(try run(Self.qemuImg, ["check", image]).status == 0)
    }

    /// Records `blk amend -o size=SIZE` of `image` (made with `image(madeBy:)`, 200 or 300 MiB)
    /// and checks every crash state: sound with leaks at worst, 200 or 300 MiB, the three
    /// bitmaps, each either in use — only inside the two-sector switch of qemu-img's layout — or
    /// marking what it marked inside the state's size, with the table that size needs. Returns
    /// the names found in use.
    func checkCrashStates(_ name: String, of image: String, resizedTo size: Int, creator: String) throws -> Set<String> {
        let base = try Data(contentsOf: URL(fileURLWithPath: image))
        let before = BitmapLayout(base)!
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let resized = try blk("amend", "--record-writes", journal, "-o", "size=\(size)", image)
        #expect(resized.status == 0, "\(resized)")
        let probe = scratch.directory + "/crashed.qcow2"
        var inUse: Set<String> = []
        try CrashStates.check(name, before: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)),
                              probe: probe, sample: 30) { state in
            try expectSound(probe, leaksAllowed: true, state.label)
            let info = try qemuInfo(probe)
            #expect([Self.oldSize, Self.newSize].contains(info.size), "\(state.label): size \(info.size)")
            #expect(info.bitmaps.map(\.name) == ["b1", "b2", "off"], "\(state.label): \(info.bitmaps)")
            let layout = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: probe)))!
            for entry in layout.entries {
                if entry.flags & 1 != 0 {
                    #expect(creator == "qemu-img" && !state.isLast, "\(state.label): \(entry.name) in use")
                    inUse.insert(entry.name)
                } else {
                    #expect(layout.granules(of: entry.name) == kept(before.granules(of: entry.name), of: entry.name, size: info.size),
                            "\(state.label): \(entry.name)")
                    let needed = entry.name == "b1" || info.size == Self.oldSize ? 1 : 2
                    #expect(entry.tableSize == needed, "\(state.label): \(entry.name) has a table of \(entry.tableSize)")
                }
            }
        }
        return inUse
    }

    /// Writes into a 300 MiB image: at both ends of what a shrink to 200 MiB keeps, past that end
    /// in the data cluster b2 and off keep (their first entry covers 256 MiB), and in the one
    /// their second entry names.
    static let shrinkWrites = ["write -P 1 0 64k", "write -P 2 \((200 << 20) - 4096) 4k", "write -P 3 \(220 << 20) 4k",
                               "write -P 4 \(280 << 20) 4k"]

    /// The granules of `name` an image of `size` bytes keeps of `marks`.
    func kept(_ marks: Set<Int>, of name: String, size: Int) -> Set<Int> {
        let granularity = Self.bitmaps.first { $0.0 == name }!.1
        return marks.filter { $0 < (size + granularity - 1) / granularity }
    }

    @Test("blk resize --shrink shrinks the tables and clears the marks past the end, as qemu-img does; QEMU loads them",
          arguments: ["qemu-img", "blk"])
    func shrinkAsQemuDoes(creator: String) throws {
        let image = try image(madeBy: creator, size: Self.newSize, writes: Self.shrinkWrites)
        let theirs = scratch.directory + "/theirs.qcow2"
        try FileManager.default.copyItem(atPath: image, toPath: theirs)
        let before = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image)))!
        #expect(before.entries.map(\.tableSize) == [1, 2, 2], "\(before.entries)")
        let shrunk = try blk("resize", "--shrink", image, "\(Self.oldSize)")
        #expect(shrunk.status == 0 && shrunk.stdout == "Image resized.\n", "\(shrunk)")
        #expect(try run(Self.qemuImg, ["resize", "--shrink", theirs, "\(Self.oldSize)"]).status == 0)
        #expect(try run(Self.qemuImg, ["check", image]).status == 0)
        let info = try qemuInfo(image)
        #expect(info.size == Self.oldSize)
        #expect(info.bitmaps.map(\.name) == ["b1", "b2", "off"] && info.bitmaps.allSatisfy { !$0.flags.contains("in-use") }, "\(info)")
        let mine = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image)))!
        let qemus = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: theirs)))!
        #expect(mine.entries.map(\.tableSize) == [1, 1, 1], "\(mine.entries)")
        for (name, _) in Self.bitmaps {
            #expect(mine.granules(of: name) == kept(before.granules(of: name), of: name, size: Self.oldSize), "\(name)")
            #expect(mine.granules(of: name) == qemus.granules(of: name), "\(name) against qemu-img's shrink")
        }
        // QEMU loads every bitmap consistent and grows it back, the granules past the old end clean.
        #expect(try run(Self.qemuImg, ["resize", image, "\(Self.newSize)"]).status == 0)
        let regrown = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: image)))!
        for (name, _) in Self.bitmaps {
            #expect(regrown.granules(of: name) == kept(before.granules(of: name), of: name, size: Self.oldSize), "\(name) regrown")
        }
        #expect(try run(Self.qemuImg, ["check", image]).status == 0)
    }

    @Test("every crash state of a shrink has the old size or the new one and bitmaps that mark what they marked inside it",
          arguments: ["qemu-img", "blk"])
    func crashStatesOfShrinking(creator: String) throws {
        let image = try image(madeBy: creator, size: Self.newSize, writes: Self.shrinkWrites)
        let inUse = try checkCrashStates("shrink with bitmaps, \(creator)", of: image, resizedTo: Self.oldSize, creator: creator)
        // Every table changes here: b2's and off's lose an entry, b1's last cluster its marks past the end.
        #expect(creator == "blk" ? inUse.isEmpty : inUse == ["b1", "b2", "off"], "\(inUse)")
    }
}
