// FullTransfer: reads and writes that move every byte asked for. read(2) and write(2) may move
// fewer bytes than asked (a signal, a pipe's capacity, a file's end), so every caller that wants
// all of them loops; the loop lives here once. Positional calls (pread, pwrite) serve image and
// state files, which many threads share; sequential ones serve pipes, journals and new files.
// They allocate nothing and make no call beyond the transfers: the file driver's I/O path runs
// through them.
import Glibc
import SystemPackage

/// A full transfer that ended before its last byte.
public struct ShortTransfer: Error, Sendable, Hashable {
    /// The bytes moved before it ended.
    public var transferred: Int
    /// Why it ended; nil when a call moved nothing without failing: the end of the file for a
    /// read, no progress for a write.
    public var error: SystemCallError?

    /// A short transfer as the loop that ended it sees it.
    public init(transferred: Int, error: SystemCallError?) {
        self.transferred = transferred
        self.error = error
    }
}

extension FileDescriptor {
    /// Reads `buffer.count` bytes at `byteOffset` (pread), however many calls it takes. Ends
    /// short at the end of the file, with `error` nil.
    @inlinable
    public func readFully(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) -> Result<Void, ShortTransfer> {
        transferFully("pread", buffer.count, waitingFor: nil) { done in
            Glibc.pread(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(byteOffset) + off_t(done))
        }
    }

    /// Writes all of `buffer` at `byteOffset` (pwrite), however many calls it takes.
    @inlinable
    public func writeFully(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) -> Result<Void, ShortTransfer> {
        transferFully("pwrite", buffer.count, waitingFor: nil) { done in
            Glibc.pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(byteOffset) + off_t(done))
        }
    }

    /// Reads until `buffer` is full or the stream ends (read), waiting on a non-blocking
    /// descriptor that has nothing yet. Ends short at the end of the stream, with `error` nil.
    public func readFully(into buffer: UnsafeMutableRawBufferPointer) -> Result<Void, ShortTransfer> {
        transferFully("read", buffer.count, waitingFor: Int16(POLLIN)) { done in
            Glibc.read(rawValue, buffer.baseAddress! + done, buffer.count - done)
        }
    }

    /// Everything up to the end of the stream, or its first `limit` bytes: a caller that refuses
    /// more than N bytes passes N + 1 and never holds more than that. `expectedCount` sizes the
    /// first buffer (a file's size, say); it doubles from there.
    public func readToEnd(limit: Int = .max, expectedCount: Int = 65536) -> Result<[UInt8], SystemCallError> {
        var bytes = [UInt8](repeating: 0, count: min(max(expectedCount, 1), limit))
        var filled = 0
        while filled < limit {
            if filled == bytes.count { bytes += [UInt8](repeating: 0, count: min(bytes.count, limit - bytes.count)) }
            let read = bytes.withUnsafeMutableBytes { readFully(into: UnsafeMutableRawBufferPointer(rebasing: $0[filled...])) }
            guard case .failure(let short) = read else {
                filled = bytes.count
                continue
            }
            if let error = short.error { return .failure(error) }
            filled += short.transferred
            break
        }
        bytes.removeSubrange(filled...)
        return .success(bytes)
    }

    /// Writes all of `buffer` at the file position (write), waiting on a non-blocking descriptor
    /// that is full.
    public func writeFully(_ buffer: UnsafeRawBufferPointer) -> Result<Void, ShortTransfer> {
        transferFully("write", buffer.count, waitingFor: Int16(POLLOUT)) { done in
            Glibc.write(rawValue, buffer.baseAddress! + done, buffer.count - done)
        }
    }

    /// The loop: `call(done)` moves bytes from `done` on. EAGAIN, when `event` names the poll
    /// event to wait for, waits for it: a pipe set non-blocking by whoever shares it. Inlinable
    /// with its callers, so the I/O path pays no call and no closure context for it.
    @inlinable
    func transferFully(_ name: StaticString, _ count: Int, waitingFor event: Int16?,
                       _ call: (Int) -> Int) -> Result<Void, ShortTransfer> {
        var done = 0
        while done < count {
            switch valueOrErrno(name, { call(done) }) {
            case .success(0):
                return .failure(ShortTransfer(transferred: done, error: nil))
            case .success(let count):
                done += count
            case .failure(let failure) where failure.errno == .wouldBlock && event != nil:
                var ready = pollfd(fd: rawValue, events: event!, revents: 0)
                _ = poll(&ready, 1, -1)
            case .failure(let failure):
                return .failure(ShortTransfer(transferred: done, error: failure))
            }
        }
        return .success(())
    }
}
