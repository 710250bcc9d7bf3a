// Whole reads and writes through a descriptor, as FileHandle did them, but with the errno.
import Glibc
import Posix
import SystemPackage

/// Writes all of `bytes` to `descriptor` (Posix's full transfer: short, interrupted and would-block
/// writes are retried).
package func writeAll(_ descriptor: Int32, _ bytes: some Collection<UInt8>) throws(Errno) {
    if case .failure(let short) = Array(bytes).withUnsafeBytes({ FileDescriptor(rawValue: descriptor).writeFully($0) }) {
        throw short.error?.errno ?? .current
    }
}

/// Errors and warnings: a failed write to stderr leaves nobody to tell.
package func writeStandardError(_ text: String) { try? writeAll(STDERR_FILENO, text.utf8) }

/// Everything `descriptor` gives until its end, or its first `limit` bytes: a caller that
/// refuses more than N bytes passes N + 1 and never holds more than that.
package func readToEnd(_ descriptor: Int32, limit: Int = .max) throws(Errno) -> [UInt8] {
    try FileDescriptor(rawValue: descriptor).readToEnd(limit: limit).mapError(\.errno).get()
}
