// Scratch: a temporary folder with images in it, removed when the test is done.
import Foundation
import Glibc
import SystemPackage
@testable import BlockLocking

final class Scratch {
    let directory: String

    init() throws {
        var template = Array(URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("blk-test-XXXXXX").path.utf8CString)
        guard let made = mkdtemp(&template) else { throw TestFailure("mkdtemp failed") }
        directory = String(cString: made)
        chmod(directory, 0o755) // so a test may look at it as another user
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// A raw image of `bytes` zero bytes.
    func rawImage(_ name: String = "disk.raw", bytes: Int = 1 << 20) throws -> String {
        let path = directory + "/" + name
        guard FileManager.default.createFile(atPath: path, contents: nil) else { throw TestFailure("create \(path)") }
        guard truncate(path, off_t(bytes)) == 0 else { throw TestFailure("truncate \(path)") }
        return path
    }

    /// Writes a test's input file, or throws.
    func write(_ path: String, _ contents: Data) throws {
        guard FileManager.default.createFile(atPath: path, contents: contents) else { throw TestFailure("create \(path)") }
    }

    /// A qcow2 image made by the real qemu-img.
    func qcow2Image(_ name: String = "disk.qcow2", size: String = "64M") throws -> String {
        let path = directory + "/" + name
        let made = try run("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", path, size])
        guard made.status == 0 else { throw TestFailure("qemu-img create: \(made)") }
        return path
    }
}

/// The locks the kernel lists for a file in /proc/locks, granted and waiting.
func kernelLocks(on path: String) throws -> [LockRecord] {
    let descriptor = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec])
    defer { try? descriptor.close() }
    let identity = try LockHolderScan.identity(of: descriptor).get()
    // Foundation reads /proc files by their stat size (zero) and may stop at the first page.
    guard let text = readProcFile("/proc/locks") else { throw TestFailure("cannot read /proc/locks") }
    return LockRecord.records(in: text, on: identity)
}

/// Whether some request waits in the kernel for `byte` of `path` (proof of a blocking wait).
func hasKernelWaiter(on path: String, byte: Int64 = LockByte.transaction) throws -> Bool {
    try kernelLocks(on: path).contains { $0.isWaiting && $0.covers(byte: byte) }
}

/// BLK_SOAK=1: the long runs — every crash state, longer stress — for a machine with time.
enum Soak {
    static let enabled = ProcessInfo.processInfo.environment["BLK_SOAK"].map { !$0.isEmpty && $0 != "0" } ?? false
}
