// `blk amend`: round trips of compat and refcount_bits with the guest data unchanged (qemu-img
// compare against a raw copy made before), `qemu-img check` clean and `qemu-img info` agreeing;
// blk's amends undone by qemu-img and the reverse; QEMU's refusals in QEMU's words.
import Foundation
import Testing

/// An image with data, zero clusters (one of them keeping its host cluster) and unallocated
/// space, its guest bytes copied to a raw file to compare against; with `backing`, an overlay
/// whose zero clusters hide the backing image's data.
struct AmendFixture {
    let image: String
    let original: String

    init(_ scratch: Scratch, name: String = "amend.qcow2", backing: Bool = false, clusterSize: String = "64k") throws {
        image = scratch.directory + "/" + name
        if backing {
            let base = scratch.directory + "/base-\(name)"
            try qemuImg(["create", "-q", "-f", "qcow2", base, "8M"])
            try qemuIO(["-f", "qcow2", "-c", "write -P 0x33 0 8M", base])
            try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", "-b", URL(fileURLWithPath: base).lastPathComponent,
                         "-F", "qcow2", image])
        } else {
            try qemuImg(["create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", image, "8M"])
        }
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -z 2M 128k", "-c", "write -P 0x22 3M 64k",
                    "-c", "write -z 3M 64k", "-c", "write -P 0x44 5M 192k", image])
        original = image + ".raw"
        try qemuImg(["convert", "-O", "raw", image, original])
    }

    /// The guest data unchanged, both checkers clean, and qemu-img info showing `compat` and
    /// `refcountBits`.
    func expectSound(compat: String, refcountBits: Int, lazyRefcounts: Bool = false,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        let compared = try run("/usr/bin/qemu-img", ["compare", "-F", "raw", image, original])
        #expect(compared.status == 0, "\(compared)", sourceLocation: sourceLocation)
        let qemuCheck = try run("/usr/bin/qemu-img", ["check", image])
        #expect(qemuCheck.status == 0, "\(qemuCheck)", sourceLocation: sourceLocation)
        let blkCheck = try blk("check", image)
        #expect(blkCheck.status == 0, "\(blkCheck)", sourceLocation: sourceLocation)
        let info = try run("/usr/bin/qemu-img", ["info", "--output=json", image]).stdout
        #expect(info.contains("\"compat\": \"\(compat)\""), "\(info)", sourceLocation: sourceLocation)
        #expect(info.contains("\"refcount-bits\": \(refcountBits)"), "\(info)", sourceLocation: sourceLocation)
        if compat == "1.1" {
            #expect(info.contains("\"lazy-refcounts\": \(lazyRefcounts)"), "\(info)", sourceLocation: sourceLocation)
        }
        let blkInfo = try blk("info", "--json", image).stdout
        #expect(blkInfo.contains("\"compat\" : \"\(compat)\"") && blkInfo.contains("\"refcount-bits\" : \(refcountBits)"),
                "\(blkInfo)", sourceLocation: sourceLocation)
    }
}

@Suite("blk amend")
struct AmendTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    @Test("compat 1.1 → 0.10 → 1.1, with and without a backing image", arguments: [false, true])
    func compatRoundTrip(backing: Bool) throws {
        let fixture = try AmendFixture(scratch, backing: backing)
        let down = try blk("amend", "-o", "compat=0.10", fixture.image)
        #expect(down.status == 0 && down.stdout.isEmpty && down.stderr.isEmpty, "\(down)")
        try fixture.expectSound(compat: "0.10", refcountBits: 16)
        #expect(try blk("amend", "-o", "compat=1.1,lazy_refcounts=on", fixture.image).status == 0)
        try fixture.expectSound(compat: "1.1", refcountBits: 16, lazyRefcounts: true)
        #expect(try blk("amend", "-o", "lazy_refcounts=off", fixture.image).status == 0)
        try fixture.expectSound(compat: "1.1", refcountBits: 16)
    }

    @Test("refcount_bits 16 → 1 → 64 → 16, and a size beside it")
    func refcountWidthRoundTrip() throws {
        let fixture = try AmendFixture(scratch)
        for bits in [1, 64, 16] {
            let amended = try blk("amend", "-o", "refcount_bits=\(bits)", fixture.image)
            #expect(amended.status == 0, "\(amended)")
            try fixture.expectSound(compat: "1.1", refcountBits: bits)
        }
        #expect(try blk("amend", "-o", "refcount_bits=4,size=16M", fixture.image).status == 0)
        let info = try run("/usr/bin/qemu-img", ["info", "--output=json", fixture.image]).stdout
        #expect(info.contains("\"virtual-size\": 16777216") && info.contains("\"refcount-bits\": 4"), "\(info)")
        #expect(try run("/usr/bin/qemu-img", ["check", fixture.image]).status == 0)
        try qemuIO(["-f", "qcow2", "-c", "read -P 0x44 5M 192k", "-c", "read -P 0 8M 8M", fixture.image])
    }

    @Test("what blk amends, qemu-img amends back, and the reverse")
    func interop() throws {
        let fixture = try AmendFixture(scratch)
        #expect(try blk("amend", "-o", "refcount_bits=8", fixture.image).status == 0)
        try qemuImg(["amend", "-o", "refcount_bits=16,compat=0.10", fixture.image])
        try fixture.expectSound(compat: "0.10", refcountBits: 16)
        #expect(try blk("amend", "-o", "compat=1.1,refcount_bits=2", fixture.image).status == 0)
        try fixture.expectSound(compat: "1.1", refcountBits: 2)
        try qemuImg(["amend", "-o", "refcount_bits=32", fixture.image])
        #expect(try blk("amend", "-o", "refcount_bits=16,compat=0.10", fixture.image).status == 0)
        try fixture.expectSound(compat: "0.10", refcountBits: 16)
        try qemuImg(["amend", "-o", "compat=1.1", fixture.image])
        try fixture.expectSound(compat: "1.1", refcountBits: 16)
        // An overlay's backing name moves with the header, both ways, as each tool lays it out.
        let overlay = try AmendFixture(scratch, name: "overlay.qcow2", backing: true)
        #expect(try blk("amend", "-o", "compat=0.10", overlay.image).status == 0)
        try qemuImg(["amend", "-o", "compat=1.1", overlay.image])
        #expect(try blk("amend", "-o", "compat=0.10", overlay.image).status == 0)
        try overlay.expectSound(compat: "0.10", refcountBits: 16)
        #expect(try blk("amend", "-o", "compat=1.1", overlay.image).status == 0)
        try overlay.expectSound(compat: "1.1", refcountBits: 16)
        let info = try run("/usr/bin/qemu-img", ["info", overlay.image]).stdout
        #expect(info.contains("backing file: base-overlay.qcow2") && info.contains("backing file format: qcow2"), "\(info)")
    }

    @Test("refusals in qemu-img's words, the image untouched", arguments: [
        ("compat=0.10", "lazy_refcounts=on", 64, "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"),
        ("", "foo=1", 64, "Invalid parameter 'foo'"),
        ("", "cluster_size=4k", 64, "Invalid parameter 'cluster_size'\nThis option is only supported for image creation"),
        ("", "compat=0.9", 64, "Unknown compatibility level 0.9"),
        ("", "refcount_bits=3", 64, "Refcount width must be a power of two and may not exceed 64 bits"),
        ("", "refcount_bits=abc", 64, "Parameter 'refcount_bits' expects a number"),
        ("", "compat=0.10,refcount_bits=8", 64, "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"),
        ("", "backing_file=other.qcow2", 64, "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead."),
        ("refcount_bits=8", "compat=0.10", 69, "compat=0.10 requires refcount_bits=16"),
    ])
    func refusals(setup: String, options: String, status: Int32, message: String) throws {
        let image = try scratch.qcow2Image(size: "8M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 7 0 256k", image])
        if !setup.isEmpty { try qemuImg(["amend", "-o", setup, image]) }
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        let refused = try blk("amend", "-o", options, image)
        #expect(refused.status == status && refused.stderr == "blk: \(message)\n", "\(refused)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: image)) == before)
        // qemu-img refuses the same with the same words.
        let qemu = try run("/usr/bin/qemu-img", ["amend", "-o", options, image])
        #expect(qemu.status == 1 && qemu.stderr.hasPrefix("qemu-img: \(message)"), "\(qemu)")
    }

    @Test("a width too narrow for a refcount, a raw image and missing -o are refused")
    func otherRefusals() throws {
        let image = try scratch.qcow2Image(size: "8M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 7 0 64k", image])
        try qemuImg(["snapshot", "-c", "one", image])
        let narrow = try blk("amend", "-o", "refcount_bits=1", image)
        #expect(narrow.status == 69 && narrow.stderr.hasPrefix("blk: Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x")
                && narrow.stderr.hasSuffix("has a refcount of 2\n"), "\(narrow)")
        #expect(try run("/usr/bin/qemu-img", ["check", image]).status == 0)
        let raw = try scratch.rawImage()
        let refused = try blk("amend", "-f", "raw", "-o", "size=2M", raw)
        #expect(refused.status == 69 && refused.stderr == "blk: Format driver 'raw' does not support option amendment\n", "\(refused)")
        let usage = try blk("amend", image)
        #expect(usage.status == 64 && usage.stderr.contains("Must specify options (-o)"), "\(usage)")
    }

    @Test("the image is held as qemu-img holds it: a writer beside it keeps amend out")
    func lockedOut() throws {
        let image = try scratch.qcow2Image(size: "8M")
        let writer = try qemuHolder(OpenKind.qcow2Kinds[0], image)
        defer { _ = try? writer.finish() }
        let refused = try blk("amend", "-o", "refcount_bits=8", image)
        #expect(refused.status == 75, "\(refused)")
    }
}
