// Internal snapshots made by `qemu-img snapshot -c` under blk's writes: every snapshot reads
// exactly as before (compared by qemu-img itself), the active image reads what blk wrote, and
// both checks find the image clean — so shared clusters and shared L2 tables were copied, never
// changed in place, and refcounts and COPIED flags were kept right.
import Foundation
import Testing

@Suite("qcow2 snapshots under blk writes")
struct Qcow2SnapshotTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// Each snapshot of `image`, copied out by qemu-img into its own image named after `tag`.
    func exportSnapshots(_ image: String, _ names: [String], tag: String) throws -> [String] {
        try names.map { name in
            let copy = scratch.directory + "/\(name)-\(tag).qcow2"
            try qemuImg(["convert", "-l", "snapshot.name=\(name)", "-O", "qcow2", image, copy])
            return copy
        }
    }

    @Test("snapshots stay intact while blk writes whole, partial, straddling and zero clusters over them")
    func copyOnWrite() throws {
        let image = try scratch.qcow2Image(size: "4G")
        try qemuIO(["-f", "qcow2"] + Qcow2ReadTests.writes.flatMap { ["-c", $0] } + [image])
        try qemuImg(["snapshot", "-c", "first", image])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x66 2M 1M", image])
        try qemuImg(["snapshot", "-c", "second", image])
        let before = try exportSnapshots(image, ["first", "second"], tag: "before")

        let wrote = try blk("io", image,
                            "-c", "write -P 0x77 1500 100",            // inside a shared cluster
                            "-c", "write -P 0x78 512M 64k",            // a whole shared cluster, second L2 table
                            "-c", "write -P 0x79 536838144 65536",     // straddles the L2-table boundary at 512 MiB
                            "-c", "write -z 2M 64k",                   // zeroes over shared data
                            "-c", "write -P 0x7a 3G 8k",               // where no table was
                            "-c", "write -P 0x7b 1500 10")             // the copy, now this image's own
        #expect(wrote.status == 0, "\(wrote)")

        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        #expect(try blk("check", image).status == 0)
        let after = try exportSnapshots(image, ["first", "second"], tag: "after")
        for (old, new) in zip(before, after) {
            let compared = try run("/usr/bin/qemu-img", ["compare", old, new])
            #expect(compared.status == 0, "\(compared)")
        }
        try qemuIO(["-f", "qcow2", "-r",
                    "-c", "read -P 0x11 1000 500", "-c", "read -P 0x7b 1500 10", "-c", "read -P 0x77 1510 90",
                    "-c", "read -P 0x11 1600 2400", "-c", "read -P 0x33 535822336 1015808",
                    "-c", "read -P 0x79 536838144 65536", "-c", "read -P 0x78 536903680 32768",
                    "-c", "read -P 0x33 536936448 983040", "-c", "read -P 0 2M 64k", "-c", "read -P 0x66 2162688 983040",
                    "-c", "read -P 0x7a 3G 8k", "-c", "read -P 0x55 4095M 1M", image])
    }

    @Test("blk info lists snapshots as qemu-img info does, in text and JSON")
    func listed() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 1M", image])
        try qemuImg(["snapshot", "-c", "snap1", image])
        try qemuImg(["snapshot", "-c", "second one", image])
        let ours = try blk("info", image).stdout, theirs = try run("/usr/bin/qemu-img", ["info", image]).stdout
        func snapshotList(_ text: String) -> [Substring] {
            let lines = text.split(separator: "\n")
            guard let start = lines.firstIndex(of: "Snapshot list:") else { return [] }
            return Array(lines[start...].prefix(4))
        }
        #expect(snapshotList(ours).count == 4)
        #expect(snapshotList(ours) == snapshotList(theirs))
        let json = try JSONSerialization.jsonObject(with: Data(try blk("info", "--json", image).stdout.utf8)) as? [String: Any]
        let qemuJSON = try JSONSerialization.jsonObject(with: Data(try run("/usr/bin/qemu-img", ["info", "--output=json", image]).stdout.utf8)) as? [String: Any]
        let snapshots = json?["snapshots"] as? [[String: Any]], qemuSnapshots = qemuJSON?["snapshots"] as? [[String: Any]]
        #expect(snapshots?.count == 2)
        for (mine, theirs) in zip(snapshots ?? [], qemuSnapshots ?? []) {
            #expect(Set(mine.keys) == Set(theirs.keys))
            #expect(mine["name"] as? String == theirs["name"] as? String && mine["id"] as? String == theirs["id"] as? String)
            #expect(mine["date-nsec"] as? Int == theirs["date-nsec"] as? Int)
        }
    }
}
