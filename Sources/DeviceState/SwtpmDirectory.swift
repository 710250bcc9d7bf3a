// SwtpmDirectory: a swtpm state directory (`swtpm --tpmstate dir=DIR`), read for import and
// written for export, holding swtpm's own lock — a classic POSIX write lock on DIR/.lock while
// swtpm runs — so a running swtpm is never read mid-write nor written under.
//
// swtpm 0.7.1 writes a file as temp file + rename without fsync; export does what it does not:
// each file is written to a temporary name, fsync'd, renamed over, and the folder fsync'd, so a
// crash leaves every file old or new, never empty.
import Crypto
import FoundationEssentials
import Glibc

public struct SwtpmDirectory: Sendable {
    /// swtpm's file names (TPM 2) and the names the store gives their blobs.
    public static let files: [(file: String, blob: String)] = [
        ("tpm2-00.permall", "permall"), ("tpm2-00.volatilestate", "volatile"), ("tpm2-00.savestate", "savestate"),
    ]

    public let path: String

    public init(path: String) { self.path = path }

    /// The blobs of the state files present, decrypted with `key` when swtpm encrypted them.
    public func readBlobs(key: SymmetricKey?) throws(StateError) -> [(name: String, bytes: [UInt8])] {
        try withSwtpmLock(exclusive: false) { () throws(StateError) in
            var blobs: [(name: String, bytes: [UInt8])] = []
            for (file, blob) in Self.files {
                let filePath = path + "/" + file
                guard let data = FileManager.default.contents(atPath: filePath) else { continue }
                blobs.append((blob, try SwtpmStateFile.blob(from: Array(data), key: key, path: filePath)))
            }
            guard !blobs.isEmpty else {
                throw StateError(.notFound, "'\(path)' holds no swtpm TPM 2 state (\(Self.files.map(\.file).joined(separator: ", ")))")
            }
            return blobs
        }
    }

    /// Writes a state file per blob (encrypted with `key` as swtpm's `--key` does, or not) and
    /// removes the state files of blobs not given, so swtpm never starts from a stale one.
    public func write(_ blobs: [(name: String, bytes: [UInt8])], key: SymmetricKey?) throws(StateError) {
        var isFolder = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw StateError(.invalidRequest, "Could not create '\(path)': \(StateError.reason(error))")
            }
        } else if !isFolder {
            throw StateError(.invalidRequest, "'\(path)' is not a folder")
        }
        try withSwtpmLock(exclusive: true) { () throws(StateError) in
            for (file, name) in Self.files {
                let filePath = path + "/" + file
                if let blob = blobs.first(where: { $0.name == name }) {
                    try writeDurably(try SwtpmStateFile.file(holding: blob.bytes, key: key), to: filePath)
                } else if unlink(filePath) != 0 && errno != ENOENT {
                    throw StateError(.invalidRequest, "Could not remove the stale '\(filePath)': \(String(cString: strerror(errno)))")
                }
            }
            try syncFolder()
        }
    }

    private func writeDurably(_ bytes: [UInt8], to filePath: String) throws(StateError) {
        let temporary = filePath + ".blk-tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else { throw systemFailure("create", temporary) }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress! + written, bytes.count - written) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                let failure = systemFailure("write", temporary)
                close(descriptor)
                unlink(temporary)
                throw failure
            }
            written += count
        }
        guard fsync(descriptor) == 0 else {
            let failure = systemFailure("fsync", temporary)
            close(descriptor)
            unlink(temporary)
            throw failure
        }
        close(descriptor)
        guard rename(temporary, filePath) == 0 else { throw systemFailure("rename", temporary) }
    }

    private func syncFolder() throws(StateError) {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw systemFailure("open", path) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw systemFailure("fsync", path) }
    }

    private func systemFailure(_ call: String, _ filePath: String) -> StateError {
        StateError(errno == ENOENT ? .notFound : .invalidRequest, "Could not \(call) '\(filePath)': \(String(cString: strerror(errno)))")
    }

    /// Runs `body` holding a POSIX lock on DIR/.lock (shared to read, exclusive to write); a
    /// running swtpm holds it exclusive, which is a conflict (exit 75) naming its pid.
    private func withSwtpmLock<Result>(exclusive: Bool, _ body: () throws(StateError) -> Result) throws(StateError) -> Result {
        let lockPath = path + "/.lock"
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640)
        guard descriptor >= 0 else { throw systemFailure("open", lockPath) }
        defer { close(descriptor) }
        var request = flock()
        request.l_type = Int16(exclusive ? F_WRLCK : F_RDLCK)
        request.l_whence = Int16(SEEK_SET)
        if fcntl(descriptor, F_SETLK, &request) != 0 {
            var probe = flock()
            probe.l_type = Int16(exclusive ? F_WRLCK : F_RDLCK)
            probe.l_whence = Int16(SEEK_SET)
            _ = fcntl(descriptor, F_GETLK, &probe)
            let holder = probe.l_type == Int16(F_UNLCK) ? "another process" : "pid \(probe.l_pid) (\(programName(probe.l_pid)))"
            throw StateError(.busy, "the swtpm state folder '\(path)' is in use by \(holder): stop that swtpm first")
        }
        return try body()
    }

    private func programName(_ pid: Int32) -> String {
        (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.split(separator: "\n").first.map(String.init) ?? "unknown"
    }
}
