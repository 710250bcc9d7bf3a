// The backing chains the commit tests commit: made by qemu-img and qemu-io in a folder, with
// backing file names relative to it, so a copy of the folder is the same chain over its own
// files — one for blk, one for qemu-img, or a crash state's.
import Foundation
import Testing

struct CommitChain: Sendable, CustomStringConvertible {
    var name: String
    /// The base's format and qemu-img create options.
    var baseFormat = "qcow2"
    var overlayOptions: [String] = []
    /// An image between the base and the overlay, with these writes; none when empty.
    var middleWrites: [String] = []
    var description: String { name }

    static let size = "4M"
    static let baseWrites = ["write -P 0xaa 512k 2M", "write -P 0xab 3M 64k"]
    /// Whole clusters, a partial cluster over base data, zeroes over base data, and a cluster
    /// past the base's data.
    static let overlayWrites = ["write -P 0x11 0 192k", "write -P 0x22 600k 10k", "write -z 1M 128k", "write -P 0x33 3M 64k"]

    static let all: [CommitChain] = [
        CommitChain(name: "qcow2 v3 overlay"),
        CommitChain(name: "qcow2 v2 overlay (emptied cluster by cluster)", overlayOptions: ["-o", "compat=0.10"]),
        CommitChain(name: "raw base", baseFormat: "raw"),
    ]

    /// The image names, base first, top last.
    var images: [String] { middleWrites.isEmpty ? ["base", "top.qcow2"] : ["base", "mid.qcow2", "top.qcow2"] }

    /// Makes the chain in `folder`; returns the top's path.
    @discardableResult
    func make(in folder: String) throws -> String {
        let base = folder + "/base"
        try qemuImg(["create", "-q", "-f", baseFormat, base, Self.size])
        try qemuIO(baseFormat, base, Self.baseWrites)
        var below = ("base", baseFormat)
        if !middleWrites.isEmpty {
            try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base", "-F", baseFormat, folder + "/mid.qcow2"])
            try qemuIO("qcow2", folder + "/mid.qcow2", middleWrites)
            below = ("mid.qcow2", "qcow2")
        }
        let top = folder + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2"] + overlayOptions + ["-b", below.0, "-F", below.1, top])
        try qemuIO("qcow2", top, Self.overlayWrites)
        return top
    }

    /// Makes the chain in a new folder `folder`, and the raw image of what the guest reads
    /// through its top at `guestView`; returns the top's path.
    func make(in folder: String, guestView: String) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let top = try make(in: folder)
        try qemuImg(["convert", "-O", "raw", top, guestView])
        return top
    }

    /// A copy of the chain's files from `folder` into a new folder `copy`.
    func copy(from folder: String, to copy: String) throws {
        try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
        for name in images { try FileManager.default.copyItem(atPath: folder + "/" + name, toPath: copy + "/" + name) }
    }

    private func qemuImg(_ arguments: [String]) throws {
        let made = try run("/usr/bin/qemu-img", arguments)
        guard made.status == 0 else { throw TestFailure("qemu-img \(arguments): \(made)") }
    }

    private func qemuIO(_ format: String, _ path: String, _ commands: [String]) throws {
        let wrote = try run("/usr/bin/qemu-io", ["-f", format] + commands.flatMap { ["-c", $0] } + [path])
        guard wrote.status == 0, !wrote.stdout.contains("failed") else { throw TestFailure("qemu-io \(commands): \(wrote)") }
    }
}

/// Whether the guest sees through `top` exactly the bytes of the raw file `expected`.
func readsAs(_ top: String, _ expected: String) throws -> Bool {
    try run("/usr/bin/qemu-img", ["compare", "-q", "-f", "qcow2", "-F", "raw", top, expected]).status == 0
}
