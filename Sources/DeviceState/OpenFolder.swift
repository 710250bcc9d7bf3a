// OpenFolder: a folder held open by descriptor, whose files are read and replaced by name only
// (openat, renameat). A folder someone else can write (a swtpm state folder owned by the swtpm
// user) is hostile ground for root: a name in it may be a link to a root-only file, a FIFO that
// never answers, a sparse file of gigabytes, or a temporary file planted before we create it.
// So a file is read only when it is a regular file no larger than the caller's limit, and a file
// is written under a fresh unpredictable name created exclusively, then renamed into place.
import Glibc
import Posix
import SystemPackage

/// A folder another user can write, handled so a link, FIFO or planted file in it redirects
/// nothing: every file is reached by name through the folder's descriptor, never by path.
public final class OpenFolder {
    /// For messages only: files are reached through the descriptor, never by this path.
    public let path: String
    let descriptor: Int32
    /// Who owns the folder: root gives what it writes here to that owner (as swtpm_setup does),
    /// so the program that uses the folder can read its files.
    let ownerID: uid_t
    let groupID: gid_t

    /// Opens the folder at `path`. With `followingLink` false, a final component that is a
    /// symbolic link is refused: whoever can write the link's folder could aim it anywhere.
    public init(path: String, followingLink: Bool) throws(StateError) {
        self.path = path
        let flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | (followingLink ? 0 : O_NOFOLLOW)
        let opened = open(path, flags)
        guard opened >= 0 else {
            // O_NOFOLLOW|O_DIRECTORY on a link fails with ENOTDIR (ELOOP on older kernels).
            var status = stat()
            if !followingLink && (errno == ELOOP || errno == ENOTDIR) && lstat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFLNK {
                throw StateError(.invalidRequest, "'\(path)' is a symbolic link: give the folder itself (a link could point anywhere its owner likes)")
            }
            throw Self.failure("open the folder", path)
        }
        var status = stat()
        guard fstat(opened, &status) == 0 else {
            let failure = Self.failure("stat", path)
            close(opened)
            throw failure
        }
        descriptor = opened
        ownerID = status.st_uid
        groupID = status.st_gid
    }

    deinit { close(descriptor) }

    /// The bytes of the regular file `name`, or nil when there is none. A link, a FIFO, a device
    /// or a folder is refused, and so is a file larger than `limit` bytes, before any of it is read.
    public func contents(of name: String, limit: Int) throws(StateError) -> [UInt8]? {
        // O_NONBLOCK: a FIFO opens at once (and is then refused) instead of waiting for a writer.
        let file = openat(descriptor, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)
        guard file >= 0 else {
            if errno == ENOENT { return nil }
            if errno == ELOOP { throw StateError(.corrupt, "'\(location(of: name))' is a symbolic link; only a regular file is read") }
            throw Self.failure("open", location(of: name))
        }
        defer { close(file) }
        var status = stat()
        guard fstat(file, &status) == 0 else { throw Self.failure("stat", location(of: name)) }
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw StateError(.corrupt, "'\(location(of: name))' is not a regular file (\(Self.kind(of: status.st_mode))); only a regular file is read")
        }
        guard status.st_size <= limit else {
            throw StateError(.corrupt, "'\(location(of: name))' holds \(status.st_size) bytes, more than the \(limit >> 20) MiB such a file may hold")
        }
        // The file may grow after fstat: read at most limit + 1 bytes, so memory stays bounded.
        let bytes: [UInt8]
        switch FileDescriptor(rawValue: file).readToEnd(limit: limit + 1, expectedCount: Int(status.st_size) + 1) {
        case .success(let read): bytes = read
        case .failure(let failure): throw Self.failure("read", location(of: name), failure.errno)
        }
        guard bytes.count <= limit else {
            throw StateError(.corrupt, "'\(location(of: name))' grew past the \(limit >> 20) MiB such a file may hold while it was read")
        }
        return bytes
    }

    /// Replaces `name` with a new file holding `bytes`, mode 0600: written under an unpredictable
    /// name created exclusively (never an existing file or a link), fsync'd, then renamed over
    /// `name` — which replaces a link there rather than writing through it. With
    /// `givingToFolderOwner`, a root caller makes the file the folder owner's. The caller syncs the
    /// folder (`sync`) once its renames are done.
    public func replace(_ name: String, with bytes: [UInt8], givingToFolderOwner: Bool) throws(StateError) {
        let (file, temporary) = try createTemporary(for: name)
        do throws(StateError) {
            defer { close(file) }
            // The mode asked of openat is cut by the umask; the file is 0600 whatever it is.
            guard fchmod(file, 0o600) == 0 else { throw Self.failure("set the mode of", location(of: temporary)) }
            if givingToFolderOwner && geteuid() == 0 && fchown(file, ownerID, groupID) != 0 {
                throw Self.failure("give the folder's owner", location(of: temporary))
            }
            if case .failure(let short) = bytes.withUnsafeBytes({ FileDescriptor(rawValue: file).writeFully($0) }) {
                throw Self.failure("write", location(of: temporary), short.error?.errno ?? .current)
            }
            if case .failure(let failure) = FileDescriptor(rawValue: file).synchronize() {
                throw Self.failure("fsync", location(of: temporary), failure.errno)
            }
            guard renameat(descriptor, temporary, descriptor, name) == 0 else { throw Self.failure("rename", location(of: temporary)) }
        } catch {
            unlinkat(descriptor, temporary, 0)
            throw error
        }
    }

    /// Removes `name` (a link itself, never what it points to); nothing to do when it is absent.
    public func remove(_ name: String) throws(StateError) {
        guard unlinkat(descriptor, name, 0) == 0 || errno == ENOENT else { throw Self.failure("remove", location(of: name)) }
    }

    /// Makes the renames and removals in the folder durable.
    public func sync() throws(StateError) {
        if case .failure(let failure) = FileDescriptor(rawValue: descriptor).synchronize() {
            throw Self.failure("fsync", path, failure.errno)
        }
    }

    func location(of name: String) -> String { path + "/" + name }

    /// A new file beside `name`, O_EXCL under a random name: a name someone planted (a link, a
    /// file of theirs with mode 0666) makes the create fail, and another name is tried.
    private func createTemporary(for name: String) throws(StateError) -> (Int32, String) {
        for _ in 0..<16 {
            let temporary = ".\(name).blk-\(String(UInt64.random(in: .min ... .max), radix: 16))"
            let file = openat(descriptor, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            if file >= 0 { return (file, temporary) }
            guard errno == EEXIST else { throw Self.failure("create", location(of: temporary)) }
        }
        throw StateError(.invalidRequest, "Could not create a temporary file in '\(path)': every random name tried was taken")
    }

    static func failure(_ action: String, _ path: String, _ error: Errno = .current) -> StateError {
        StateError(error == .noSuchFileOrDirectory ? .notFound : .invalidRequest, "Could not \(action) '\(path)': \(error)")
    }

    private static func kind(of mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: "a folder"
        case S_IFIFO: "a FIFO"
        case S_IFSOCK: "a socket"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        default: "not a regular file"
        }
    }
}
