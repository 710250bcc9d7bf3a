// The backing image as a child node of its qcow2 overlay: it takes its locks from the overlay's
// parents as QEMU's backing children do (bdrv_default_perms_for_cow), shows in the overlay's
// subtree, is reached by the events the image is marked with, and a chain that loops or goes
// deeper than 64 images is still refused.
import BlockLayer
import BlockLocking
import Qcow2
import Testing

/// Raw, with a fault rule between the format and its file: a backing format that shows which
/// events reach it.
private enum RawFailingDuringBlobWrite: BlockFormat {
    static let formatName = "raw"
    static func matches(header: [UInt8]) -> Bool { true }
    static func open(file: BlockNode, context: FormatOpenContext) throws(BlockError) -> BlockNode {
        let rule = FaultRule(.read, .event(.blobWrite), occurrence: 1, always: true)
        return try RawFormat.open(file: BlockNode(driver: FaultInjectionDriver(file: file, rules: [rule]), children: [(.file, file)]),
                                  context: context)
    }
}

@Suite("the backing image as a child node")
struct BackingChildTests {
    let scratch: Scratch
    let base: String
    let top: String

    init() throws {
        scratch = try Scratch()
        base = scratch.directory + "/base.raw"
        top = scratch.directory + "/top.qcow2"
        try qemuImg(["create", "-q", "-f", "raw", base, "4M"])
        try qemuIO(["-f", "raw", "-c", "write -P 0xba 0 4M", base])
        try qemuImg(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", top, "4M"])
    }

    @Test("a writable overlay keeps writers of its raw backing file out, as a QEMU guest device does; readers may open it")
    func writerOfBackingRefused() throws {
        let holder = try LineProcess(blkPath, ["io", top, "-c", "sleep 600000"])
        defer { holder.kill9() }
        try waitUntilLocked(base, PermissionRequest(held: [.consistentRead], unshared: [.write, .resize]), by: holder)
        let writer = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write 0 512", base])
        #expect(writer.stderr == "qemu-io: can't open device \(base): Failed to get \"write\" lock\nIs another process using the image [\(base)]?\n")
        let reader = try run("/usr/bin/qemu-io", ["-r", "-f", "raw", "-c", "read -P 0xba 0 512", base])
        #expect(reader.status == 0 && !reader.stdout.contains("failed"), "\(reader)")
    }

    @Test("a read-only overlay shares write of its raw backing file, as QEMU's backing child does")
    func readOnlyOverlaySharesBacking() throws {
        let holder = try LineProcess(blkPath, ["io", "-r", top, "-c", "sleep 600000"])
        defer { holder.kill9() }
        try waitUntilLocked(base, PermissionRequest(held: [.consistentRead], unshared: []), by: holder)
        #expect(try kernelLocks(on: base).allSatisfy { !$0.covers(byte: 201) && !$0.covers(byte: 203) })
        let writer = try run("/usr/bin/qemu-io", ["-f", "raw", "-c", "write -P 0xba 0 512", base])
        #expect(writer.status == 0 && writer.stderr.isEmpty, "\(writer)")
    }

    @Test("the subtree reaches the backing nodes, and so do the events the image is marked with")
    func subtreeAndEvents() throws {
        let image = try BlockImage.open(top, formats: [Qcow2Format.self, RawFailingDuringBlobWrite.self])
        #expect(image.root.subtree.map(\.driver.formatName) == ["qcow2", "file", "raw", "blkdebug", "file"])
        #expect(image.root.children.map(\.role) == [.file, .backing])
        #expect(image.root.writableSubtree.map(\.driver.formatName) == ["qcow2", "file"])
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { buffer.deallocate() }
        try image.read(at: 0, into: buffer)
        #expect(buffer.allSatisfy { $0 == 0xba })
        let failed = #expect(throws: BlockError.self) {
            try image.during(.blobWrite) { () throws(BlockError) in try image.read(at: 0, into: buffer) }
        }
        #expect(failed?.cause?.systemCall == "injected by read@blob_write:1:eio:always", "\(String(describing: failed))")
        try image.read(at: 0, into: buffer)
    }

    @Test("an inactive open (a migration destination) locks its backing file when it is activated, and frees it when inactivated")
    func backingLockedOnActivation() throws {
        let image = try BlockImage.open(top, options: OpenOptions(writable: true, inactive: true), formats: [Qcow2Format.self, RawFormat.self])
        #expect(try kernelLocks(on: base).isEmpty)
        try image.activate()
        let bytes = try kernelLocks(on: base).map(\.firstByte).sorted()
        #expect(bytes == [100, 201, 203], "\(bytes)")
        try image.inactivate()
        #expect(try kernelLocks(on: base).isEmpty)
    }

    @Test("a chain of 64 images opens; one of 65 is refused as too deep")
    func chainDepth() throws {
        var below = "base.raw", format = "raw"
        for index in 1...64 {
            let name = "layer\(index).qcow2"
            try qemuImg(["create", "-q", "-u", "-f", "qcow2", "-b", below, "-F", format, scratch.directory + "/" + name, "4M"])
            (below, format) = (name, "qcow2")
        }
        let formats: [any BlockFormat.Type] = [Qcow2Format.self, RawFormat.self]
        let deepest = try BlockImage.open(scratch.directory + "/layer63.qcow2", formats: formats)
        #expect(deepest.root.subtree.count == 63 * 2 + 2)
        let refused = #expect(throws: BlockError.self) { try BlockImage.open(scratch.directory + "/layer64.qcow2", formats: formats) }
        #expect(refused?.code == .corrupt && refused?.message.contains("the backing chain is too deep") == true, "\(String(describing: refused))")
    }
}
