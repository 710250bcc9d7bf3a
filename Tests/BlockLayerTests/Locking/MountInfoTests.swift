// NFS lock hygiene (issue 7): which mounts keep locks to this host, what `--locking` does about
// it, and how an EIO after locking on NFS is reported. The mount table parser is pure, so these
// tests feed it mountinfo texts; no NFS server runs here, so the kernel's side (NLM, NFSv4 lease
// loss) is not exercised.
import BlockLayer
import BlockLocking
import Foundation
import Posix
import SystemPackage
import Testing

@Suite("mount table: locks that stay on this host")
struct MountInfoTests {
    static let table = """
        22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
        40 22 0:45 / /srv/nfs3 rw,relatime shared:20 - nfs server:/export rw,vers=3,rsize=1048576,nolock,proto=tcp,local_lock=all,addr=10.0.0.2
        41 22 0:46 / /srv/nfs4 rw,relatime - nfs4 server:/export rw,vers=4.2,rsize=1048576,hard,proto=tcp,clientaddr=10.0.0.3,local_lock=none,addr=10.0.0.2
        42 22 0:47 / /srv/nfs4-local rw,relatime - nfs4 server:/vm rw,vers=4.1,local_lock=posix,addr=10.0.0.2
        43 22 0:48 / /srv/nfs-flock rw,relatime - nfs server:/vm rw,vers=3,local_lock=flock,addr=10.0.0.2
        44 22 0:49 / /mnt/with\\040space rw,nosuid,nodev - fuse.sshfs user@host:/vm rw,user_id=0,group_id=0
        not a mount line
        """

    @Test("mountinfo lines are read field by field, escapes decoded, junk skipped")
    func parse() throws {
        let mounts = MountInfo.parse(Self.table)
        #expect(mounts.map(\.mountID) == [22, 40, 41, 42, 43, 44])
        let sshfs = try #require(mounts.last)
        #expect(sshfs.mountPoint == "/mnt/with space" && sshfs.fileSystemType == "fuse.sshfs" && sshfs.source == "user@host:/vm")
        #expect(sshfs.deviceMajor == 0 && sshfs.deviceMinor == 49 && sshfs.mountOptions == ["rw", "nosuid", "nodev"])
        #expect(mounts[1].superOptions.contains("nolock") && mounts[1].isNFS)
    }

    @Test("nolock and local_lock=all|posix keep locks here; local_lock=none|flock and local file systems do not")
    func reach() {
        let verdicts = MountInfo.parse(Self.table).map { ($0.mountPoint, $0.locksStayOnThisHost) }
        #expect(verdicts[0].1 == nil)
        #expect(verdicts[1].1 == "nfs mount /srv/nfs3 (server:/export) has nolock")
        #expect(verdicts[2].1 == nil, "NFSv4 with local_lock=none: locks go to the server")
        #expect(verdicts[3].1 == "nfs4 mount /srv/nfs4-local (server:/vm) has local_lock=posix")
        #expect(verdicts[4].1 == nil, "local_lock=flock keeps only flock(2) locks here, not fcntl ones")
        #expect(verdicts[5].1 == nil)
    }

    @Test("--locking auto warns, on refuses a read-write open (read-only: a warning), off says nothing")
    func decisions() throws {
        let scratch = try Scratch()
        let path = try scratch.rawImage()
        let descriptor = try FileDescriptor.open(path, .readWrite)
        defer { try? descriptor.close() }
        let nolock = MountInfo.parse(Self.table)[1], local = MountInfo.parse(Self.table)[0]

        let auto = try LockingDecision.decide(.auto, descriptor: descriptor, path: path, writable: true, mount: nolock)
        #expect(auto.flavor == .openFileDescription)
        #expect(auto.warnings == ["locks on \(path) do not reach other hosts (nfs mount /srv/nfs3 (server:/export) has nolock): a process on another host sharing this storage is not kept out"])
        #expect(throws: LockingError.self) {
            try LockingDecision.decide(.on, descriptor: descriptor, path: path, writable: true, mount: nolock)
        }
        do {
            _ = try LockingDecision.decide(.on, descriptor: descriptor, path: path, writable: true, mount: nolock)
        } catch {
            #expect(error.code == .unsupported && error.message.contains("--locking on cannot protect a read-write open"), "\(error)")
        }
        let readOnly = try LockingDecision.decide(.on, descriptor: descriptor, path: path, writable: false, mount: nolock)
        #expect(readOnly.flavor == .openFileDescription && readOnly.warnings.count == 1)
        // Reopening that read-only open read-write (ImageLocks.checkWritable) asks the same question.
        #expect(throws: LockingError.self) { try LockingDecision.refuseUnreachedWriter(.on, path: path, mount: nolock) }
        try LockingDecision.refuseUnreachedWriter(.auto, path: path, mount: nolock)
        try LockingDecision.refuseUnreachedWriter(.on, path: path, mount: local)
        #expect(try LockingDecision.decide(.off, descriptor: descriptor, path: path, writable: true, mount: nolock).warnings.isEmpty)
        #expect(try LockingDecision.decide(.on, descriptor: descriptor, path: path, writable: true, mount: local).warnings.isEmpty)
    }

    @Test("an EIO on a locked NFS file is a lost lock; other errors and other file systems are what they are")
    func lostLock() {
        let mounts = MountInfo.parse(Self.table)
        let eio = SystemCallError("pwrite", .ioError)
        let lost = BlockError.storageFailure(eio, "write at 0 of 'vm.qcow2'", lockedOn: mounts[2])
        #expect(lost.code == .lockLost && lost.message.contains("lock was lost") && lost.message.contains("server:/export"), "\(lost)")
        #expect(BlockError.storageFailure(eio, "write", lockedOn: mounts[0]).code == .ioError)
        #expect(BlockError.storageFailure(eio, "write", lockedOn: nil).code == .ioError, "not locked: just an I/O error")
        #expect(BlockError.storageFailure(SystemCallError("pwrite", .noSpace), "write", lockedOn: mounts[2]).code == .noSpace)
    }

    @Test("an open with --locking off reads nothing of /proc: no mount table, no fdinfo; a locking open does")
    func lockingOffReadsNoMountTable() throws {
        let scratch = try Scratch()
        let image = try scratch.qcow2Image(size: "1M")
        func procFilesOpened(locking: String) throws -> [Substring] {
            let trace = scratch.directory + "/trace-" + locking
            let traced = try run("/usr/bin/strace", ["-f", "-qq", "-e", "trace=openat", "-o", trace, blkPath,
                                                     "io", "--locking", locking, image, "-c", "read 0 512"])
            #expect(traced.status == 0, "\(traced)")
            return try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
                .filter { $0.contains("/proc/self/mountinfo") || $0.contains("/proc/self/fdinfo") }
        }
        #expect(try procFilesOpened(locking: "off").isEmpty)
        #expect(try !procFilesOpened(locking: "auto").isEmpty)
    }
}
