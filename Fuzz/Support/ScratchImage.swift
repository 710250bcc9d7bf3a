// ScratchImage: the file a fuzz target turns each input into, so the code under test reads and
// writes a real file through the kernel as it does in use. It lives in a folder of its own on
// tmpfs: a backing-file name in a hostile header resolves next to it and finds nothing else.
import Glibc
import Posix
import SystemPackage

public final class ScratchImage: @unchecked Sendable {
    public let path: String
    private let descriptor: CInt

    public init() {
        let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        let folder = "\(base)/blk-fuzz-\(getpid())"
        mkdir(folder, 0o700)
        path = "\(folder)/image"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        precondition(descriptor >= 0, "cannot create \(path)")
    }

    /// The file becomes `input`, then grows (sparse) to at least `minimumLength` bytes.
    public func replace(with input: UnsafeRawBufferPointer, minimumLength: Int = 0) {
        precondition(ftruncate(descriptor, 0) == 0)
        if case .failure = FileDescriptor(rawValue: descriptor).writeFully(at: 0, from: input) { preconditionFailure("cannot write \(path)") }
        if minimumLength > input.count { precondition(ftruncate(descriptor, off_t(minimumLength)) == 0) }
    }
}
