// `blk serve --discard` and `--detect-zeroes` (qemu-nbd's meanings), NBD_CMD_FLAG_FAST_ZERO and
// NBD_CMD_FLAG_DF, through libnbd in strict mode (Tests/Fixtures/nbd_zeroing_client.py): what
// each mode leaves in the image, and what block status then says of it.
import Foundation
import Testing

@Suite("blk serve: discard, detect-zeroes, fast zero and DF")
struct ServeZeroingTests {
    @Test("trims, zero writes and fast zeroes under each mode, on raw and qcow2", arguments: [
        ("raw", "ignore", "off"), ("raw", "unmap", "unmap"), ("raw", "ignore", "on"), ("raw", "unmap", "off"),
        ("qcow2", "ignore", "on"), ("qcow2", "unmap", "unmap"), ("qcow2", "unmap", "off"), ("qcow2", "ignore", "off"),
    ])
    func modes(format: String, discard: String, detectZeroes: String) throws {
        let scratch = try Scratch()
        let image = format == "raw" ? try scratch.rawImage(bytes: 4 << 20) : try scratch.qcow2Image(size: "4M")
        let served = try ServedExport(scratch, [image], options: ["-f", format, "--persistent", "--discard", discard,
                                                                  "--detect-zeroes", detectZeroes])
        let script = testsDirectory.appendingPathComponent("Fixtures/nbd_zeroing_client.py").path
        let client = try run("/usr/bin/python3", [script, served.uri, format, discard, detectZeroes])
        #expect(client.status == 0 && client.stdout == "ok\n", "\(client)")
        #expect(try served.stop() == 0)
        if format == "qcow2" {
            let check = try run("/usr/bin/qemu-img", ["check", image])
            #expect(check.status == 0, "\(check)")
        }
    }

    @Test("the flags say what is true: zeroing and DF where writable, none of the writing commands read-only")
    func advertised() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        for readOnly in [false, true] {
            let served = try ServedExport(scratch, [image], options: ["-f", "raw"] + (readOnly ? ["-r"] : []))
            let info = try run("/usr/bin/nbdinfo", ["--json", served.uri])
            #expect(info.status == 0, "\(info)")
            let export = (try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])?["exports"] as? [[String: Any]]
            let flags = export?.first ?? [:]
            for name in ["can_trim", "can_zero", "can_fast_zero"] {
                #expect(flags[name] as? Bool == !readOnly, "\(name): \(info)")
            }
            #expect(flags["is_read_only"] as? Bool == readOnly && flags["can_df"] as? Bool == true, "\(info)")
            #expect(served.process.exitStatus(within: 30) == 0)
        }
    }

    @Test("--detect-zeroes unmap without --discard unmap is a usage error, as in qemu-nbd")
    func detectUnmapNeedsDiscard() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let refused = try run(blkPath, ["serve", "-f", "raw", "--socket", scratch.directory + "/nbd.sock", "--detect-zeroes", "unmap", image],
                              within: 30)
        #expect(refused.status == 64 && refused.stderr.contains("--discard"), "\(refused)")
    }
}
