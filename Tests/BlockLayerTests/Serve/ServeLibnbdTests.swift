// `blk serve` with libnbd's tools (Debian's libnbd-bin and python3-libnbd): nbdinfo's list and
// maps in both metadata contexts, nbdcopy both ways over 4 connections, every command and flag
// from libnbd in strict mode with the error values it must see (Tests/Fixtures/
// nbd_strict_client.py), and the export over TCP on loopback.
import Foundation
import Glibc
import Testing

@Suite("blk serve: libnbd's clients and TCP")
struct ServeLibnbdTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// base (4 MiB, data at 0) ← top (data at 1 MiB, a zero cluster at 2 MiB).
    func chain() throws -> String {
        let base = scratch.directory + "/base.qcow2", top = scratch.directory + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", base, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 1 0 64k", base])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 2 1M 64k", "-c", "write -z 2M 64k", top])
        return top
    }

    @Test("nbdinfo lists the exports and maps both metadata contexts")
    func nbdinfo() throws {
        let top = try chain()
        let other = try scratch.rawImage("other.raw", bytes: 1 << 20)
        let served = try ServedExport(scratch, [top, other], options: ["--persistent", "--export-name", "vm", "--export-name", "spare"],
                                      exportName: "vm")
        let list = try run("/usr/bin/nbdinfo", ["--list", "nbd+unix://?socket=\(served.socket)"])
        #expect(list.status == 0, "\(list)")
        #expect(list.stdout.contains("export=\"vm\"") && list.stdout.contains("export=\"spare\""), "\(list)")
        #expect(list.stdout.contains("base:allocation") && list.stdout.contains("qemu:allocation-depth"), "\(list)")
        #expect(list.stdout.contains("can_multi_conn: true") && list.stdout.contains("block_size_preferred: 65536"), "\(list)")

        let map = try run("/usr/bin/nbdinfo", ["--map", served.uri])
        #expect(map.status == 0, "\(map)")
        #expect(columns(map.stdout) == [["0", "65536", "0", "data"], ["65536", "983040", "3", "hole,zero"],
                                        ["1048576", "65536", "0", "data"], ["1114112", "3080192", "3", "hole,zero"]], "\(map)")
        let depth = try run("/usr/bin/nbdinfo", ["--map=qemu:allocation-depth", served.uri])
        #expect(depth.status == 0, "\(depth)")
        #expect(columns(depth.stdout) == [["0", "65536", "2", "backing", "depth", "2"], ["65536", "983040", "0", "absent"],
                                          ["1048576", "65536", "1", "local"], ["1114112", "983040", "0", "absent"],
                                          ["2097152", "65536", "1", "local"], ["2162688", "2031616", "0", "absent"]], "\(depth)")
        #expect(try served.stop() == 0)
    }

    func columns(_ text: String) -> [[String]] {
        text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
    }

    @Test("nbdcopy from and to the export with 4 connections")
    func nbdcopy() throws {
        let top = try chain()
        let served = try ServedExport(scratch, [top], options: ["--persistent", "--shared", "4"])
        let copy = scratch.directory + "/copy.raw"
        let out = try run("/usr/bin/nbdcopy", ["--connections", "4", served.uri, copy])
        #expect(out.status == 0, "\(out)")
        try qemuImg(["compare", "-U", "-f", "raw", "-F", "qcow2", copy, top])

        let source = try scratch.rawImage("source.raw", bytes: 4 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 0x71 0 3M", "-c", "write -P 0x72 3584k 512k", source])
        let into = try run("/usr/bin/nbdcopy", ["--connections", "4", source, served.uri])
        #expect(into.status == 0, "\(into)")
        #expect(try served.stop() == 0)
        try qemuImg(["compare", "-f", "raw", "-F", "qcow2", source, top])
        #expect(try run("/usr/bin/qemu-img", ["check", top]).status == 0)
    }

    @Test("libnbd in strict mode: every command and flag, and the errors the spec asks for")
    func strictClient() throws {
        let image = try scratch.rawImage(bytes: 40 << 20)
        // Two connections one after the other: with --shared 1 the second may come before the
        // server has counted the first one gone, and be turned away.
        let served = try ServedExport(scratch, [image], options: ["-f", "raw", "--persistent", "--shared", "2"])
        let script = testsDirectory.appendingPathComponent("Fixtures/nbd_strict_client.py").path
        let client = try run("/usr/bin/python3", [script, served.uri, String(40 << 20)])
        #expect(client.status == 0 && client.stdout == "ok\n", "\(client)")
        #expect(try served.stop() == 0)
    }

    @Test("over TCP on loopback, and a port in use refused")
    func tcp() throws {
        let image = try scratch.qcow2Image(size: "8M")
        let served = try ServedExport(scratch, [image], options: ["-f", "qcow2", "--persistent"], tcp: true)
        try qemuIO(["-f", "raw", "-c", "write -P 0x5e 0 128k", "-c", "read -P 0x5e 0 128k", served.uri])
        // A second server on the same port: the address is in use, which retrying may cure.
        let other = try scratch.rawImage(bytes: 1 << 20)
        let port = served.uri.split(separator: ":").last!.split(separator: "/").first!
        let second = try run(blkPath, ["serve", "-f", "raw", "--bind", "127.0.0.1:\(port)", other], within: 30)
        #expect(second.status == 75 && second.stderr.contains("in use"), "\(second)")
        #expect(try served.stop() == 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x5e 0 128k", image])
    }
}
