// `blk serve` with clients we did not write: qemu-io and qemu-img over NBD, on raw and qcow2
// images — pattern writes and reads, the map, convert both ways, compare, a read-only export,
// two clients at once — and the image checked with the file's own tools after the server stops.
import Foundation
import Glibc
import Testing

@Suite("blk serve: qemu-io and qemu-img over NBD")
struct ServeInteropTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    func image(_ format: String) throws -> String {
        format == "raw" ? try scratch.rawImage(bytes: 16 << 20) : try scratch.qcow2Image(size: "16M")
    }

    @Test("pattern writes and reads through the export reach the image", arguments: ["raw", "qcow2"])
    func patternWritesAndReads(format: String) throws {
        let path = try image(format)
        let served = try ServedExport(scratch, [path], options: ["-f", format])
        try qemuIO(["-f", "raw", "-c", "write -P 0xab 0 64k", "-c", "write -P 0xcd 1M 512k", "-c", "write -z 4M 64k",
                    "-c", "read -P 0xab 0 64k", "-c", "read -P 0xcd 1M 512k", "-c", "read -P 0 4M 64k", served.uri])
        #expect(try served.stop() == 0)
        try qemuIO(["-f", format, "-c", "read -P 0xab 0 64k", "-c", "read -P 0xcd 1M 512k", "-c", "read -P 0 64k 960k", path])
        if format == "qcow2" {
            let check = try run("/usr/bin/qemu-img", ["check", path])
            #expect(check.status == 0, "\(check)")
        }
    }

    @Test("the image keeps its locks while served: qemu-img beside it cannot get the write lock")
    func locksHeldWhileServing() throws {
        let path = try image("qcow2")
        let served = try ServedExport(scratch, [path], options: ["-f", "qcow2", "--persistent"])
        let beside = try run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write 0 4k", path])
        #expect(beside.stderr.contains("Failed to get \"write\" lock"), "\(beside)")
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "qcow2", "-c", "write 0 4k", path])
    }

    @Test("qemu-img map over NBD shows the image's allocation", arguments: ["raw", "qcow2"])
    func mapMatchesFile(format: String) throws {
        let path = try image(format)
        try qemuIO(["-f", format, "-c", "write -P 0x11 0 64k", "-c", "write -P 0x12 2M 192k", "-c", "write -z 8M 1M", path])
        let direct = try run("/usr/bin/qemu-img", ["map", "--output=json", "-f", format, path])
        #expect(direct.status == 0, "\(direct)")
        let served = try ServedExport(scratch, [path], options: ["-f", format, "-r"])
        let overNBD = try run("/usr/bin/qemu-img", ["map", "--output=json", "-f", "raw", served.uri])
        #expect(overNBD.status == 0, "\(overNBD)")
        #expect(try MapRun.runs(ofJSON: overNBD.stdout) == MapRun.runs(ofJSON: direct.stdout))
        #expect(try served.stop() == 0)
    }

    @Test("qemu-img convert to and from the export, and compare against the file")
    func convertBothWays() throws {
        let source = try scratch.rawImage("source.raw", bytes: 8 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 3M 64k", "-c", "write -P 0x3c 7M 1M", source])
        let target = try image("qcow2")
        let served = try ServedExport(scratch, [target], options: ["-f", "qcow2", "--persistent"])
        try qemuImg(["convert", "-n", "-f", "raw", "-O", "raw", source, served.uri])
        try qemuImg(["compare", "-f", "raw", "-F", "raw", source, served.uri])
        let back = scratch.directory + "/back.qcow2"
        try qemuImg(["convert", "-f", "raw", "-O", "qcow2", served.uri, back])
        #expect(try served.stop() == 0)
        try qemuImg(["compare", "-f", "raw", "-F", "qcow2", source, back])
        try qemuImg(["compare", "-f", "raw", "-F", "qcow2", source, target])
        #expect(try run("/usr/bin/qemu-img", ["check", target]).status == 0)
    }

    @Test("a read-only export refuses writes and serves reads")
    func readOnlyRefusesWrites() throws {
        let path = try image("raw")
        try qemuIO(["-f", "raw", "-c", "write -P 0x77 0 64k", path])
        let served = try ServedExport(scratch, [path], options: ["-f", "raw", "-r", "--persistent"])
        // qemu sees NBD_FLAG_READ_ONLY and refuses to open the export for writing at all.
        let write = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0x01 0 4k", served.uri])
        #expect(write.status != 0 && write.stderr.contains("Permission denied"), "\(write)")
        try qemuIO(["-r", "-f", "raw", "-c", "read -P 0x77 0 64k", served.uri])
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "raw", "-c", "read -P 0x77 0 64k", path])
    }

    @Test("two clients at once, each writing its own half, both land")
    func twoConnections() throws {
        let path = try image("qcow2")
        let served = try ServedExport(scratch, [path], options: ["-f", "qcow2", "--shared", "2", "--persistent"])
        let first = try Spawned("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0x61 0 4M", "-c", "read -P 0x61 0 4M", served.uri], stdinPipe: false)
        let second = try Spawned("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0x62 8M 4M", "-c", "read -P 0x62 8M 4M", served.uri], stdinPipe: false)
        let outputs = [first, second].map { ($0, readAll($0.output)) }
        for (child, output) in outputs {
            #expect(child.wait(within: 60) == 0)
            #expect(!output.contains("failed"), "\(output)")
        }
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x61 0 4M", "-c", "read -P 0x62 8M 4M", path])
        #expect(try run("/usr/bin/qemu-img", ["check", path]).status == 0)
    }

    @Test("without --persistent the server stops with exit 0 when its client leaves")
    func stopsAfterLastClient() throws {
        let path = try image("raw")
        let served = try ServedExport(scratch, [path], options: ["-f", "raw"])
        try qemuIO(["-f", "raw", "-c", "write -P 0x42 0 4k", served.uri])
        #expect(served.process.exitStatus(within: 30) == 0)
        #expect(access(served.socket, F_OK) != 0, "the socket is removed on exit")
        try qemuIO(["-f", "raw", "-c", "read -P 0x42 0 4k", path])
    }
}
