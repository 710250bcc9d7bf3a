// `blk serve` runs the blk-serve program beside blk: the server's own help and options reach it
// through blk, and a blk without blk-serve beside it says so with 69 rather than failing
// obscurely.
import Foundation
import Glibc
import Posix
import SystemPackage
import Testing

@Suite("blk serve: the blk-serve program")
struct ServeProgramTests {
    @Test("blk serve --help is the server's help, with its options")
    func helpIsTheServers() throws {
        let help = try run(blkPath, ["serve", "--help"], within: 30)
        #expect(help.status == 0, "\(help)")
        for option in ["USAGE: blk serve", "--socket", "--bind", "--export-name", "--persistent", "--discard", "--detect-zeroes", "--log-level", "--lease-dir"] {
            #expect(help.stdout.contains(option), "\(option) missing from: \(help)")
        }
    }

    @Test("a blk without blk-serve beside it fails with 69, naming blk-serve")
    func missingServer() throws {
        let scratch = try Scratch()
        let image = try scratch.rawImage()
        let lonely = scratch.directory + "/blk"
        try copyExecutable(blkPath, to: lonely)
        let refused = try run(lonely, ["serve", "-f", "raw", "--socket", scratch.directory + "/nbd.sock", image], within: 30)
        #expect(refused.status == 69, "\(refused)")
        #expect(refused.stderr.contains(scratch.directory + "/blk-serve"), "\(refused)")
        #expect(!FileManager.default.fileExists(atPath: scratch.directory + "/nbd.sock"))
    }
}

/// Copies a program through a close-on-exec descriptor: a copy open for writing that a child
/// spawned meanwhile by another test inherited would make running it fail with ETXTBSY.
private func copyExecutable(_ source: String, to destination: String) throws {
    let bytes = try Data(contentsOf: URL(fileURLWithPath: source))
    let descriptor = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o755)
    guard descriptor >= 0 else { throw TestFailure("open \(destination): errno \(errno)") }
    defer { close(descriptor) }
    if case .failure(let short) = bytes.withUnsafeBytes({ FileDescriptor(rawValue: descriptor).writeFully($0) }) {
        throw TestFailure("write \(destination): \(short)")
    }
}
