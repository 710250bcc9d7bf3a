// SecretBytes: key material read from a file (a passphrase, a key before it becomes a
// SymmetricKey), in memory of its own that is zeroed when the last reference goes — Swift arrays
// may be copied behind our back, so secrets never live in one longer than a single expression.
import Glibc
import Posix
import SystemPackage

/// Key material in memory of its own, zeroed when released: Swift arrays may be copied behind
/// the program's back, so a secret kept in one could outlive every reference to it.
public final class SecretBytes: @unchecked Sendable {
    // Written only in init; read-only afterwards, so sharing across threads is safe.
    private let storage: UnsafeMutableRawBufferPointer

    /// Copies `bytes` in; zeroing the caller's copy stays the caller's job.
    public init(copying bytes: UnsafeRawBufferPointer) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        storage.copyMemory(from: bytes)
        count = bytes.count
    }

    /// Reads a whole file into secret memory. The file's bytes pass through no Swift array.
    public static func contents(ofFile path: String) throws(StateError) -> SecretBytes {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw StateError(errno == ENOENT ? .notFound : .invalidRequest, "Could not read the key file '\(path)': \(reason)")
        }
        defer { close(descriptor) }
        let limit = 64 << 10
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: limit + 1, alignment: 16)
        defer {
            explicit_bzero(buffer.baseAddress!, buffer.count)
            buffer.deallocate()
        }
        var filled = buffer.count
        if case .failure(let short) = FileDescriptor(rawValue: descriptor).readFully(into: buffer) {
            if let error = short.error { throw StateError(.invalidRequest, "Could not read the key file '\(path)': \(error.errno)") }
            filled = short.transferred
        }
        guard filled <= limit else { throw StateError(.wrongKey, "the key file '\(path)' is larger than 64 KiB: not a key") }
        return SecretBytes(copying: UnsafeRawBufferPointer(rebasing: buffer[0..<filled]))
    }

    /// The secret's length in bytes, known without exposing them (an empty passphrase is refused).
    public let count: Int

    /// Lends the bytes to `body` without copying them into an array; they must not escape it.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    deinit {
        explicit_bzero(storage.baseAddress!, storage.count)
        storage.deallocate()
    }
}
