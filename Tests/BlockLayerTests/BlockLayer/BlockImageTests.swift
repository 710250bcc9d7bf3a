// The block layer's open, reopen and hand-over across real processes, and its behaviour when
// the storage misbehaves: the file shrinks under it, or the disk fills.
import Foundation
import Glibc
import Testing

@Suite("block images across processes")
struct BlockImageTests {
    let scratch: Scratch
    let image: String

    init() throws {
        scratch = try Scratch()
        image = try scratch.rawImage(bytes: 4 << 20)
    }

    @Test("a read-write open locks the raw bytes of interface.md's table: 100, 101 held, 201 not shared")
    func permissionBytes() throws {
        let process = try LineProcess.fixture()
        #expect(try process.request("image \(image) rw") == "ok 0")
        let bytes = try kernelLocks(on: image).flatMap { record in (record.firstByte...(record.lastByte ?? record.firstByte)).map { $0 } }
        #expect(bytes.sorted() == [100, 101, 201])
        #expect(try process.request("reopen 0 ro") == "ok")
        let after = try kernelLocks(on: image).flatMap { record in (record.firstByte...(record.lastByte ?? record.firstByte)).map { $0 } }
        #expect(after == [100], "a reopen read-only gives up write")
    }

    @Test("reopen read-write is refused while another writer exists, and the image stays read-only")
    func reopenRefused() throws {
        let writer = try LineProcess.fixture(), reader = try LineProcess.fixture()
        #expect(try reader.request("image \(image) ro") == "ok 0")
        #expect(try writer.request("image \(image) rw") == "ok 0")
        let refused = try reader.request("reopen 0 rw")
        #expect(refused.hasPrefix("err conflict Failed to get \"write\" lock\\nIs another process using the image [\(image)]?\\nheld by pid \(writer.pid)"))
        #expect(try kernelLocks(on: image).filter { $0.covers(byte: 101) }.count == 1, "only the writer holds write")
        #expect(try writer.request("close 0") == "ok")
        #expect(try reader.request("reopen 0 rw") == "ok")
    }

    @Test("migration hand-over: an inactive open takes over once the source inactivates")
    func handOver() throws {
        let source = try LineProcess.fixture(), destination = try LineProcess.fixture()
        #expect(try source.request("image \(image) rw") == "ok 0")
        #expect(try destination.request("image \(image) rw inactive") == "ok 0")
        #expect(try destination.request("read 0 0 4096") == "ok", "an inactive open may read")
        let early = try destination.request("activate 0")
        #expect(early.hasPrefix("err conflict Failed to get \"write\" lock\\nIs another process using the image"))
        #expect(try source.request("inactivate 0") == "ok")
        #expect(try destination.request("activate 0") == "ok")
        #expect(try source.request("activate 0").hasPrefix("err conflict"), "the source cannot take it back")
    }

    @Test("a qcow2 destination the source wrote past is refused activation as stale; a new open takes over; raw is not refused")
    func staleActivation() throws {
        let qcow2 = try scratch.qcow2Image(size: "16M")
        let source = try LineProcess.fixture(), destination = try LineProcess.fixture()
        for path in [qcow2, image] {
            #expect(try source.request("image \(path) rw") == "ok \(path == qcow2 ? 0 : 1)")
            #expect(try destination.request("image \(path) rw inactive") == "ok \(path == qcow2 ? 0 : 1)")
        }
        // The source allocates clusters the destination's cached tables know nothing of.
        #expect(try source.request("write 0 1048576 65536 7") == "ok")
        #expect(try source.request("write 1 1048576 65536 7") == "ok")
        #expect(try source.request("inactivate 0") == "ok")
        #expect(try source.request("inactivate 1") == "ok")
        let stale = try destination.request("activate 0")
        #expect(stale == "err stale '\(qcow2)' changed while this open was inactive (another process wrote it): open it again to take it over", "\(stale)")
        #expect(try kernelLocks(on: qcow2).isEmpty, "a refused activation keeps no lock")
        #expect(try destination.request("activate 1") == "ok", "raw caches nothing: the source's writes are read from the file")
        #expect(try destination.request("image \(qcow2) rw inactive") == "ok 2")
        #expect(try destination.request("activate 2") == "ok")
        #expect(try destination.request("write 2 2097152 65536 9") == "ok")
        #expect(try destination.request("close 2") == "ok")
        let checked = try run("/usr/bin/qemu-img", ["check", qcow2])
        #expect(checked.status == 0, "\(checked)")
    }

    @Test("an image that shrinks while open fails the read instead of inventing zeroes")
    func shrinkWhileOpen() throws {
        let process = try LineProcess.fixture()
        #expect(try process.request("image \(image) ro") == "ok 0")
        #expect(truncate(image, 4096) == 0)
        let answer = try process.request("read 0 1048576 4096")
        #expect(answer == "err io-error read at 1048576 of '\(image)' found the end of the file: the image shrank while open")
    }

    @Test("a full disk fails the write with ENOSPC, reported as a failure naming the cause")
    func noSpace() throws {
        let mountPoint = scratch.directory + "/small"
        mkdir(mountPoint, 0o755)
        let mounted = try run("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint])
        try #require(mounted.status == 0, "mounting a small tmpfs: \(mounted)")
        defer { _ = try? run("/bin/umount", [mountPoint]) }
        let full = mountPoint + "/disk.raw"
        #expect(try blk("create", "-f", "raw", full, "4M").status == 0)
        let written = try blk("io", "-f", "raw", full, "-c", "write -P 1 0 2M")
        #expect(written.status == 1)
        #expect(written.stdout.isEmpty, "no success reported")
        #expect(written.stderr.contains("write failed: write at ") && written.stderr.contains("No space left on device"), "\(written)")
    }
}
