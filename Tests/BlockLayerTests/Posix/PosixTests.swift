// The contract of the Posix module on real files and pipes: full transfers end short only at a
// file's end (with no error), past the end a read moves nothing and a write leaves a hole;
// SEEK_DATA and SEEK_HOLE find the data of a sparse file; fdatasync fails where the kernel says
// it must; and a signal that interrupts a blocked read is retried, not returned.
import Foundation
import Glibc
import Posix
import Synchronization
import SystemPackage
import Testing

@Suite("Posix system calls")
struct PosixTests {
    let scratch: Scratch

    init() throws { scratch = try Scratch() }

    /// A new file of `size` bytes, all a hole, open read-write.
    func sparseFile(_ name: String, size: Int64) throws -> FileDescriptor {
        let file = try FileDescriptor.open(scratch.directory + "/" + name, .readWrite, options: [.create, .closeOnExec],
                                           permissions: .ownerReadWrite)
        try file.resize(to: size)
        return file
    }

    @Test("a positional read ends short at the end of the file, with no error")
    func readPastTheEnd() throws {
        let file = try sparseFile("short", size: 0)
        defer { try? file.close() }
        #expect(Array("0123456789".utf8).withUnsafeBytes { file.writeFully(at: 0, from: $0) }.failure == nil)
        var buffer = [UInt8](repeating: 0xff, count: 8)
        let read = buffer.withUnsafeMutableBytes { file.readFully(at: 6, into: $0) }
        #expect(read.failure == ShortTransfer(transferred: 4, error: nil))
        #expect(buffer == Array("6789".utf8) + [0xff, 0xff, 0xff, 0xff])
        #expect(buffer.withUnsafeMutableBytes { file.readFully(at: 100, into: $0) }.failure == ShortTransfer(transferred: 0, error: nil))
        #expect(buffer.withUnsafeMutableBytes { file.readFully(at: 2, into: $0) }.failure == nil)
        #expect(buffer == Array("23456789".utf8))
    }

    @Test("a positional write past the end grows the file and leaves a hole that reads as zeroes")
    func writePastTheEnd() throws {
        let file = try sparseFile("grown", size: 4096)
        defer { try? file.close() }
        let at: Int64 = 3 << 20
        #expect([UInt8](repeating: 7, count: 100).withUnsafeBytes { file.writeFully(at: at, from: $0) }.failure == nil)
        #expect(try file.seek(offset: 0, from: .end) == at + 100)
        var gap = [UInt8](repeating: 0xff, count: 65536)
        #expect(gap.withUnsafeMutableBytes { file.readFully(at: 1 << 20, into: $0) }.failure == nil)
        #expect(gap.allSatisfy { $0 == 0 })
        #expect(try file.seekData(from: 0).get() == at / 4096 * 4096)
    }

    @Test("SEEK_DATA and SEEK_HOLE find the data of a sparse file, and nil past it")
    func seekOnASparseFile() throws {
        let size: Int64 = 4 << 20, dataStart: Int64 = 1 << 20, dataBytes = 65536
        let file = try sparseFile("sparse", size: size)
        defer { try? file.close() }
        #expect([UInt8](repeating: 1, count: dataBytes).withUnsafeBytes { file.writeFully(at: dataStart, from: $0) }.failure == nil)
        #expect(try file.seekData(from: 0).get() == dataStart)
        #expect(try file.seekData(from: dataStart + 100).get() == dataStart + 100)
        #expect(try file.seekHole(from: 0).get() == 0)
        #expect(try file.seekHole(from: dataStart).get() == dataStart + Int64(dataBytes))
        #expect(try file.seekData(from: dataStart + Int64(dataBytes)).get() == nil) // holes only, up to the end
        #expect(try file.seekHole(from: size).get() == nil)
        #expect(try file.seekHole(from: size - 1).get() == size - 1)

        // Punched out, the data is a hole again; the size stays.
        #expect(file.allocate([.punchHole, .keepSize], at: dataStart, byteCount: Int64(dataBytes)).failure == nil)
        #expect(try file.seekData(from: 0).get() == nil)
        #expect(try file.seek(offset: 0, from: .end) == size)
    }

    @Test("fallocate grows the file with blocks that read as zeroes")
    func allocateGrows() throws {
        let file = try sparseFile("allocated", size: 0)
        defer { try? file.close() }
        #expect(file.allocate(at: 0, byteCount: 1 << 20).failure == nil)
        var status = stat()
        #expect(fstat(file.rawValue, &status) == 0)
        #expect(status.st_size == 1 << 20)
        #expect(status.st_blocks * 512 >= 1 << 20)
        var buffer = [UInt8](repeating: 0xff, count: 4096)
        #expect(buffer.withUnsafeMutableBytes { file.readFully(at: 4096, into: $0) }.failure == nil)
        #expect(buffer.allSatisfy { $0 == 0 })
    }

    @Test("fdatasync succeeds on a read-only open and fails on a pipe and on a closed descriptor, naming the call")
    func synchronizeErrors() throws {
        let path = scratch.directory + "/synced"
        try sparseFile("synced", size: 4096).close()
        let readOnly = try FileDescriptor.open(path, .readOnly, options: [.closeOnExec])
        // Linux flushes a file through any open of it: a read-only descriptor is no obstacle.
        #expect(readOnly.synchronizeData().failure == nil)
        #expect(readOnly.synchronize().failure == nil)
        // A write through it fails at once, with EBADF and nothing moved.
        #expect([UInt8](repeating: 1, count: 10).withUnsafeBytes { readOnly.writeFully(at: 0, from: $0) }
            .failure == ShortTransfer(transferred: 0, error: SystemCallError("pwrite", .badFileDescriptor)))
        try readOnly.close()
        #expect(readOnly.synchronizeData().failure == SystemCallError("fdatasync", .badFileDescriptor))

        let pipe = try FileDescriptor.pipe()
        defer {
            try? pipe.readEnd.close()
            try? pipe.writeEnd.close()
        }
        #expect(pipe.writeEnd.synchronizeData().failure == SystemCallError("fdatasync", .invalidArgument))
        #expect(pipe.writeEnd.synchronize().failure == SystemCallError("fsync", .invalidArgument))
        #expect(pipe.readEnd.seekData(from: 0) == .failure(SystemCallError("lseek(SEEK_DATA)", .illegalSeek)))
    }

    @Test("a sequential write fills a full non-blocking pipe by waiting, and the reader gets every byte")
    func writeThroughAFullPipe() throws {
        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close() }
        #expect(fcntl(pipe.writeEnd.rawValue, F_SETFL, O_NONBLOCK) == 0)
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 * 31) } // 16 times a pipe's capacity
        let received = HandOver<Result<[UInt8], SystemCallError>>()
        Thread { received.put(pipe.readEnd.readToEnd()) }.start()
        #expect(bytes.withUnsafeBytes { pipe.writeEnd.writeFully($0) }.failure == nil)
        try pipe.writeEnd.close()
        #expect(received.take(within: 30) == .success(bytes))
    }

    @Test("readToEnd stops at its limit, and a short stream ends it with what came")
    func readToEndLimit() throws {
        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close() }
        #expect(Array("hello, world".utf8).withUnsafeBytes { pipe.writeEnd.writeFully($0) }.failure == nil)
        try pipe.writeEnd.close()
        #expect(pipe.readEnd.readToEnd(limit: 5, expectedCount: 2) == .success(Array("hello".utf8)))
        #expect(pipe.readEnd.readToEnd() == .success(Array(", world".utf8)))
        #expect(pipe.readEnd.readToEnd() == .success([]))
    }

    @Test("a read blocked in the kernel and interrupted by a signal is retried, and gets its bytes")
    func interruptedReadIsRetried() throws {
        // A handler without SA_RESTART: the kernel returns EINTR from the blocked read.
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in interruptions.add(1, ordering: .relaxed) }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        #expect(sigaction(SIGUSR2, &action, nil) == 0)
        let pipe = try FileDescriptor.pipe()
        defer {
            try? pipe.readEnd.close()
            try? pipe.writeEnd.close()
        }
        let reader = HandOver<pthread_t>()
        let received = HandOver<(ShortTransfer?, [UInt8])>()
        let before = interruptions.load(ordering: .relaxed)
        Thread {
            // Whoever started this process may have blocked the signal; this thread takes it.
            var unblocked = sigset_t()
            sigemptyset(&unblocked)
            sigaddset(&unblocked, SIGUSR2)
            pthread_sigmask(SIG_UNBLOCK, &unblocked, nil)
            reader.put(pthread_self())
            var bytes = [UInt8](repeating: 0, count: 6)
            let read = bytes.withUnsafeMutableBytes { pipe.readEnd.readFully(into: $0) }
            received.put((read.failure, bytes))
        }.start()
        let thread = try #require(reader.take(within: 30))
        #expect(eventually { isBlockedInRead(of: pipe.readEnd, count: 6) })
        #expect(pthread_kill(thread, SIGUSR2) == 0)
        #expect(eventually { interruptions.load(ordering: .relaxed) > before }, "the signal was handled")
        // Back in the read after the EINTR, not returned with it.
        #expect(eventually { isBlockedInRead(of: pipe.readEnd, count: 6) })
        #expect(received.isEmpty)
        #expect(Array("posix!".utf8).withUnsafeBytes { pipe.writeEnd.writeFully($0) }.failure == nil)
        let (failure, bytes) = try #require(received.take(within: 30))
        #expect(failure == nil)
        #expect(bytes == Array("posix!".utf8))
    }

    /// Whether a thread of this process is blocked in a call on `descriptor` for `count` bytes —
    /// read(2): nothing else here takes those arguments — as /proc/self/task/TID/syscall shows:
    /// the call's number, then its arguments in hex.
    func isBlockedInRead(of descriptor: FileDescriptor, count: Int) -> Bool {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []).contains { task in
            guard let line = try? String(contentsOfFile: "/proc/self/task/\(task)/syscall", encoding: .utf8) else { return false }
            let fields = line.split(separator: " ")
            return fields.count > 3 && fields[0] != "running" && fields[1] == "0x\(String(descriptor.rawValue, radix: 16))"
                && fields[3] == "0x\(String(count, radix: 16))"
        }
    }
}

/// Signals handled by the test's handler (a C function pointer captures nothing).
private let interruptions = Atomic(0)

/// A value one thread hands to another, and the wake-up that it is there.
private final class HandOver<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)
    private let arrived = DispatchSemaphore(value: 0)

    func put(_ handed: Value) {
        value.withLock { $0 = handed }
        arrived.signal()
    }

    func take(within seconds: Double) -> Value? {
        guard arrived.wait(timeout: .now() + seconds) == .success else { return nil }
        return value.withLock { $0 }
    }

    var isEmpty: Bool { value.withLock { $0 == nil } }
}

extension Result {
    /// The error, or nil on success: a Result of Void is not Equatable, its error is.
    var failure: Failure? {
        if case .failure(let error) = self { error } else { nil }
    }
}
