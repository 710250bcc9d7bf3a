// HandoffPeer: the waiting side of the hand-over benchmark, a `blk bench handoff-peer` process.
// For each "g" on its stdin it waits for the exclusive transaction lock (blocking in the
// kernel), notes the time it got it, releases, and writes the time (8 bytes) to stdout.
import BlockLocking
import CLinuxLocking
import FoundationEssentials
import Glibc
import Posix
import SystemPackage

package final class HandoffPeer {
    /// Whose locking the peer times: BlockLocking's transaction lock, or the raw fcntl baseline.
    package enum Mode: String, Sendable, CaseIterable { case ours, raw }

    private let process: BenchProcess

    init(path: String, mode: Mode) throws {
        process = try BenchProcess(BenchPrograms.blk, ["bench", "handoff-peer", "--mode", mode.rawValue, path],
                                   stdin: .pipe, stdout: .pipe)
    }

    var isRunning: Bool { process.isRunning }

    func startWaiting() { _ = [UInt8(ascii: "g")].withUnsafeBytes { FileDescriptor(rawValue: process.input!).writeFully($0) } } // a peer gone shows in acquiredAt

    func acquiredAt() throws -> Int64 {
        var acquiredAt: Int64 = 0
        let read = withUnsafeMutableBytes(of: &acquiredAt) { FileDescriptor(rawValue: process.output!).readFully(into: $0) }
        guard case .success = read else { throw LockingError(.ioError, "the hand-over peer process stopped") }
        return acquiredAt
    }

    func stop() {
        process.closeInput()
        process.wait()
    }

    /// The peer's side, in the process `blk bench handoff-peer` starts: for each byte on stdin,
    /// wait for the transaction lock on `image`, note the time, release, and write the time.
    package static func serve(image: String, mode: Mode) throws {
        let descriptor = try FileDescriptor.open(image, .readWrite, options: [.closeOnExec])
        let locks = try ImageLocks(descriptor: descriptor, path: image, mode: .on, writable: true)
        var command: UInt8 = 0
        while case .success = withUnsafeMutableBytes(of: &command, { FileDescriptor.standardInput.readFully(into: $0) }) {
            var acquiredAt: Int64
            switch mode {
            case .ours:
                try locks.transaction.acquire(.exclusive, deadline: .after(.seconds(10)))
                acquiredAt = currentMonotonicNanoseconds()
                try locks.transaction.release(.exclusive)
            case .raw:
                rawLock(descriptor, F_WRLCK, LockByte.transaction, command: Int32(blk_F_OFD_SETLKW))
                acquiredAt = currentMonotonicNanoseconds()
                rawLock(descriptor, F_UNLCK, LockByte.transaction)
            }
            _ = write(STDOUT_FILENO, &acquiredAt, 8)
        }
    }
}
