// `blk snapshot` beside qemu-img 7.2: snapshots blk makes are listed, read, applied and deleted
// by qemu-img, and the reverse, with the data each holds compared byte for byte and both
// checkers finding the image clean; qemu-img's messages for what is not there; and hostile
// snapshot tables refused as corrupt (65) without a byte of the image changing.
import Foundation
import Testing

/// What an image reads as, through qemu-img: the active image, and each snapshot by ID and name.
struct SnapshotReading: Equatable, CustomStringConvertible {
    var active: Data
    var virtualSize: Int
    var snapshots: [String: Data]

    init(_ image: String, scratch: Scratch) throws {
        let info = try run("/usr/bin/qemu-img", ["info", "--output=json", "-f", "qcow2", image])
        guard info.status == 0, let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any] else {
            throw TestFailure("qemu-img info: \(info)")
        }
        virtualSize = json["virtual-size"] as? Int ?? -1
        let listed = (json["snapshots"] as? [[String: Any]] ?? []).map { ($0["id"] as? String ?? "", $0["name"] as? String ?? "") }
        active = try Self.export(image, nil, scratch)
        snapshots = [:]
        for (id, name) in listed { snapshots["\(id) \(name)"] = try Self.export(image, id, scratch) }
    }

    private static func export(_ image: String, _ snapshotID: String?, _ scratch: Scratch) throws -> Data {
        let copy = scratch.directory + "/export.raw"
        try? FileManager.default.removeItem(atPath: copy)
        try qemuImg(["convert", "-f", "qcow2"] + (snapshotID.map { ["-l", "snapshot.id=\($0)"] } ?? []) + ["-O", "raw", image, copy])
        return try Data(contentsOf: URL(fileURLWithPath: copy))
    }

    var description: String { "\(virtualSize) bytes, snapshots \(snapshots.keys.sorted())" }
}

@Suite("blk snapshot: qemu-img interop, messages and hostile tables")
struct SnapshotCommandTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func bothCheckClean(_ image: String) throws -> Bool {
        try run("/usr/bin/qemu-img", ["check", image]).status == 0 && blk("check", image).status == 0
    }

    @Test("snapshots blk makes are listed, read, applied and deleted by qemu-img")
    func madeByBlk() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 2M", "-c", "write -c -P 0x12 4M 64k", "-c", "write -z 8M 1M", image])
        let original = try SnapshotReading(image, scratch: scratch)
        let created = try blk("snapshot", "-c", "first", image)
        #expect(created.status == 0 && created.stdout.isEmpty, "\(created)")
        #expect(try blk("io", image, "-c", "write -P 0x22 1M 2M", "-c", "write -P 0x23 4M 4k").status == 0)
        #expect(try blk("snapshot", "-c", "second", image).status == 0)
        #expect(try bothCheckClean(image))
        let reading = try SnapshotReading(image, scratch: scratch)
        #expect(reading.snapshots.keys.sorted() == ["1 first", "2 second"])
        #expect(reading.snapshots["1 first"] == original.active)
        #expect(reading.snapshots["2 second"] == reading.active && reading.active != original.active)

        // The snapshot records the disk size: applying it undoes a resize.
        try qemuImg(["resize", image, "128M"])
        try qemuImg(["snapshot", "-a", "first", image])
        let applied = try SnapshotReading(image, scratch: scratch)
        #expect(applied.active == original.active && applied.virtualSize == 64 << 20)
        #expect(try bothCheckClean(image))
        try qemuImg(["snapshot", "-d", "second", image])
        try qemuImg(["snapshot", "-d", "first", image])
        #expect(try bothCheckClean(image))
        #expect(try SnapshotReading(image, scratch: scratch).active == original.active)
    }

    @Test("snapshots qemu-img makes are listed, applied and deleted by blk")
    func madeByQemuImg() throws {
        let image = try scratch.qcow2Image(size: "64M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x31 0 3M", "-c", "write -c -P 0x32 6M 64k", image])
        try qemuImg(["snapshot", "-c", "q1", image])
        let first = try SnapshotReading(image, scratch: scratch)
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x33 2M 2M", "-c", "write -P 0x34 40M 64k", image])
        try qemuImg(["snapshot", "-c", "q2", image])
        try qemuImg(["resize", image, "+64M"])
        let listed = try blk("snapshot", "-l", image), qemuListed = try run("/usr/bin/qemu-img", ["snapshot", "-l", image])
        #expect(listed.status == 0 && listed.stdout == qemuListed.stdout && listed.stdout.contains("q2"), "\(listed)")

        let applied = try blk("snapshot", "-a", "q1", image)
        #expect(applied.status == 0, "\(applied)")
        var reading = try SnapshotReading(image, scratch: scratch)
        #expect(reading.active == first.active && reading.virtualSize == 64 << 20)
        #expect(try bothCheckClean(image))
        // Writes after the apply go to copies: the snapshot keeps what it had.
        #expect(try blk("io", image, "-c", "write -P 0x35 0 1M", "-c", "write -P 0x36 6M 4k").status == 0)
        reading = try SnapshotReading(image, scratch: scratch)
        #expect(reading.snapshots["1 q1"] == first.active)
        #expect(try bothCheckClean(image))

        let afterWrites = reading.active
        #expect(try blk("snapshot", "-d", "q2", image).status == 0)
        #expect(try blk("snapshot", "-d", "q1", image).status == 0)
        #expect(try bothCheckClean(image))
        #expect(try run("/usr/bin/qemu-img", ["snapshot", "-l", image]).stdout.isEmpty)
        #expect(try SnapshotReading(image, scratch: scratch).active == afterWrites)
        // IDs go on from the highest, as QEMU numbers them.
        try qemuImg(["snapshot", "-c", "a", image])
        try qemuImg(["snapshot", "-c", "b", image])
        try qemuImg(["snapshot", "-d", "a", image])
        #expect(try blk("snapshot", "-c", "c", image).status == 0)
        #expect(try SnapshotReading(image, scratch: scratch).snapshots.keys.sorted() == ["2 b", "3 c"])
    }

    @Test("qemu-img's messages for what is not there, blk's exit codes")
    func messages() throws {
        let image = try scratch.qcow2Image(size: "8M")
        #expect(try blk("snapshot", "-c", "s1", image).status == 0)
        let apply = try blk("snapshot", "-a", "nope", image)
        #expect(apply.status == 66 && apply.stderr.contains("Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory"), "\(apply)")
        // -d finds by name only, as qemu-img 7.2 does; -a by ID first.
        let delete = try blk("snapshot", "-d", "1", image)
        #expect(delete.status == 66 && delete.stderr.contains("Could not delete snapshot '1': snapshot not found"), "\(delete)")
        #expect(try blk("snapshot", "-a", "1", image).status == 0)
        let mixed = try blk("snapshot", "-l", "-c", "x", image)
        #expect(mixed.status == 64 && mixed.stderr.contains("Cannot mix '-l', '-a', '-c', '-d'"), "\(mixed)")
        let raw = try scratch.rawImage(bytes: 1 << 20)
        let rawCreate = try blk("snapshot", "-f", "raw", "-c", "s", raw)
        #expect(rawCreate.status == 69 && rawCreate.stderr.contains("Could not create snapshot 's'"), "\(rawCreate)")
        let rawList = try blk("snapshot", "-f", "raw", "-l", raw)
        #expect(rawList.status == 0 && rawList.stdout.isEmpty, "\(rawList)")
        // Listing reads only: -U shares the image with a writer.
        #expect(try blk("snapshot", "-l", "-U", image).stdout.contains("s1"))
    }

    /// The image with one qemu-img snapshot, the header's snapshot table offset, and the offset of
    /// the snapshot's L1 table.
    func imageWithSnapshot() throws -> (path: String, table: Int, l1: Int) {
        let image = try scratch.qcow2Image(size: "8M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x41 0 1M", image])
        try qemuImg(["snapshot", "-c", "old", image])
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        func number(_ at: Int, _ count: Int) -> Int { bytes[at..<at + count].reduce(0) { $0 << 8 | Int($1) } }
        let table = number(64, 8)
        return (image, table, number(table, 8))
    }

    @Test("hostile snapshot tables are refused as corrupt, and nothing is written",
          arguments: [("snapshot L1 table past the end of the file", "l1Offset"), ("L2 table past the end of the file", "l2Offset"),
                      ("snapshot count past the table", "count"), ("extra data past the table", "extraData")])
    func hostile(name: String, field: String) throws {
        let (image, table, l1) = try imageWithSnapshot()
        var bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        func patch(_ at: Int, _ value: UInt64, _ count: Int) {
            for index in 0..<count { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(count - 1 - index))) }
        }
        switch field {
        case "l1Offset": patch(table, 0x7fff_0000, 8)
        case "l2Offset": patch(l1, 0x8000_0000_7fff_0000, 8)
        case "count": patch(60, 65536, 4)
        default: patch(table + 36, 0xffff_ffff, 4)
        }
        try bytes.write(to: URL(fileURLWithPath: image))
        let actions: [[String]] = field == "count" || field == "extraData"
            ? [["-l"], ["-c", "new"], ["-a", "old"], ["-d", "old"]] : [["-a", "old"], ["-d", "old"]]
        for action in actions {
            let refused = try run(blkPath, ["snapshot"] + action + [image])
            #expect(refused.status == 65 && refused.stderr.contains("qcow2:"), "\(name), \(action): \(refused)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == bytes, "\(name), \(action): the image changed")
        }
    }
}
