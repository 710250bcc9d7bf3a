// HandoffPeer: the waiting side of the hand-over benchmark, a `blk bench handoff-peer` process.
// For each "g" on its stdin it waits for the exclusive transaction lock (blocking in the
// kernel), notes the time it got it, releases, and writes the time (8 bytes) to stdout.
import ArgumentParser
import BlockLocking
import CLinuxLocking
import FoundationEssentials
import Glibc
import Posix
import SystemPackage

final class HandoffPeer {
    enum Mode: String, ExpressibleByArgument { case ours, raw }

    private let process: BenchProcess

    init(path: String, mode: Mode) throws {
        process = try BenchProcess(BenchPrograms.blk, ["bench", "handoff-peer", "--mode", mode.rawValue, path],
                                   stdin: .pipe, stdout: .pipe)
    }

    var isRunning: Bool { process.isRunning }

    func startWaiting() { try? writeAll(process.input!, "g".utf8) } // a peer gone shows in acquiredAt

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
}

struct HandoffPeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "handoff-peer", abstract: "The waiting process of `blk bench lock` (internal).", shouldDisplay: false)

    @Option var mode: HandoffPeer.Mode
    @Argument var image: String

    func run() throws {
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
