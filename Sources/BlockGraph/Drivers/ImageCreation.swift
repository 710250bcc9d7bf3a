// ImageCreation: making a new image file, for every format. As qemu-img does, an image some
// process holds is never truncated: the file's bytes are locked (every permission held, none
// shared) before it is resized, so a create over a running VM's disk fails with QEMU's words
// instead of wiping it. Every byte a creation writes, truncates, allocates or flushes goes
// through a FileDriver, the one fenced path (FileDriver.swift): under a sanlock lease a fence
// stops a creation as it stops any other writer.
import BlockLocking
import Glibc
import Posix

/// How much of a new image is allocated up front (qemu-img's preallocation option). `metadata`
/// is qcow2's alone: every table and cluster mapped, the data left to the file's holes.
public enum Preallocation: String, Sendable, CaseIterable {
    case off, metadata, falloc, full
}

extension FileDriver {
    /// Allocates `range` of the file: `falloc` reserves blocks that read as zeroes
    /// (fallocate(2)), `full` writes the zeroes, 1 MiB per request. The file grows to cover the range.
    public func preallocate(_ range: Range<Int64>, _ mode: Preallocation) throws(BlockError) {
        switch mode {
        case .off, .metadata: return
        case .falloc: try allocate(range)
        case .full: try writeZeroesTheLongWay(range)
        }
    }
}

/// Creates `path` if needed, opens it read-write, locked against every other open (and, with
/// leases configured, every other host), and empties it to `byteCount` zero bytes (sparse where
/// the file system allows). The returned driver holds the locks and the lease until the caller
/// has written the format's metadata through it and lets it go.
public func createImageFile(at path: String, byteCount: Int64, locking: LockingMode,
                            lease: LeasePolicy = .none) throws(BlockError) -> FileDriver {
    switch valueOrErrno("open", { Glibc.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) }) {
    case .success(let descriptor): close(descriptor)
    case .failure(let failure): throw BlockError.systemCall(failure, "Could not create '\(path)'")
    }
    let file = try FileDriver(path: path, writable: true, locking: locking, lease: lease)
    try file.applyPermissions(PermissionRequest(held: .all, unshared: .all))
    try file.truncate(to: 0)
    try file.truncate(to: byteCount)
    return file
}
