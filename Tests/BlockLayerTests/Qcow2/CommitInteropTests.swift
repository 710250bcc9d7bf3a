// `blk commit` beside `qemu-img commit` on identical copies of a chain (CommitChains.swift): the
// bases they leave must compare identical, the overlays read the same and both check clean —
// into the backing image, into a base two levels down (-b), keeping the overlay (-d), into a raw
// base — and the errors are qemu-img's.
import Foundation
import Testing

@Suite("commit: beside qemu-img commit")
struct CommitInteropTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Runs `blk commit ARGUMENTS` on one copy of `chain` and `qemu-img commit ARGUMENTS` on
    /// another; returns both folders, after checking that both said "Image committed.".
    private func commitBoth(_ chain: CommitChain, _ arguments: [String]) throws -> (blk: String, qemu: String) {
        let blkFolder = scratch.directory + "/blk", qemuFolder = scratch.directory + "/qemu"
        try FileManager.default.createDirectory(atPath: blkFolder, withIntermediateDirectories: true)
        try chain.make(in: blkFolder)
        try chain.copy(from: blkFolder, to: qemuFolder)
        let ours = try run(blkPath, ["commit"] + arguments + [blkFolder + "/top.qcow2"])
        #expect(ours.status == 0 && ours.stdout == "Image committed.\n", "\(chain): \(ours)")
        let theirs = try run("/usr/bin/qemu-img", ["commit"] + arguments + [qemuFolder + "/top.qcow2"])
        #expect(theirs.status == 0 && theirs.stdout == "Image committed.\n", "\(chain): \(theirs)")
        return (blkFolder, qemuFolder)
    }

    private func compare(_ first: String, _ second: String, format: String = "qcow2") throws -> Finished {
        try run("/usr/bin/qemu-img", ["compare", "-f", format, "-F", format, first, second])
    }

    @Test("committing into the backing image leaves what qemu-img commit leaves", arguments: CommitChain.all)
    func intoBacking(chain: CommitChain) throws {
        let (blk, qemu) = try commitBoth(chain, [])
        #expect(try compare(blk + "/base", qemu + "/base", format: chain.baseFormat).status == 0, "\(chain)")
        #expect(try compare(blk + "/top.qcow2", qemu + "/top.qcow2").status == 0, "\(chain)")
        if chain.baseFormat == "qcow2" { try expectSound(blk + "/base", leaksAllowed: false, "\(chain)") }
        try expectSound(blk + "/top.qcow2", leaksAllowed: false, "\(chain)")
        // Emptied: nothing is the overlay's own any more.
        let map = try run("/usr/bin/qemu-img", ["map", "--output=json", blk + "/top.qcow2"])
        #expect(map.status == 0 && !map.stdout.contains("\"depth\": 0"), "\(chain): \(map)")
    }

    @Test("-b commits a three-image chain into its base and leaves the overlay as it was")
    func intoBaseFurtherDown() throws {
        let chain = CommitChain(name: "three images", middleWrites: ["write -P 0x44 128k 128k", "write -P 0x45 2M 1M"])
        let (blk, qemu) = try commitBoth(chain, ["-b", "base"])
        #expect(try compare(blk + "/base", qemu + "/base").status == 0)
        for image in chain.images { try expectSound(blk + "/" + image, leaksAllowed: false, "-b") }
        let map = try run("/usr/bin/qemu-img", ["map", "--output=json", blk + "/top.qcow2"])
        #expect(map.stdout.contains("\"depth\": 0"), "-b implies -d: \(map)")
        #expect(try compare(blk + "/top.qcow2", qemu + "/top.qcow2").status == 0)
    }

    @Test("-d keeps the overlay's clusters")
    func keepingTheOverlay() throws {
        let chain = CommitChain.all[0]
        let folder = scratch.directory + "/keep"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let top = try chain.make(in: folder)
        let before = try Data(contentsOf: URL(fileURLWithPath: top))
        let (blk, qemu) = try commitBoth(chain, ["-d"])
        #expect(try compare(blk + "/base", qemu + "/base").status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: blk + "/top.qcow2")) == before, "the overlay changed under -d")
        try expectSound(blk + "/base", leaksAllowed: false, "-d")
    }

    @Test("errors are qemu-img's: no backing file, a base not in the chain")
    func errors() throws {
        let lone = try scratch.qcow2Image("lone.qcow2", size: "1M")
        let noBacking = try run(blkPath, ["commit", lone])
        #expect(noBacking.status != 0 && noBacking.stderr.contains("Image does not have a backing file"), "\(noBacking)")
        let folder = scratch.directory + "/chain"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let top = try CommitChain.all[0].make(in: folder)
        let elsewhere = try run(blkPath, ["commit", "-b", lone, top])
        #expect(elsewhere.status == 66 && elsewhere.stderr.contains("Did not find '\(lone)' in the backing chain of '\(top)'"), "\(elsewhere)")
        let quiet = try run(blkPath, ["commit", "-q", "-d", top])
        #expect(quiet.status == 0 && quiet.stdout.isEmpty, "\(quiet)")
    }
}
