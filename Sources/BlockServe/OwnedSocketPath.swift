// OwnedSocketPath: the Unix socket's path, made safe against other local users. The server
// never unlinks or follows a path it did not create: if anything is at the path (a file, a
// stale socket, a symlink planted to make us clobber another file) binding is refused. The
// socket is created with mode 0600 (umask 0177 around bind(2), so there is no moment in which
// it is open to others), and on exit it is removed only if the path still names the socket we
// bound: same device and inode.
import BlockLayer
import Glibc

/// The socket file this process bound, to remove on exit if it is still ours.
struct OwnedSocketPath: Sendable {
    let path: String
    private let device: UInt64
    private let inode: UInt64

    /// Refuses a path where something already is (without following a symlink there).
    static func checkFree(_ path: String) throws(BlockError) {
        var status = stat()
        if lstat(path, &status) == 0 {
            throw BlockError(.conflict, "'\(path)' already exists: blk serve creates its socket itself and does not replace or remove a file it did not create")
        }
    }

    /// Runs `bind` with a umask that leaves the socket to its owner alone.
    static func bindingOwnerOnly<Value>(_ bind: () async throws -> Value) async rethrows -> Value {
        let previous = umask(0o177)
        defer { umask(previous) }
        return try await bind()
    }

    /// The socket now at `path`, which this process has just bound.
    init(boundAt path: String) throws(BlockError) {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else {
            throw BlockError(.ioError, "the socket bound at '\(path)' is not there")
        }
        self.path = path
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
    }

    /// Removes the socket if the path still names it.
    func removeIfOurs() {
        var status = stat()
        guard lstat(path, &status) == 0, UInt64(status.st_dev) == device, UInt64(status.st_ino) == inode else { return }
        unlink(path)
    }
}
