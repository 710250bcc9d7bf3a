// ImageCreation: making a new image file, for every format. As qemu-img does, an image some
// process holds is never truncated: the file's bytes are locked (every permission held, none
// shared) before it is resized, so a create over a running VM's disk fails with QEMU's words
// instead of wiping it.
import BlockLocking
import CLinuxIO
import Glibc
import SystemPackage

/// How much of a new image is allocated up front (qemu-img's preallocation option). `metadata`
/// is qcow2's alone: every table and cluster mapped, the data left to the file's holes.
public enum Preallocation: String, Sendable, CaseIterable {
    case off, metadata, falloc, full
}

extension LockedImageFile {
    /// Allocates `range` of the file: `falloc` reserves blocks that read as zeroes
    /// (fallocate(2)), `full` writes the zeroes. The file grows to cover the range.
    public func preallocate(_ range: Range<Int64>, _ mode: Preallocation, path: String) throws(BlockError) {
        guard !range.isEmpty else { return }
        let descriptor = descriptor.rawValue
        switch mode {
        case .off, .metadata:
            return
        case .falloc:
            if case .failure(let failure) = valueOrErrno("fallocate", { blk_fallocate(descriptor, 0, range.lowerBound, range.upperBound - range.lowerBound) }) {
                throw BlockError.systemCall(failure, "Could not preallocate data for '\(path)'")
            }
        case .full:
            let chunk = 1 << 20
            let zeroes = [UInt8](repeating: 0, count: chunk)
            var offset = range.lowerBound
            while offset < range.upperBound {
                let count = Int(min(Int64(chunk), range.upperBound - offset))
                let result = zeroes.withUnsafeBytes { bytes in
                    valueOrErrno("pwrite", { pwrite(descriptor, bytes.baseAddress, count, off_t(offset)) })
                }
                switch result {
                case .success(let written): offset += Int64(written)
                case .failure(let failure): throw BlockError.systemCall(failure, "Could not preallocate data for '\(path)'")
                }
            }
        }
    }
}

/// Creates `path` if needed, locks it against every other open (and, with leases configured,
/// every other host), and empties it to `byteCount` zero bytes (sparse where the file system
/// allows). The returned file holds the locks until the caller has written the format's metadata
/// and lets it go.
public func createImageFile(at path: String, byteCount: Int64, locking: LockingMode,
                            lease: LeasePolicy = .none) throws(BlockError) -> LockedImageFile {
    switch valueOrErrno("open", { Glibc.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644) }) {
    case .success(let descriptor): close(descriptor)
    case .failure(let failure): throw BlockError.systemCall(failure, "Could not create '\(path)'")
    }
    let file: LockedImageFile
    do throws(LockingError) {
        file = try LockedImageFile(path: path, writable: true, mode: locking, lease: lease)
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
    /// Creates (or replaces) `path` as a raw image of `byteCount` zero bytes, allocated as
    /// `preallocation` asks (sparse by default).
    public static func create(at path: String, byteCount: Int64, preallocation: Preallocation = .off,
                              locking: LockingMode = .auto, lease: LeasePolicy = .none) throws(BlockError) {
        guard preallocation != .metadata else { throw BlockError(.invalidRequest, "Unsupported preallocation mode: metadata") }
        let file = try createImageFile(at: path, byteCount: byteCount, locking: locking, lease: lease)
        try file.preallocate(0..<byteCount, preallocation, path: path)
    }
}
