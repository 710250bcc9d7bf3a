// Whole reads and writes through a descriptor, as FileHandle did them, but with the errno.
import Glibc
import SystemPackage

/// Writes all of `bytes` to `descriptor`, retrying short and interrupted writes (and waiting on
/// a non-blocking descriptor that is full).
func writeAll(_ descriptor: Int32, _ bytes: some Collection<UInt8>) throws(Errno) {
    let failure: Errno? = Array(bytes).withUnsafeBytes { buffer in
        var done = 0
        while done < buffer.count {
            let count = write(descriptor, buffer.baseAddress! + done, buffer.count - done)
            if count > 0 {
                done += count
            } else if errno == EAGAIN {
                var ready = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
                _ = poll(&ready, 1, -1)
            } else if errno != EINTR {
                return Errno(rawValue: errno)
            }
        }
        return nil
    }
    if let failure { throw failure }
}

/// Errors and warnings: a failed write to stderr leaves nobody to tell.
func writeStandardError(_ text: String) { try? writeAll(STDERR_FILENO, text.utf8) }

/// Everything `descriptor` gives until its end, or its first `limit` bytes: a caller that
/// refuses more than N bytes passes N + 1 and never holds more than that.
func readToEnd(_ descriptor: Int32, limit: Int = .max) throws(Errno) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while bytes.count < limit {
        let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, min($0.count, limit - bytes.count)) }
        if count > 0 {
            bytes += chunk[0..<count]
        } else if count == 0 {
            return bytes
        } else if errno == EAGAIN {
            var ready = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&ready, 1, -1)
        } else if errno != EINTR {
            throw Errno(rawValue: errno)
        }
    }
    return bytes
}
