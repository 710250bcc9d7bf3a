// Growing a qcow2 image that has persistent dirty bitmaps (Qcow2BitmapResize.swift): the tables
// that must grow do, QEMU then opens the image with every bitmap consistent and marks the new
// space, and a crash at any point leaves the old size or the new one with the bitmaps marking
// what they marked — or, only where the bitmaps extension lies past sector 0 (as qemu-img
// writes it), the growing bitmaps in use, as QEMU leaves them after a crash.
import Foundation
import Testing

@Suite("qcow2: growing an image with persistent bitmaps")
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
    func image(madeBy creator: String) throws -> String {
        let image = scratch.directory + "/\(creator).qcow2"
        let tool = creator == "blk" ? blkPath : Self.qemuImg
        #expect(try run(tool, ["create", "-f", "qcow2", image, "\(Self.oldSize)"]).status == 0)
        for (name, granularity) in Self.bitmaps {
            let added = try run(tool, ["bitmap", "--add", "-g", "\(granularity)"] + (name == "off" ? ["--disable"] : []) + [image, name])
            #expect(added.status == 0, "\(added)")
        }
        let wrote = try blk("io", "-f", "qcow2", "-c", "write -P 1 0 64k", "-c", "write -P 2 \(Self.oldSize - 4096) 4k", image)
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
        let base = try Data(contentsOf: URL(fileURLWithPath: image))
        let before = BitmapLayout(base)!
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let grown = try blk("amend", "--record-writes", journal, "-o", "size=\(Self.newSize)", image)
        #expect(grown.status == 0, "\(grown)")
        let probe = scratch.directory + "/crashed.qcow2"
        var inUseStates = 0
        try CrashStates.check("grow with bitmaps, \(creator)", before: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)),
                              probe: probe, sample: 30) { state in
            try expectSound(probe, leaksAllowed: true, state.label)
            let info = try qemuInfo(probe)
            #expect([Self.oldSize, Self.newSize].contains(info.size), "\(state.label): size \(info.size)")
            #expect(info.bitmaps.map(\.name) == ["b1", "b2", "off"], "\(state.label): \(info.bitmaps)")
            let layout = BitmapLayout(try Data(contentsOf: URL(fileURLWithPath: probe)))!
            for entry in layout.entries {
                if entry.flags & 1 != 0 {
                    // Only the window of the two-sector switch, and only for a growing table.
                    #expect(creator == "qemu-img" && entry.name != "b1" && !state.isLast, "\(state.label): \(entry.name) in use")
                    inUseStates += 1
                } else {
                    #expect(layout.granules(of: entry.name) == before.granules(of: entry.name), "\(state.label): \(entry.name)")
                    let needed = entry.name == "b1" ? 1 : info.size == Self.newSize ? 2 : 1
                    #expect(entry.tableSize == needed, "\(state.label): \(entry.name) has a table of \(entry.tableSize)")
                }
            }
        }
        if creator == "blk" { #expect(inUseStates == 0) }
    }
}
