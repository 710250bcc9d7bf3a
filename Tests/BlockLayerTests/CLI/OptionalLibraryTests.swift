// Libraries blk loads with dlopen (sanlock's client, libzstd) may be missing on a machine that
// has everything else: blk must then say which Debian package brings the library, since the
// obvious guess can be wrong (the sanlock daemon's package does not bring its client library).
// The library is hidden the way a machine without it looks to the dynamic loader: /dev/null
// bound over the file in a mount namespace of the command's own.
import Foundation
import Glibc
import Testing

@Suite("optional libraries loaded at run time", .enabled(if: getuid() == 0, "needs root for a mount namespace"))
struct OptionalLibraryTests {
    let scratch: Scratch
    init() throws { scratch = try Scratch() }

    /// Where the dynamic loader finds `soname`, from its cache.
    private func libraryPath(_ soname: String) throws -> String {
        let cache = try run("/sbin/ldconfig", ["-p"])
        let line = try #require(cache.stdout.split(separator: "\n").first { $0.contains(soname + " ") }, "\(soname) is not installed")
        return String(try #require(line.split(separator: " ").last))
    }

    /// Runs blk with `library` unreadable as a shared object.
    private func blkWithout(_ library: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Finished {
        let command = "mount --bind /dev/null \"$0\" && exec \"$@\""
        return try run("/usr/bin/unshare", ["-m", "/bin/sh", "-c", command, library, blkPath] + arguments, environment: environment)
    }

    @Test("without libsanlock_client.so.1, blk lease names the package libsanlock-client1")
    func sanlockClient() throws {
        let library = try libraryPath("libsanlock_client.so.1")
        var environment = ProcessInfo.processInfo.environment
        environment["BLK_LEASE_DIR"] = scratch.directory
        environment["BLK_HOST_ID"] = "1"
        let status = try blkWithout(library, ["lease", "status"], environment: environment)
        #expect(status.status == 69, "\(status)")
        #expect(status.stderr.contains("could not be loaded") && status.stderr.contains("apt-get install libsanlock-client1"), "\(status)")
    }

    @Test("without libzstd.so.1, a zstd-compressed image names the package libzstd1")
    func zstd() throws {
        let library = try libraryPath("libzstd.so.1")
        let source = try scratch.qcow2Image(size: "4M")
        try qemuIO(["-f", "qcow2", "-c", "write -P 0x61 0 1M", source])
        let compressed = scratch.directory + "/zstd.qcow2"
        try qemuImg(["convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", source, compressed])
        let read = try blkWithout(library, ["io", "-r", compressed, "-c", "read -P 0x61 0 1M"])
        #expect(read.status != 0, "\(read)")
        #expect(read.stderr.contains("install the Debian package libzstd1"), "\(read)")
    }
}
