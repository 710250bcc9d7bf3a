// The qcow2 allocating writes that the crash-state and fault-injection tests put under stress,
// each on a 2 GiB image made by qemu-img: which metadata it allocates, and the steps
// (BlockEvent names) its writes must pass through.
import Foundation
import Testing

struct Qcow2WriteScenario: Sendable, CustomStringConvertible {
    var name: String
    var create: [String]
    /// Written first; a snapshot (qemu-img snapshot -c) then shares it.
    var setup: [String] = []
    var writes: [String]
    var events: [String]

    var description: String { name }

    static let all: [Qcow2WriteScenario] = [
        Qcow2WriteScenario(name: "new L2 tables", create: ["-o", "cluster_size=65536"],
                           writes: ["write -P 0x11 0 64k", "write -P 0x12 1G 96k", "flush"],
                           events: ["write_aio", "refblock_update", "l2_update", "l1_update"]),
        Qcow2WriteScenario(name: "refcount block allocation", create: ["-o", "cluster_size=512"],
                           writes: ["write -P 0x21 0 300k", "flush"],
                           events: ["write_aio", "refblock_update", "reftable_update", "l2_update", "l1_update"]),
        // 10 MiB of 512-byte clusters need more refcount blocks than qemu-img's one-cluster
        // table has entries (64), so the table grows.
        Qcow2WriteScenario(name: "refcount-table growth", create: ["-o", "cluster_size=512"],
                           writes: ["write -P 0x31 0 6M", "write -P 0x32 8M 4M", "flush"],
                           events: ["write_aio", "reftable_grow", "l2_update", "cluster_free"]),
        Qcow2WriteScenario(name: "copy-on-write over a snapshot", create: ["-o", "cluster_size=65536"],
                           setup: ["write -P 0x41 0 256k"],
                           writes: ["write -P 0x42 4k 8k", "write -P 0x43 128k 64k", "flush"],
                           events: ["cow_write", "write_aio", "l2_update", "l1_update", "cluster_free"]),
        Qcow2WriteScenario(name: "compressed writes", create: ["-o", "cluster_size=65536"],
                           writes: ["write -c -P 0x51 0 192k", "write -c -P 0x52 64k 64k", "write -c -P 0x53 1G 64k", "flush"],
                           events: ["write_compressed", "refblock_update", "l2_update", "l1_update", "cluster_free"]),
        // Extended L2 entries: partial writes fill subclusters (cow_write), whole clusters go
        // in one write, and a zeroed subcluster changes only its bitmap.
        Qcow2WriteScenario(name: "subcluster writes", create: ["-o", "cluster_size=65536,extended_l2=on"],
                           writes: ["write -P 0x61 4k 4k", "write -z 4k 2k", "write -P 0x62 1G 96k", "write -P 0x63 70k 3k", "flush"],
                           events: ["cow_write", "write_aio", "l2_update", "l1_update"]),
    ]

    /// Creates the image and runs the setup; returns nothing, fails the test on a failed step.
    func makeImage(at image: String) throws {
        #expect(try run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2"] + create + [image, "2G"]).status == 0)
        if !setup.isEmpty {
            #expect(try run(blkPath, ["io", "-f", "qcow2", image] + setup.flatMap { ["-c", $0] }).status == 0)
            #expect(try run("/usr/bin/qemu-img", ["snapshot", "-c", "before", image]).status == 0)
        }
    }

    var ioArguments: [String] { writes.flatMap { ["-c", $0] } }
}
