// Persistent dirty bitmaps under failure: crash states of writes into an image with two enabled
// bitmaps (each changed granule marked in both, in every state, and QEMU finds the bitmaps
// consistent), hostile bitmap directories and tables (refused with 65, the image unchanged),
// and `blk bitmap` with injected write errors (the image as before, leaks at worst).
// BLK_SOAK=1 checks every crash state instead of a sample of 40.
import Foundation
import Testing

@Suite("qcow2: persistent dirty bitmaps under failure")
struct BitmapCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    static let qemuImg = "/usr/bin/qemu-img"

    func qemu(_ arguments: [String]) throws {
        let done = try run(Self.qemuImg, arguments)
        #expect(done.status == 0, "\(arguments): \(done)")
    }

    /// 4 MiB from qemu-img: b1 (64 KiB granules) with data QEMU marked, then b2 (4 KiB), empty.
    func imageWithTwoBitmaps() throws -> String {
        let image = scratch.directory + "/two.qcow2"
        try qemu(["create", "-f", "qcow2", image, "4M"])
        try qemu(["bitmap", "--add", image, "b1"])
        let wrote = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P 7 0 100k", image])
        #expect(wrote.status == 0, "\(wrote)")
        try qemu(["bitmap", "--add", "-g", "4k", image, "b2"])
        return image
    }

    func raw(_ image: String) throws -> Data {
        let output = image + ".raw"
        try qemu(["convert", "-U", "-f", "qcow2", "-O", "raw", image, output])
        return try Data(contentsOf: URL(fileURLWithPath: output))
    }

    @Test("every crash state marks each changed granule in both bitmaps, and QEMU finds them consistent")
    func crashStatesOfMarking() throws {
        let image = try imageWithTwoBitmaps()
        let before = try raw(image)
        let base = try Data(contentsOf: URL(fileURLWithPath: image))
        let journal = scratch.directory + "/journal"
        try scratch.write(journal, Data())
        let commands = ["write -P 1 0x20000 0x3000", "write -P 2 0x1ff000 0x4000", "write -P 3 0x10000 0x1000", "write -z 0x300000 0x10000",
                        "write -P 4 0x3ff000 0x1000"]
        let wrote = try run(blkPath, ["io", "-f", "qcow2", "--record-writes", journal] + commands.flatMap { ["-c", $0] } + [image])
        #expect(wrote.status == 0, "\(wrote)")
        let states = CrashStates(base: base, journal: try Data(contentsOf: URL(fileURLWithPath: journal)))
        let checked = states.sample(Soak.enabled ? states.count : 40)
        let probe = scratch.directory + "/crashed.qcow2"
        for (position, state) in checked.enumerated() {
            let bytes = states.image(state)
            try bytes.write(to: URL(fileURLWithPath: probe))
            let blkCheck = try run(blkPath, ["check", "-f", "qcow2", probe])
            #expect(blkCheck.status == 0 || blkCheck.status == 3, "\(state.label): \(blkCheck)")
            guard let layout = BitmapLayout(bytes) else {
                Issue.record("\(state.label): no bitmaps")
                continue
            }
            let b1 = layout.granules(of: "b1"), b2 = layout.granules(of: "b2")
            let after = try raw(probe)
            for granule in stride(from: 0, to: before.count, by: 4096)
                where before[granule..<granule + 4096] != after[granule..<granule + 4096] {
                #expect(b1.contains(granule / 65536) && b2.contains(granule / 4096), "\(state.label): granule at \(granule) unmarked")
            }
            if position.isMultiple(of: 10) || position == checked.count - 1 {
                let qemuCheck = try run(Self.qemuImg, ["check", "-f", "qcow2", probe])
                #expect(qemuCheck.status == 0 || qemuCheck.status == 3, "\(state.label): \(qemuCheck)")
                let info = try run(Self.qemuImg, ["info", "--output=json", probe])
                #expect(info.stdout.contains("\"b1\"") && info.stdout.contains("\"b2\"") && !info.stdout.contains("in-use"),
                        "\(state.label): \(info)")
            }
        }
        print("qcow2 bitmaps: \(states.count) crash states, \(checked.count) checked")
    }

    /// One way to damage the bitmaps of a fresh qemu-img image with bitmap b1 (from its layout).
    struct BitmapDamage: Sendable, CustomTestStringConvertible {
        var name: String
        var patch: @Sendable (BitmapLayout) -> (offset: Int, bytes: [UInt8])
        var testDescription: String { name }
    }

    static let damages: [BitmapDamage] = [
        .init(name: "extension reserved field") { ($0.extensionData + 4, Damage.be32(1)) },
        .init(name: "zero bitmaps") { ($0.extensionData, Damage.be32(0)) },
        .init(name: "more bitmaps than entries") { ($0.extensionData, Damage.be32(2)) },
        .init(name: "directory too large") { ($0.extensionData + 8, Damage.be64(1 << 40)) },
        .init(name: "directory unaligned") { ($0.extensionData + 16, Damage.be64(UInt64($0.directoryOffset + 8))) },
        .init(name: "directory past the end") { ($0.extensionData + 16, Damage.be64(1 << 40)) },
        .init(name: "directory at 0") { ($0.extensionData + 16, Damage.be64(0)) },
        .init(name: "entry type 2") { ($0.entries[0].entryOffset + 16, [2]) },
        .init(name: "granularity 8 bits") { ($0.entries[0].entryOffset + 17, [8]) },
        .init(name: "granularity 32 bits") { ($0.entries[0].entryOffset + 17, [32]) },
        .init(name: "name of 0 bytes") { ($0.entries[0].entryOffset + 18, [0, 0]) },
        .init(name: "name past the directory") { ($0.entries[0].entryOffset + 18, [0x03, 0xff]) },
        .init(name: "extra data") { ($0.entries[0].entryOffset + 20, Damage.be32(8)) },
        .init(name: "reserved flag") { ($0.entries[0].entryOffset + 12, Damage.be32(0x12)) },
        .init(name: "table of 0 entries") { ($0.entries[0].entryOffset + 8, Damage.be32(0)) },
        .init(name: "table larger than the image needs") { ($0.entries[0].entryOffset + 8, Damage.be32(2)) },
        .init(name: "table over QEMU's limit") { ($0.entries[0].entryOffset + 8, Damage.be32(0x800_0001)) },
        .init(name: "table unaligned") { ($0.entries[0].entryOffset, Damage.be64(UInt64($0.entries[0].tableOffset + 512))) },
        .init(name: "table past the end") { ($0.entries[0].entryOffset, Damage.be64(1 << 40)) },
        .init(name: "table at 0") { ($0.entries[0].entryOffset, Damage.be64(0)) },
        .init(name: "table entry reserved bits") { ($0.entries[0].tableOffset, Damage.be64(0x2)) },
        .init(name: "table entry unaligned") { ($0.entries[0].tableOffset, Damage.be64(0x1_0200)) },
        .init(name: "table entry past the end") { ($0.entries[0].tableOffset, Damage.be64(1 << 40)) },
        .init(name: "table entry all ones with an offset") { ($0.entries[0].tableOffset, Damage.be64(0x1_0001)) },
    ]

    @Test("a malformed bitmap directory or table is refused with 65, the image unchanged", arguments: damages)
    func hostileBitmaps(damage: BitmapDamage) throws {
        let image = scratch.directory + "/hostile.qcow2"
        try qemu(["create", "-f", "qcow2", image, "4M"])
        try qemu(["bitmap", "--add", image, "b1"])
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        let layout = try #require(BitmapLayout(bytes))
        let patch = damage.patch(layout)
        bytes.replaceSubrange(patch.offset..<patch.offset + patch.bytes.count, with: patch.bytes)
        try bytes.write(to: URL(fileURLWithPath: image))
        // blk io reports a failed write as qemu-io does (exit 1); the cause is the same 65.
        let written = try run(blkPath, ["io", "-f", "qcow2", "-c", "write 0 4k", image])
        #expect(written.status == 1 && written.stderr.contains("qcow2: "), "\(damage.name): \(written)")
        for arguments in [["bitmap", "--add", image, "new"], ["map", "--bitmap", "b1", image]] {
            let refused = try run(blkPath, arguments)
            #expect(refused.status == 65, "\(damage.name), \(arguments[0]): \(refused)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == bytes, "\(damage.name): the image changed")
    }

    @Test("blk bitmap with a write or flush failing leaves the bitmaps as they were, leaks at worst")
    func injectedFaults() throws {
        let template = scratch.directory + "/template.qcow2", image = scratch.directory + "/faults.qcow2"
        try qemu(["create", "-f", "qcow2", template, "4M"])
        try qemu(["bitmap", "--add", template, "b1"])
        try qemu(["bitmap", "--add", template, "b2"])
        #expect(try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write 0 64k", template]).status == 0)
        let original = try Data(contentsOf: URL(fileURLWithPath: template))
        var failures = 0
        for rule in (1...4).map({ "write@bitmap_update:\($0)" }) + (1...3).map({ "flush@bitmap_update:\($0)" }) {
            for operation in [["--add", "--merge", "b1"], ["--remove"], ["--clear"]] {
                try original.write(to: URL(fileURLWithPath: image))
                let target = operation.first == "--add" ? "new" : "b2"
                let changed = try run(blkPath, ["bitmap", "--inject-fault", rule] + operation + [image, target])
                if changed.status == 0 { continue }
                failures += 1
                #expect(changed.status == 74, "\(rule) \(operation): \(changed)")
                let check = try run(Self.qemuImg, ["check", image])
                #expect(check.status == 0 || check.status == 3, "\(rule) \(operation): \(check)")
                let info = try run(Self.qemuImg, ["info", "--output=json", image])
                let names = try BitmapTests.bitmapList(info.stdout).map(\.name)
                let after = operation.first == "--add" ? ["b1", "b2", "new"] : operation == ["--remove"] ? ["b1"] : ["b1", "b2"]
                #expect(names == ["b1", "b2"] || names == after, "\(rule) \(operation): \(names)")
                #expect(!info.stdout.contains("in-use"), "\(rule) \(operation): \(info)")
            }
        }
        #expect(failures >= 15, "\(failures) operations failed")
    }
}
