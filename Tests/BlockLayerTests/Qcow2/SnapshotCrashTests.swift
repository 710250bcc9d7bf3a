// Crash states and injected faults of `blk snapshot -c`, `-a` and `-d` (Qcow2SnapshotUpdate.swift's
// order): each operation runs journaled (`--record-writes`) on an image with 4 KiB clusters —
// several L2 tables and refcount blocks, a compressed cluster, data shared with a snapshot and
// data not — and every state a power cut could leave (a sample; BLK_SOAK=1 all) must check clean
// or with leaks only, and read, active image and every snapshot, exactly as before or as after.
// Then each write and each flush of the operation fails in turn (EIO, ENOSPC): the command
// reports it, and the image is left consistent, reading as before or as after.
import Foundation
import Testing

@Suite("qcow2 snapshots: crash states and injected faults of create, apply and delete")
struct SnapshotCrashTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    static let operations: [[String]] = [["-c", "new"], ["-a", "old"], ["-d", "old"]]

    /// Data, a qemu-img snapshot "old", then writes over part of the data and beside it.
    func makeBase() throws -> String {
        let base = scratch.directory + "/base.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", base, "8M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 3M", "-c", "write -c -P 0x12 7M 4k", base])
        try qemuImg(["snapshot", "-c", "old", base])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x21 1M 1M", "-c", "write -P 0x22 5M 512k", base])
        return base
    }

    /// A fresh copy of `base` at `path`.
    func copy(_ base: String, to path: String) throws {
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: base, toPath: path)
    }

    /// The base image, what it reads as before and after the operation, and the operation's
    /// write journal.
    func journaled(_ operation: [String]) throws -> (base: String, before: SnapshotReading, after: SnapshotReading, journal: Data) {
        let base = try makeBase()
        let image = scratch.directory + "/journaled.qcow2", journal = scratch.directory + "/journal"
        try copy(base, to: image)
        try scratch.write(journal, Data())
        let before = try SnapshotReading(base, scratch: scratch)
        let done = try run(blkPath, ["snapshot", "--record-writes", journal] + operation + [image])
        #expect(done.status == 0, "\(done)")
        let after = try SnapshotReading(image, scratch: scratch)
        #expect(before != after, "\(operation) changed nothing")
        return (base, before, after, try Data(contentsOf: URL(fileURLWithPath: journal)))
    }

    @Test("every crash state checks clean or with leaks only and reads as before or as after", arguments: operations)
    func crashStates(operation: [String]) throws {
        let (base, before, after, journal) = try journaled(operation)
        let probe = scratch.directory + "/crashed.qcow2"
        try CrashStates.check("snapshot \(operation)", before: try Data(contentsOf: URL(fileURLWithPath: base)), journal: journal,
                              probe: probe, sample: 16, minimum: 1) { sampled in
            try expectSound(probe, leaksAllowed: true, "\(operation), \(sampled.label)", qemu: sampled.position.isMultiple(of: 4) || sampled.isLast)
            let reading = try SnapshotReading(probe, scratch: scratch)
            #expect(reading == before || reading == after, "\(operation), \(sampled.label): reads \(reading)")
        }
    }

    @Test("each write and flush failing in turn is reported and leaves the image sound", arguments: operations)
    func faults(operation: [String]) throws {
        let (base, before, after, journal) = try journaled(operation)
        let image = scratch.directory + "/image.qcow2"
        let epochs = CrashStates.epochs(journal)
        let counts = ["write": epochs.map(\.count).reduce(0, +), "flush": epochs.count - 1]
        #expect(counts["write"]! >= 4 && counts["flush"]! >= 2, "\(counts)")
        for (kind, count) in counts.sorted(by: { $0.key < $1.key }) {
            for step in 1...count + 1 {
                let rule = "\(kind):\(step)" + (step.isMultiple(of: 2) ? ":enospc" : "")
                try copy(base, to: image)
                let result = try run(blkPath, ["snapshot", "--inject-fault", rule] + operation + [image])
                try expectSound(image, leaksAllowed: true, "\(operation), \(rule)")
                let reading = try SnapshotReading(image, scratch: scratch)
                #expect(reading == before || reading == after, "\(operation), \(rule): reads \(reading)")
                if step > count {
                    #expect(result.status == 0, "\(operation), \(rule): past the last \(kind), yet \(result)")
                } else if result.status != 0 {
                    #expect(result.stderr.contains(step.isMultiple(of: 2) ? "No space left on device" : "Input/output error"),
                            "\(operation), \(rule): \(result)")
                } else {
                    // Only a flush after the image was closed may fail unseen: all was durable by then.
                    #expect(kind == "flush" && reading == after, "\(operation), \(rule): a failed \(kind) went unreported")
                }
            }
        }
        print("snapshot \(operation): \(counts["write"]!) writes, \(counts["flush"]!) flushes, each failed in turn")
    }
}
