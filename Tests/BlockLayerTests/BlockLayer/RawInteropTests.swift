// Raw images between blk and the real qemu-io/qemu-img: the same bytes both ways, and the raw
// rows of interface.md §2 with `blk io` itself holding the image or being refused.
import BlockLocking
import Foundation
import Glibc
import Testing

/// A `blk io` process that keeps `image` open as `kind` (its last command sleeps) until killed.
func blkHolder(_ kind: OpenKind, _ image: String) throws -> LineProcess {
    let holder = try LineProcess(blkPath, ["io"] + RawInteropTests.blkArguments(kind) + [image, "-c", "sleep 600000"])
    try waitUntilLocked(image, kind.blk, by: holder)
    return holder
}

@Suite("raw images with qemu-io and qemu-img")
struct RawInteropTests {
    let scratch: Scratch
    let image: String

    init() throws {
        scratch = try Scratch()
        image = scratch.directory + "/disk.raw"
        let created = try blk("create", "-f", "raw", image, "8M")
        guard created.status == 0 else { throw TestFailure("\(created)") }
    }

    @Test("blk writes, qemu-io reads the same bytes; qemu-io writes, blk reads them")
    func bytesBothWays() throws {
        let written = try blk("io", "-f", "raw", image, "-c", "write -P 0x5a 4096 65536", "-c", "write -z 8192 4096", "-c", "flush")
        #expect(written.status == 0, "\(written)")
        let checked = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "read -P 0x5a 4096 4096", "-c", "read -P 0 8192 4096",
                                                    "-c", "read -P 0x5a 12288 57344", "-c", "read -P 0 0 4096", image])
        #expect(checked.status == 0 && !checked.stdout.contains("failed"), "\(checked)")

        let qemuWrote = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0xc3 1048575 3", image])
        #expect(qemuWrote.status == 0)
        let read = try blk("io", "-f", "raw", "-r", image, "-c", "read -P 0xc3 1048575 3", "-c", "read -P 0 1048578 100")
        #expect(read.status == 0 && !read.stdout.contains("failed"), "\(read)")
    }

    @Test("blk io pattern mismatches and offsets past the end fail the run, and the rest still runs")
    func ioFailures() throws {
        let run = try blk("io", "-f", "raw", image, "-c", "read -P 0x11 0 512", "-c", "read 8M 1", "-c", "write -P 7 0 1")
        #expect(run.status == 1)
        #expect(run.stdout.hasPrefix("Pattern verification failed at offset 0, 512 bytes\nread 512/512 bytes at offset 0\n"))
        #expect(run.stdout.contains("wrote 1/1 bytes at offset 0"), "later commands still run")
        #expect(run.stderr == "blk: read failed: 1 bytes at offset 8388608 reach past the end of the image (8388608 bytes)\n")
    }

    @Test("sizes and offsets that overflow are usage errors, not wrapped numbers", arguments: [
        ["create", "-f", "raw", "IMAGE", "16E"],
        ["create", "-f", "raw", "IMAGE", "99999999999999999999"],
        ["io", "IMAGE", "-c", "read 0x8000000000000000 1"],
        ["io", "IMAGE", "-c", "write 9223372036854775807 1"],
    ])
    func overflow(arguments: [String]) throws {
        let result = try run(blkPath, arguments.map { $0 == "IMAGE" ? image : $0 })
        #expect(result.status == 64 || (result.status == 1 && result.stderr.contains("reach past the end")), "\(result)")
    }

    @Test("-U on a read-write open is refused with QEMU's words")
    func forceShareNeedsReadOnly() throws {
        let refused = try blk("io", "-U", image, "-c", "read 0 1")
        #expect(refused.status == 64)
        #expect(refused.stderr == "blk: force-share=on can only be used with read-only images\n")
    }

    @Test("the raw rows of the lock table: blk io holds, qemu-io opens", arguments: OpenKind.rawKinds, OpenKind.rawKinds)
    func blkIOHolds(holding: OpenKind, opening: OpenKind) throws {
        let holder = try blkHolder(holding, image)
        defer { holder.kill9() }
        let opened = try run("/usr/bin/qemu-io", opening.qemuArguments + ["-c", "read 0 512", image])
        if let conflict = expectedConflict(opener: opening.qemu, holder: holding.blk) {
            #expect(opened.stderr == "qemu-io: can't open device \(image): \(conflict)\nIs another process using the image [\(image)]?\n")
        } else {
            #expect(opened.status == 0, "\(opened)")
        }
    }

    @Test("the raw rows of the lock table: qemu-io holds, blk io opens", arguments: OpenKind.rawKinds, OpenKind.rawKinds)
    func qemuHoldsBlkIO(holding: OpenKind, opening: OpenKind) throws {
        let holder = try qemuHolder(holding, image)
        defer { _ = try? holder.finish() }
        let opened = try run(blkPath, ["io"] + Self.blkArguments(opening) + [image, "-c", "read 0 512"])
        if let conflict = expectedConflict(opener: opening.blk, holder: holding.qemu) {
            #expect(opened.status == 75)
            #expect(opened.stderr.hasPrefix("blk: Could not open '\(image)': \(conflict)\nIs another process using the image [\(image)]?\nheld by pid \(holder.pid) (qemu-io): holds consistent read"), "\(opened)")
        } else {
            #expect(opened.status == 0, "\(opened)")
        }
    }

    static func blkArguments(_ kind: OpenKind) -> [String] {
        switch kind.name {
        case "raw read-write": ["-f", "raw"]
        case "raw read-only": ["-f", "raw", "-r"]
        default: ["-f", "raw", "-r", "-U"]
        }
    }

    @Test("info and create name the image's holders; create refuses an image in use")
    func infoAndCreateBesideQEMU() throws {
        let writer = try qemuHolder(OpenKind.rawKinds[0], image)
        defer { _ = try? writer.finish() }
        let info = try blk("info", image)
        #expect(info.status == 0)
        #expect(info.stdout.contains("virtual size: 8 MiB (8388608 bytes)"))
        #expect(info.stdout.contains("  pid \(writer.pid) (qemu-io): holds consistent read, write"))
        let recreate = try blk("create", "-f", "raw", image, "1M")
        #expect(recreate.status == 75)
        #expect(recreate.stderr.hasPrefix("blk: Failed to get shared \"consistent read\" lock\nIs another process using the image [\(image)]?\nheld by pid \(writer.pid) (qemu-io)"), "\(recreate)")
        #expect(try FileManager.default.attributesOfItem(atPath: image)[.size] as? Int == 8 << 20, "the image in use was not truncated")
    }

    @Test("convert copies byte for byte and leaves holes as holes")
    func convertCopies() throws {
        _ = try blk("io", "-f", "raw", image, "-c", "write -P 0x42 1M 64k", "-c", "write -P 0x43 7M 4k")
        let copy = scratch.directory + "/copy.raw"
        let converted = try blk("convert", "-f", "raw", "-O", "raw", image, copy)
        #expect(converted.status == 0, "\(converted)")
        #expect(FileManager.default.contents(atPath: copy) == FileManager.default.contents(atPath: image))
        let compared = try run("/usr/bin/qemu-img", ["compare", "-f", "raw", "-F", "raw", image, copy])
        #expect(compared.status == 0, "\(compared)")
        var status = stat()
        stat(copy, &status)
        #expect(Int64(status.st_blocks) * 512 < 1 << 20, "zero runs were not written")
    }
}
