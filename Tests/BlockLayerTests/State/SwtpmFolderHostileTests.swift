// A swtpm state folder is written by the swtpm user, and root runs blk: links, FIFOs, huge
// sparse files and temporary files planted there (by `nobody`, through setpriv) redirect no
// export and no import, and what export and `state get` write is 0600 and the right owner's.
import Foundation
import Glibc
import Testing

@Suite("device-state store: hostile swtpm folders")
struct SwtpmFolderHostileTests {
    let scratch: Scratch
    static let nobody: uid_t = 65534

    init() throws { scratch = try Scratch() }

    /// A plain swtpm state file holding `blob` (swtpm 0.7.1's header and one data record).
    static func stateFile(_ blob: [UInt8]) -> Data {
        func bigEndian<Value: FixedWidthInteger>(_ value: Value) -> [UInt8] { withUnsafeBytes(of: value.bigEndian) { Array($0) } }
        return Data([2, 1] + bigEndian(UInt16(10)) + bigEndian(UInt16(0)) + bigEndian(UInt32(16 + blob.count))
                    + bigEndian(UInt16(1)) + bigEndian(UInt32(blob.count)) + blob)
    }

    /// An image whose store holds a permall and a volatile state, imported from a folder of root's.
    func imageWithState() throws -> String {
        let source = scratch.directory + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: false)
        try scratch.write(source + "/tpm2-00.permall", Self.stateFile(Array("permanent state".utf8)))
        try scratch.write(source + "/tpm2-00.volatilestate", Self.stateFile(Array("volatile state".utf8)))
        let image = try scratch.qcow2Image(size: "4M")
        let imported = try blk("state", "import", "--swtpm", source, image)
        #expect(imported.status == 0, "\(imported)")
        return image
    }

    /// A folder owned by `nobody`, as a VM's swtpm folder is owned by the swtpm user.
    func nobodysFolder(_ name: String) throws -> String {
        let folder = scratch.directory + "/" + name
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
        guard chown(folder, Self.nobody, Self.nobody) == 0, chmod(folder, 0o755) == 0 else { throw TestFailure("chown \(folder)") }
        return folder
    }

    /// Runs a shell command as `nobody`: the attacker's steps.
    func asNobody(_ command: String) throws {
        let done = try run("/usr/bin/setpriv", ["--reuid=\(Self.nobody)", "--regid=\(Self.nobody)", "--clear-groups", "/bin/sh", "-c", command])
        guard done.status == 0 else { throw TestFailure("as nobody: \(command): \(done)") }
    }

    /// A file only root may read, standing for /etc/shadow or another VM's state.
    func rootOnlyFile(_ name: String, _ contents: Data) throws -> String {
        let path = scratch.directory + "/" + name
        try scratch.write(path, contents)
        guard chmod(path, 0o600) == 0 else { throw TestFailure("chmod \(path)") }
        return path
    }

    func status(_ path: String) throws -> stat {
        var status = stat()
        guard lstat(path, &status) == 0 else { throw TestFailure("lstat \(path): \(String(cString: strerror(errno)))") }
        return status
    }

    @Test("export: links and a 0666 file planted under the temporary and state names redirect nothing; files are 0600 and the folder owner's")
    func exportIntoPlantedFolder() throws {
        let image = try imageWithState()
        let secret = try rootOnlyFile("secret", Data("root only\n".utf8))
        let folder = try nobodysFolder("tpm")
        // The temporary names blk used to write through, and the state file itself, as links to
        // the root-only file; a pre-created temporary file anyone may read.
        try asNobody("""
            ln -s \(secret) \(folder)/tpm2-00.permall.blk-tmp && ln -s \(secret) \(folder)/tpm2-00.permall && \
            umask 0 && : > \(folder)/tpm2-00.volatilestate.blk-tmp && chmod 666 \(folder)/tpm2-00.volatilestate.blk-tmp
            """)
        let exported = try blk("state", "export", "--swtpm", folder, image)
        #expect(exported.status == 0, "\(exported)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: secret)) == Data("root only\n".utf8), "the link target is untouched")
        #expect(try status(folder + "/tpm2-00.volatilestate.blk-tmp").st_size == 0, "the planted file received no state")
        for file in ["tpm2-00.permall", "tpm2-00.volatilestate", ".lock"] {
            let written = try status(folder + "/" + file)
            #expect(written.st_mode & S_IFMT == S_IFREG, "\(file) is a regular file")
            #expect(written.st_uid == Self.nobody && written.st_gid == Self.nobody, "\(file) belongs to the folder's owner, as swtpm_setup leaves it")
            if file != ".lock" { #expect(written.st_mode & 0o777 == 0o600, "\(file) has mode \(String(written.st_mode & 0o777, radix: 8))") }
        }
        #expect(FileManager.default.contents(atPath: folder + "/tpm2-00.permall") == Self.stateFile(Array("permanent state".utf8)))
        // What is left beside the state files is only what the attacker planted.
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(names == [".lock", "tpm2-00.permall", "tpm2-00.permall.blk-tmp", "tpm2-00.volatilestate", "tpm2-00.volatilestate.blk-tmp"], "\(names)")
    }

    @Test("export and import refuse a folder given as a link")
    func folderLink() throws {
        let image = try imageWithState()
        let target = scratch.directory + "/target"
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: false)
        let link = scratch.directory + "/link"
        guard symlink(target, link) == 0 else { throw TestFailure("symlink") }
        let exported = try blk("state", "export", "--swtpm", link, image)
        #expect(exported.status == 64 && exported.stderr.contains("is a symbolic link"), "\(exported)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: target).isEmpty)
        let imported = try blk("state", "import", "--swtpm", link, image)
        #expect(imported.status == 64 && imported.stderr.contains("is a symbolic link"), "\(imported)")
    }

    @Test("import refuses a state file that is a link (another VM's state), a FIFO, or larger than 16 MiB")
    func importRefusesWhatIsNotAStateFile() throws {
        let image = try scratch.qcow2Image(size: "4M")
        let otherVM = try rootOnlyFile("other-vm.permall", Self.stateFile(Array("another VM's secrets".utf8)))
        let linked = try nobodysFolder("linked")
        try asNobody("ln -s \(otherVM) \(linked)/tpm2-00.permall")
        let throughLink = try blk("state", "import", "--swtpm", linked, image)
        #expect(throughLink.status == 65 && throughLink.stderr.contains("is a symbolic link"), "\(throughLink)")

        let fifo = try nobodysFolder("fifo")
        try asNobody("mkfifo \(fifo)/tpm2-00.permall")
        // Before, the read waited for a writer for ever: this run would not end in time.
        let fromFIFO = try run(blkPath, ["state", "import", "--swtpm", fifo, image], within: 20)
        #expect(fromFIFO.status == 65 && fromFIFO.stderr.contains("is not a regular file (a FIFO)"), "\(fromFIFO)")

        // A sparse file with a valid header claiming 64 MiB of state: refused before it is read.
        let huge = try nobodysFolder("huge")
        let hugePath = huge + "/tpm2-00.permall"
        let size = 64 << 20
        var header = Self.stateFile([])
        header.replaceSubrange(6..<10, with: withUnsafeBytes(of: UInt32(size).bigEndian) { Data($0) })
        header.replaceSubrange(12..<16, with: withUnsafeBytes(of: UInt32(size - 16).bigEndian) { Data($0) })
        try scratch.write(hugePath, header)
        guard truncate(hugePath, off_t(size)) == 0 else { throw TestFailure("truncate") }
        let fromHuge = try blk("state", "import", "--swtpm", huge, image)
        #expect(fromHuge.status == 65 && fromHuge.stderr.contains("more than the 16 MiB"), "\(fromHuge)")
        #expect(try blk("state", "list", image).stdout.contains("no state yet"), "nothing was imported")
    }

    @Test("state get FILE writes mode 0600, replacing a link at FILE instead of writing through it")
    func getWritesPrivately() throws {
        let image = try imageWithState()
        let secret = try rootOnlyFile("secret", Data("root only\n".utf8))
        let output = scratch.directory + "/permall.out"
        guard symlink(secret, output) == 0 else { throw TestFailure("symlink") }
        let got = try run(blkPath, ["state", "get", image, "permall", output])
        #expect(got.status == 0, "\(got)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: secret)) == Data("root only\n".utf8))
        let written = try status(output)
        #expect(written.st_mode & S_IFMT == S_IFREG && written.st_mode & 0o777 == 0o600, "mode \(String(written.st_mode, radix: 8))")
        #expect(FileManager.default.contents(atPath: output) == Data("permanent state".utf8))
        let fresh = scratch.directory + "/fresh.out"
        #expect(try blk("state", "get", image, "volatile", fresh).status == 0)
        #expect(try status(fresh).st_mode & 0o777 == 0o600)
    }
}
