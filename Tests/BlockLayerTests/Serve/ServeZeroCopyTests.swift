// `blk serve` sending read data from the image file with sendfile (ExportReads.swift,
// HostExtent.swift): every kind of qcow2 cluster, a backing file and raw read back byte for byte
// through structured, DF and simple replies (Tests/Fixtures/nbd_zero_copy_client.py) and by
// qemu's own tools; reads racing writes, trims and flushes to the same range over other
// connections; and the control socket's count of bytes sent that way, so the path is known to
// have been taken (and not taken under `--cache none`); and a file cut shorter under a reply on
// its way, which must end the connection, not spin (SendfileWatch.swift).
import Foundation
import Testing

@Suite("blk serve: reads sent with sendfile")
struct ServeZeroCopyTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    var controlPath: String { scratch.directory + "/control.sock" }
    var fixture: String { testsDirectory.appendingPathComponent("Fixtures/nbd_zero_copy_client.py").path }

    /// A 4 MiB image of every kind of cluster: data (side by side in the file, and not), compressed,
    /// zero, unallocated over a raw backing file that has data, and past it (the backing file is
    /// shorter); a raw image of data and holes.
    func mixedImage(_ format: String) throws -> String {
        guard format == "qcow2" else {
            let path = try scratch.rawImage(bytes: 4 << 20)
            try qemuIO(["-f", "raw", "-c", "write -P 0x11 0 512k", "-c", "write -P 0x33 1M 192k", "-c", "write -P 0x34 1100k 333k",
                        "-c", "write -P 0x55 2M 64k", path])
            return path
        }
        let backing = try scratch.rawImage("backing.raw", bytes: 3 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 0x44 0 3M", backing])
        let path = scratch.directory + "/disk.qcow2"
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", path, "4M"])
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 512k", "-c", "write -c -P 0x22 512k 64k", "-c", "write -z 576k 64k",
                    "-c", "write -P 0x33 1M 192k", "-c", "write -P 0x55 2M 64k", "-c", "write -P 0x34 1216k 64k",
                    "-c", "write -P 0x66 3200k 5000", path])
        return path
    }

    @Test("every kind of cluster reads back as the file holds it, through each kind of reply",
          arguments: [("raw", "writeback"), ("qcow2", "writeback"), ("qcow2", "none")])
    func readsMatchTheFile(format: String, cache: String) throws {
        let path = try mixedImage(format)
        let reference = scratch.directory + "/reference.raw"
        try qemuImg(["convert", "-f", format, "-O", "raw", path, reference])
        let served = try ServedExport(scratch, [path], options: ["-f", format, "--cache", cache, "--shared", "4", "--persistent",
                                                                 "--control", controlPath])
        let client = try run("/usr/bin/python3", [fixture, "compare", served.uri, reference, cache == "none" ? "512" : "1"])
        #expect(client.status == 0 && client.stdout == "ok\n", "\(client)")
        try qemuImg(["compare", "-f", "raw", "-F", "raw", served.uri, reference])
        if format == "qcow2" {
            try qemuIO(["-r", "-f", "raw", "-c", "read -P 0x11 0 512k", "-c", "read -P 0x22 512k 64k", "-c", "read -P 0 576k 64k",
                        "-c", "read -P 0x44 640k 384k", "-c", "read -P 0x33 1M 192k", "-c", "read -P 0x34 1216k 64k",
                        "-c", "read -P 0x44 1280k 768k", "-c", "read -P 0 3M 128k", "-c", "read -P 0x66 3200k 5000", served.uri])
        }
        let sent = try ControlClient(controlPath).returned("status")["bytes-sent-from-file"] as? Int
        // Under O_DIRECT every read is copied (FileDriver.hostExtent says why).
        #expect(cache == "none" ? sent == 0 : (sent ?? 0) >= 1 << 20, "bytes sent from the file: \(String(describing: sent))")
        #expect(try served.stop() == 0)
    }

    @Test("reads racing writes, trims and flushes of the same range get its bytes, old or new, never another range's",
          arguments: ["raw", "qcow2"])
    func readsRacingWrites(format: String) throws {
        let path = format == "raw" ? try scratch.rawImage(bytes: 4 << 20) : try scratch.qcow2Image(size: "4M")
        let served = try ServedExport(scratch, [path], options: ["-f", format, "--discard", "unmap", "--shared", "8", "--persistent",
                                                                 "--control", controlPath])
        let client = try run("/usr/bin/python3", [fixture, "race", served.uri])
        #expect(client.status == 0 && client.stdout == "ok\n", "\(client)")
        let sent = try ControlClient(controlPath).returned("status")["bytes-sent-from-file"] as? Int
        #expect((sent ?? 0) > 0, "bytes sent from the file: \(String(describing: sent))")
        #expect(try served.stop() == 0)
        if format == "qcow2" {
            let check = try run("/usr/bin/qemu-img", ["check", path])
            #expect(check.status == 0, "\(check)")
        }
    }

    @Test("a raw file cut shorter under a reply on its way ends that connection; the server goes on and stops cleanly")
    func fileCutUnderAReply() throws {
        let path = try scratch.rawImage(bytes: 16 << 20)
        try qemuIO(["-f", "raw", "-c", "write -P 0x5a 0 16M", path])
        // Read-only raw: the locks let another process resize the file, as QEMU's do.
        let served = try ServedExport(scratch, [path], options: ["-f", "raw", "-r", "--shared", "2", "--persistent",
                                                                 "--control", controlPath])
        let client = try run("/usr/bin/python3", [fixture, "truncated", served.uri, controlPath, path])
        #expect(client.status == 0 && client.stdout == "ok\n", "\(client)")
        #expect(try ControlClient(controlPath).returned("status")["connections"] as? Int == 0)
        #expect(try served.stop() == 0)
    }
}
