// ImageCreation: making a new image file, for every format. As qemu-img does, an image some
// process holds is never truncated: the file's bytes are locked (every permission held, none
// shared) before it is resized, so a create over a running VM's disk fails with QEMU's words
// instead of wiping it.
import BlockLocking
import Glibc
import SystemPackage

/// Creates `path` if needed, locks it against every other open, and empties it to `byteCount`
/// zero bytes (sparse where the file system allows). The returned file holds the locks until
/// the caller has written the format's metadata and lets it go.
public func createImageFile(at path: String, byteCount: Int64, locking: LockingMode) throws(BlockError) -> LockedImageFile {
    switch valueOrErrno("open", { Glibc.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) }) {
    case .success(let descriptor): close(descriptor)
    case .failure(let failure): throw BlockError.systemCall(failure, "Could not create '\(path)'")
    }
    let file: LockedImageFile
    do throws(LockingError) {
        file = try LockedImageFile(path: path, writable: true, mode: locking)
        try file.locks.setPermissions(PermissionRequest(held: .all, unshared: .all))
    } catch {
        throw BlockError(error)
    }
    let descriptor = file.descriptor.rawValue
    for size in [0, byteCount] {
        if case .failure(let failure) = valueOrErrno("ftruncate", { ftruncate(descriptor, off_t(size)) }) {
            throw BlockError.systemCall(failure, "Could not resize '\(path)' to \(byteCount) bytes")
        }
    }
    return file
}

extension RawDriver {
    /// Creates (or replaces) `path` as a raw image of `byteCount` zero bytes.
    public static func create(at path: String, byteCount: Int64, locking: LockingMode = .auto) throws(BlockError) {
        _ = try createImageFile(at: path, byteCount: byteCount, locking: locking)
    }
}
