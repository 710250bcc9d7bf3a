// SwtpmDirectory: a swtpm state directory (`swtpm --tpmstate dir=DIR`), read for import and
// written for export, holding swtpm's own lock — a classic POSIX write lock on DIR/.lock while
// swtpm runs — so a running swtpm is never read mid-write nor written under.
//
// The folder belongs to the swtpm user, and root runs blk: every file is reached through the
// folder's descriptor (OpenFolder), so a planted link, FIFO or temporary file redirects nothing.
// swtpm 0.7.1 writes a file as temp file + rename without fsync; export does what it does not:
// each file is written to a fresh temporary name, fsync'd, renamed over, and the folder fsync'd,
// so a crash leaves every file old or new, never empty.
import BlockLocking
import Crypto
import FoundationEssentials
import Glibc

/// A swtpm state folder, for moving a TPM's state between swtpm's files and a state store
/// without ever reading a running swtpm's files mid-write.
public struct SwtpmDirectory: Sendable {
    /// swtpm's file names (TPM 2) and the names the store gives their blobs.
    public static let files: [(file: String, blob: String)] = [
        ("tpm2-00.permall", "permall"), ("tpm2-00.volatilestate", "volatile"), ("tpm2-00.savestate", "savestate"),
    ]

    /// The largest state file import reads (docs/state.md): libtpms's permanent state is tens of
    /// KiB, so this is far above any real file and far below what memory allows.
    public static let maximumFileBytes = 16 << 20

    /// The folder as swtpm's `--tpmstate dir=` names it.
    public let path: String

    /// Opens nothing yet: each read or write opens the folder afresh and takes swtpm's lock.
    public init(path: String) { self.path = path }

    /// The blobs of the state files present, decrypted with `key` when swtpm encrypted them.
    public func readBlobs(key: SymmetricKey?) throws(StateError) -> [(name: String, bytes: [UInt8])] {
        let folder = try OpenFolder(path: path, followingLink: false)
        return try withSwtpmLock(in: folder, exclusive: false) { () throws(StateError) in
            var blobs: [(name: String, bytes: [UInt8])] = []
            for (file, blob) in Self.files {
                guard let data = try folder.contents(of: file, limit: Self.maximumFileBytes) else { continue }
                blobs.append((blob, try SwtpmStateFile.blob(from: data, key: key, path: folder.location(of: file))))
            }
            guard !blobs.isEmpty else {
                throw StateError(.notFound, "'\(path)' holds no swtpm TPM 2 state (\(Self.files.map(\.file).joined(separator: ", ")))")
            }
            return blobs
        }
    }

    /// Writes a state file per blob (encrypted with `key` as swtpm's `--key` does, or not) and
    /// removes the state files of blobs not given, so swtpm never starts from a stale one. Each
    /// file is mode 0600 and, when root writes it, belongs to the folder's owner.
    public func write(_ blobs: [(name: String, bytes: [UInt8])], key: SymmetricKey?) throws(StateError) {
        var status = stat()
        if lstat(path, &status) != 0 {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw StateError(.invalidRequest, "Could not create '\(path)': \(StateError.reason(error))")
            }
        }
        let folder = try OpenFolder(path: path, followingLink: false)
        try withSwtpmLock(in: folder, exclusive: true) { () throws(StateError) in
            for (file, name) in Self.files {
                if let blob = blobs.first(where: { $0.name == name }) {
                    try folder.replace(file, with: try SwtpmStateFile.file(holding: blob.bytes, key: key), givingToFolderOwner: true)
                } else {
                    try folder.remove(file)
                }
            }
            try folder.sync()
        }
    }

    /// Runs `body` holding a POSIX lock on DIR/.lock (shared to read, exclusive to write); a
    /// running swtpm holds it exclusive, which is a conflict (exit 75) naming its pid. A lock file
    /// made here is given to the folder's owner, so the swtpm that runs there next can open it.
    private func withSwtpmLock<Result>(in folder: OpenFolder, exclusive: Bool,
                                       _ body: () throws(StateError) -> Result) throws(StateError) -> Result {
        let lockName = ".lock"
        let flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC
        var descriptor = openat(folder.descriptor, lockName, flags)
        if descriptor < 0 && errno == ENOENT {
            descriptor = openat(folder.descriptor, lockName, flags | O_CREAT | O_EXCL, 0o600)
            if descriptor >= 0 && geteuid() == 0 { _ = fchown(descriptor, folder.ownerID, folder.groupID) }
        }
        guard descriptor >= 0 else { throw OpenFolder.failure("open", folder.location(of: lockName)) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw StateError(.corrupt, "'\(folder.location(of: lockName))' is not a regular file: not swtpm's lock file")
        }
        var request = flock()
        request.l_type = Int16(exclusive ? F_WRLCK : F_RDLCK)
        request.l_whence = Int16(SEEK_SET)
        if fcntl(descriptor, F_SETLK, &request) != 0 {
            var probe = flock()
            probe.l_type = Int16(exclusive ? F_WRLCK : F_RDLCK)
            probe.l_whence = Int16(SEEK_SET)
            _ = fcntl(descriptor, F_GETLK, &probe)
            let program = LockHolderScan.programName(of: probe.l_pid).map { escapingControlCharacters($0) } ?? "unknown"
            let holder = probe.l_type == Int16(F_UNLCK) ? "another process" : "pid \(probe.l_pid) (\(program))"
            throw StateError(.busy, "the swtpm state folder '\(path)' is in use by \(holder): stop that swtpm first")
        }
        return try body()
    }
}
