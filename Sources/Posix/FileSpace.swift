// FileSpace: a file's blocks rather than its bytes — reserving them or punching them out
// (fallocate), and finding which ranges hold data and which are holes (lseek SEEK_DATA and
// SEEK_HOLE), so sparse images are copied, compared and zeroed without reading their holes.
import CLinuxIO
import Glibc
import SystemPackage

/// fallocate(2)'s modes (include/uapi/linux/falloc.h). Empty: allocate, growing the file.
public struct AllocationMode: OptionSet, Sendable, Hashable {
    /// The FALLOC_FL_* bits as fallocate(2) takes them.
    public let rawValue: Int32
    /// A mode from bits, for the OptionSet operations.
    public init(rawValue: Int32) { self.rawValue = rawValue }

    /// The file's size stays as it is, whatever the range covers.
    public static let keepSize = AllocationMode(rawValue: Int32(blk_FALLOC_FL_KEEP_SIZE))
    /// The range is deallocated: it reads as zeroes and holds no blocks (with `keepSize`).
    public static let punchHole = AllocationMode(rawValue: Int32(blk_FALLOC_FL_PUNCH_HOLE))
    /// The range reads as zeroes, its blocks kept allocated (unwritten).
    public static let zeroRange = AllocationMode(rawValue: Int32(blk_FALLOC_FL_ZERO_RANGE))
}

extension FileDescriptor {
    /// fallocate(2) over `byteCount` bytes at `byteOffset`. A file system that cannot fails with
    /// EOPNOTSUPP (or EINVAL for a mode it lacks): the caller chooses what to do instead.
    public func allocate(_ mode: AllocationMode = [], at byteOffset: Int64, byteCount: Int64) -> Result<Void, SystemCallError> {
        valueOrErrno("fallocate", { blk_fallocate(rawValue, mode.rawValue, byteOffset, byteCount) }).map { _ in () }
    }

    /// The first offset at or after `byteOffset` that holds data (lseek SEEK_DATA); nil when
    /// none does up to the end of the file (ENXIO).
    public func seekData(from byteOffset: Int64) -> Result<Int64?, SystemCallError> {
        seek(blk_seek_data(), "lseek(SEEK_DATA)", from: byteOffset)
    }

    /// The first offset at or after `byteOffset` that starts a hole, the end of the file counting
    /// as one (lseek SEEK_HOLE); nil when `byteOffset` is at or past the end (ENXIO).
    public func seekHole(from byteOffset: Int64) -> Result<Int64?, SystemCallError> {
        seek(blk_seek_hole(), "lseek(SEEK_HOLE)", from: byteOffset)
    }

    private func seek(_ whence: Int32, _ name: StaticString, from byteOffset: Int64) -> Result<Int64?, SystemCallError> {
        switch valueOrErrno(name, { Glibc.lseek(rawValue, off_t(byteOffset), whence) }) {
        case .success(let offset): .success(Int64(offset))
        case .failure(let failure) where failure.errno == .noSuchAddressOrDevice: .success(nil)
        case .failure(let failure): .failure(failure)
        }
    }

    /// fdatasync(2): the file's data, and the metadata needed to read it back, on the storage.
    public func synchronizeData() -> Result<Void, SystemCallError> {
        valueOrErrno("fdatasync", { fdatasync(rawValue) }).map { _ in () }
    }

    /// sync_file_range(2) with SYNC_FILE_RANGE_WRITE over the whole file: the kernel starts
    /// writing back its dirty pages now rather than when they age, and does not wait for them.
    /// Durability still takes `synchronizeData`.
    public func startWriteback() -> Result<Void, SystemCallError> {
        valueOrErrno("sync_file_range", { blk_start_writeback(rawValue) }).map { _ in () }
    }

    /// fsync(2): the file's data and all its metadata (for a folder: its entries) on the storage.
    public func synchronize() -> Result<Void, SystemCallError> {
        valueOrErrno("fsync", { fsync(rawValue) }).map { _ in () }
    }
}
