// A real file system that refuses every lock (Tests/Fixtures/nolockfs.py, on FUSE): what
// --locking on and auto do there, and what blk tells the user.
import Foundation
import Glibc
import Testing

/// The FUSE file system mounted on a fresh folder, unmounted when done.
final class NoLockMount {
    let mountPoint: String
    let image: String
    private let server: LineProcess

    init(in scratch: Scratch) throws {
        mountPoint = scratch.directory + "/nolock"
        mkdir(mountPoint, 0o755)
        let script = testsDirectory.appendingPathComponent("Fixtures/nolockfs.py").path
        server = try LineProcess("/usr/bin/python3", [script, mountPoint])
        image = mountPoint + "/image.raw"
        guard eventually(within: 20, { FileManager.default.fileExists(atPath: image) }) else {
            throw TestFailure("nolockfs did not mount: \(server.stderr)")
        }
    }

    deinit {
        let unmount = FileManager.default.fileExists(atPath: "/usr/bin/fusermount3") ? "/usr/bin/fusermount3" : "/usr/bin/fusermount"
        // Lazy: a process of the test may still have the image open; the server exits once detached.
        _ = try? run(unmount, ["-u", "-z", mountPoint])
        _ = try? server.finish()
    }
}

@Suite("a file system without locks")
struct UnsupportedFileSystemTests {
    @Test("locking on refuses with exit 69, auto opens without locks, off does not ask")
    func lockingModes() throws {
        let scratch = try Scratch()
        let mount = try NoLockMount(in: scratch)
        let fixture = try LineProcess.fixture()
        let refused = try fixture.request("open \(mount.image) rw on")
        #expect(refused == "err unsupported the file system of \(mount.image) does not support locks (No locks available)")
        let auto = try fixture.open(mount.image, "rw", mode: "auto")
        #expect(try fixture.request("perms \(auto) consistent-read,write write") == "ok")
        let off = try fixture.open(mount.image, "rw", mode: "off")
        #expect(try fixture.request("lock \(off) exclusive") == "ok")
        #expect(try fixture.finish() == 0)
    }

    @Test("blk hold and blk locks say the file system cannot lock, exit 69")
    func commandsExplain() throws {
        let scratch = try Scratch()
        let mount = try NoLockMount(in: scratch)
        let held = try blk("hold", mount.image, "--", "true")
        #expect(held.status == 69)
        try expectGolden("unsupported-hold", transcript("blk hold IMAGE -- true", held, placeholders: [(mount.image, "IMAGE")]))
        let listed = try blk("locks", mount.image)
        #expect(listed.status == 69)
        try expectGolden("unsupported-locks", transcript("blk locks IMAGE", listed, placeholders: [(mount.image, "IMAGE")]))
    }
}
