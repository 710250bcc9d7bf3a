// FileDriver: the protocol driver for an image file on a local or network file system.
//
// Map: opening (two descriptors) · positional I/O (Posix's full transfers) · O_DIRECT
// bounce buffers · zeroes through fallocate · flush and its poisoning · locks.
//
// The one fenced path: every system call that changes an image file or forces it to storage
// (pwrite, ftruncate, fallocate, fdatasync) is made here, inside `leased`, whichever command
// asks — creation and convert's final sync included. Under a sanlock lease each request is
// admitted by the registration, so once a fence has marked the lease lost nothing new starts,
// and the fence waits for the requests admitted before it. A request that could run unbounded
// (zeroes written the long way, a preallocation) is cut into admissions of 1 MiB, so a fence
// never waits for more than one piece.
//
// Two descriptors, as QEMU's file-posix keeps a lock descriptor apart from its I/O descriptor:
// the locks live on a descriptor that never changes, so reopening read-only ↔ read-write swaps
// only the I/O file description and the locks stay continuous. (Locks on a fresh descriptor would be
// a different open file description, and would conflict with our own old ones.) The lock
// descriptor is opened as the open is: read-write for a writable open, because the kernel grants
// the exclusive transaction lock only through a descriptor open for writing (it never writes);
// read-only otherwise. So the image's own exclusive transaction lock needs an open that was
// read-write from the start: a read-only open reopened read-write keeps its read-only lock
// descriptor, since a new one would be a new open file description, without our locks.
import BlockLocking
import Glibc
import Posix
import Synchronization
import SystemPackage

/// How writes reach the disk.
public enum CacheMode: String, Sendable, Hashable, CaseIterable {
    /// Through the page cache; `flush` makes them durable.
    case writeback
    /// O_DIRECT: around the page cache, with aligned bounce buffers for unaligned requests.
    case none
    /// Through the page cache, and flushes do nothing (QEMU's cache=unsafe, qemu-img convert's
    /// default): for copies that are simply made again after a crash.
    case unsafe
}

/// The protocol driver at the bottom of every graph: the only driver that makes system calls on
/// the image file, so locks, leases, O_DIRECT and flush failures are handled in one place.
public final class FileDriver: BlockDriver {
    /// "file", QEMU's name for the protocol.
    public let formatName = "file"
    /// The path the file was opened by, for messages and for block status's file name.
    public let path: String
    /// How writes reach the disk, chosen at open and kept across reopens.
    public let cache: CacheMode
    /// The permission locks, transaction lock and lease of this open, on the descriptor that
    /// never changes.
    public let locks: ImageLocks

    /// O_DIRECT needs offsets, lengths and buffer addresses aligned to the logical block size;
    /// 4096 satisfies every device in use.
    static let directAlignment = 4096

    // The I/O path takes no lock: with dozens of requests in flight, a mutex per request costs
    // more in contention than the request itself. The descriptor's number never changes and is
    // never free: `reopen` puts the new open file description onto it with dup3, so a request
    // under way uses the old description or the new one, both of this file, and never a number
    // that was closed and given to another file meanwhile.
    private let descriptor: FileDescriptor
    private let writableFlag: Atomic<Bool>
    private let cachedLength: Atomic<Int64>
    /// Set by the first failed flush: every later flush fails too.
    private let flushFailure = Mutex<SystemCallError?>(nil)
    /// The last run lseek found to be data (start, end; empty: none), as QEMU's file-posix
    /// keeps it (its block_status_cache): a small read's status then costs no system call, where
    /// SEEK_DATA and SEEK_HOLE were two of the three a 4 KiB NBD read made. Writes only turn holes
    /// into data, so only zeroing and truncation forget it. A claim of data that a racing zeroing
    /// (or another process) made stale is still safe: the bytes are read, and read as they are.
    private let knownData = Atomic(WordPair(first: 0, second: 0))

    /// Opens `path` with its lock descriptor and its I/O descriptor, taking no permission lock yet:
    /// the graph asks for those once it is built.
    public init(path: String, writable: Bool, locking: LockingMode, cache: CacheMode = .writeback,
                lease: LeasePolicy = .none) throws(BlockError) {
        self.path = path
        self.cache = cache
        let lockDescriptor: FileDescriptor
        do throws(LockingError) {
            lockDescriptor = try Self.openLockDescriptor(path, writable: writable)
        } catch {
            throw BlockError(error)
        }
        do throws(LockingError) {
            locks = try ImageLocks(descriptor: lockDescriptor, path: path, mode: locking, writable: writable, lease: lease)
        } catch {
            try? lockDescriptor.close()
            throw BlockError(error)
        }
        do {
            let descriptor = try Self.openIO(path, writable: writable, cache: cache)
            let length = try Self.size(of: descriptor, path: path)
            self.descriptor = descriptor
            writableFlag = Atomic(writable)
            cachedLength = Atomic(length)
        } catch {
            try? lockDescriptor.close()
            throw error
        }
    }

    deinit {
        try? descriptor.close()
        try? locks.descriptor.close() // releases every OFD lock of this open
    }

    /// The lock on byte 300 of this file, through the descriptor the permission locks live on.
    public var transactionLock: TransactionLock? { locks.transaction }

    /// The descriptor the locks live on, opened as the open itself is: read-only for a read-only
    /// open (a backing file a hostile image names included), so nothing is opened for writing
    /// that is not to be written. A writable open whose file cannot be opened for writing gets a
    /// read-only one, and the I/O open then says why.
    private static func openLockDescriptor(_ path: String, writable: Bool) throws(LockingError) -> FileDescriptor {
        guard writable else { return try LockedImageFile.openDescriptor(path, writable: false) }
        do throws(LockingError) {
            return try LockedImageFile.openDescriptor(path, writable: true)
        } catch let error where error.cause.map({ [Errno.permissionDenied, .readOnlyFileSystem, .textFileBusy].contains($0.errno) }) == true {
            return try LockedImageFile.openDescriptor(path, writable: false)
        }
    }

    private static func openIO(_ path: String, writable: Bool, cache: CacheMode) throws(BlockError) -> FileDescriptor {
        let flags = O_CLOEXEC | (writable ? O_RDWR : O_RDONLY) | (cache == .none ? FileDescriptor.OpenOptions.direct.rawValue : 0)
        switch valueOrErrno("open", { Glibc.open(path, flags) }) {
        case .success(let raw): return FileDescriptor(rawValue: raw)
        case .failure(let failure) where failure.errno == .invalidArgument && cache == .none:
            throw BlockError(.unsupported, "Could not open '\(path)': the file system does not support O_DIRECT (cache=none)", cause: failure)
        case .failure(let failure):
            throw BlockError.systemCall(failure, "Could not open '\(path)'\(writable ? " for writing" : "")")
        }
    }

    /// What changes when anyone writes or truncates the file: its size and its change and
    /// modification times (fine-grained once they have been looked at, as here).
    public struct ChangeStamp: Equatable, Sendable {
        var size: Int
        var modifiedSeconds: Int, modifiedNanoseconds: Int
        var changedSeconds: Int, changedNanoseconds: Int
    }

    /// The file's stamp now, to compare with one taken earlier: a migration destination learns
    /// whether the source wrote while it was inactive.
    public func changeStamp() throws(BlockError) -> ChangeStamp {
        let status = try Self.status(of: descriptor, path: path)
        return ChangeStamp(size: status.st_size, modifiedSeconds: status.st_mtim.tv_sec, modifiedNanoseconds: status.st_mtim.tv_nsec,
                           changedSeconds: status.st_ctim.tv_sec, changedNanoseconds: status.st_ctim.tv_nsec)
    }

    private static func status(of descriptor: FileDescriptor, path: String) throws(BlockError) -> stat {
        var status = stat()
        if case .failure(let failure) = valueOrErrno("fstat", { fstat(descriptor.rawValue, &status) }) {
            throw BlockError.systemCall(failure, "Could not stat '\(path)'")
        }
        return status
    }

    private static func size(of descriptor: FileDescriptor, path: String) throws(BlockError) -> Int64 {
        Int64(try status(of: descriptor, path: path).st_size)
    }

    /// The length as this open last saw or made it: no system call on the I/O path.
    public func length() throws(BlockError) -> Int64 { cachedLength.load(ordering: .relaxed) }

    /// Asks the file system, for when another process may have grown or shrunk the file.
    public func refreshedLength() throws(BlockError) -> Int64 {
        let seen = cachedLength.load(ordering: .relaxed)
        let now = try Self.size(of: descriptor, path: path)
        if now > seen {
            cachedLength.max(now, ordering: .relaxed)
        } else if now < seen {
            // Only if no request of ours grew the file since: fstat may predate that write.
            _ = cachedLength.compareExchange(expected: seen, desired: now, ordering: .relaxed)
        }
        return now
    }

    /// pread until full; under O_DIRECT an unaligned request goes through an aligned bounce buffer.
    public func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError) {
        if cache == .none && !Self.isAligned(byteOffset, buffer.count, buffer.baseAddress) {
            return try withBounce(byteOffset, buffer.count) { (bounce, start) throws(BlockError) in
                try self.readFully(self.descriptor, at: start, into: bounce, allowShort: true)
                let skip = Int(byteOffset - start)
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: bounce[skip..<skip + buffer.count]))
            }
        }
        try readFully(descriptor, at: byteOffset, into: buffer)
    }

    /// Runs a request that changes the file under the image's lease, if it has one: refused once
    /// the lease is lost, and waited for by the fence before the lease goes (nothing more reaches
    /// the image after).
    private func leased<Result>(_ request: () throws(BlockError) -> Result) throws(BlockError) -> Result {
        guard let lease = locks.lease else { return try request() }
        let admitted: Bool
        do throws(LockingError) { admitted = try lease.beginWrite() } catch { throw BlockError(error) }
        defer { if admitted { lease.endWrite() } }
        return try request()
    }

    /// pwrite until done, admitted by the lease if there is one.
    public func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        try leased { () throws(BlockError) in try unleasedWrite(at: byteOffset, from: buffer) }
    }

    private func unleasedWrite(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        let descriptor = try writableDescriptor()
        if cache == .none && !Self.isAligned(byteOffset, buffer.count, buffer.baseAddress) {
            let lengthBefore = try length()
            try withBounce(byteOffset, buffer.count) { (bounce, start) throws(BlockError) in
                // Read-modify-write of the aligned blocks around the request.
                try self.readFully(descriptor, at: start, into: bounce, allowShort: true)
                let skip = Int(byteOffset - start)
                UnsafeMutableRawBufferPointer(rebasing: bounce[skip..<skip + buffer.count]).copyMemory(from: buffer)
                try self.writeFully(descriptor, at: start, from: UnsafeRawBufferPointer(bounce))
                // The aligned tail may have grown the file past what was asked for.
                if start + Int64(bounce.count) > lengthBefore {
                    // The length now, not before: another request may have grown the file since.
                    let wanted = max(try self.length(), byteOffset + Int64(buffer.count))
                    if case .failure(let failure) = valueOrErrno("ftruncate", { ftruncate(descriptor.rawValue, off_t(wanted)) }) {
                        throw self.failedByReopen(failure)
                            ?? BlockError.systemCall(failure, "trim '\(self.path)' after an unaligned direct write")
                    }
                }
            }
        } else {
            try writeFully(descriptor, at: byteOffset, from: buffer)
        }
        cachedLength.max(byteOffset + Int64(buffer.count), ordering: .relaxed)
    }

    /// fallocate (punching a hole where `mayUnmap` allows), and written zeroes where the file system
    /// cannot.
    public func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        guard try !allocateZeroes(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap) else { return }
        try writeZeroesTheLongWay(byteOffset..<byteOffset + byteCount)
    }

    /// fallocate alone: a file system that cannot zero a range that way is not fast at it.
    public func writeZeroesWithoutFallback(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        guard try allocateZeroes(at: byteOffset, byteCount: byteCount, mayUnmap: mayUnmap) else {
            throw BlockError(.notSupportedByFormat, "the file system of '\(path)' cannot zero a range without writing zeroes")
        }
    }

    /// Zeroes the range with fallocate, punching a hole where `mayUnmap` allows; false when the
    /// file system cannot.
    private func allocateZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) -> Bool {
        try leased { () throws(BlockError) -> Bool in
            let descriptor = try writableDescriptor()
            defer { forgetKnownData() }
            switch descriptor.allocate([.keepSize, mayUnmap ? AllocationMode.punchHole : .zeroRange], at: byteOffset, byteCount: byteCount) {
            case .success:
                return true
            case .failure(let failure) where failure.errno == .notSupported || failure.errno == .invalidArgument:
                return false
            case .failure(let failure):
                throw failedByReopen(failure) ?? BlockError.systemCall(failure, "write zeroes at \(byteOffset) of '\(path)'")
            }
        }
    }

    /// Writes zeroes over `range`, 1 MiB per request: each piece is admitted on its own, so a
    /// fence stops the run between pieces instead of waiting for all of it.
    func writeZeroesTheLongWay(_ range: Range<Int64>) throws(BlockError) {
        let chunk = Int64(Self.zeroChunkBytes)
        let zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.zeroChunkBytes, alignment: Self.directAlignment)
        defer { zeroes.deallocate() }
        zeroes.initializeMemory(as: UInt8.self, repeating: 0)
        var offset = range.lowerBound
        while offset < range.upperBound {
            let count = Int(min(chunk, range.upperBound - offset))
            try write(at: offset, from: UnsafeRawBufferPointer(rebasing: zeroes[0..<count]))
            offset += Int64(count)
        }
    }

    static let zeroChunkBytes = 1 << 20

    /// fdatasync, unless the cache mode is `unsafe`; a failure poisons every later flush.
    public func flush() throws(BlockError) {
        try leased { () throws(BlockError) in try unleasedFlush(evenIfUnsafe: false) }
    }

    /// fdatasync whatever the cache mode: how a copy written with `.unsafe` (no flush along the
    /// way) is made durable in one go at the end.
    public func flushIgnoringCacheMode() throws(BlockError) {
        try leased { () throws(BlockError) in try unleasedFlush(evenIfUnsafe: true) }
    }

    /// Starts writing back what is written so far, without waiting (sync_file_range): a long
    /// copy that ends in a flush (a commit) gets the disk working during the copy, so the flush
    /// has only the last of it left. A hint: nothing for `unsafe` (no flush will wait for the
    /// disk) or a file open read-only, and a failure is left to the flush, which reports the
    /// write-back errors of the file whoever started them.
    public func startWriteback() {
        guard writableFlag.load(ordering: .acquiring), cache != .unsafe else { return }
        _ = descriptor.startWriteback()
    }

    private func unleasedFlush(evenIfUnsafe: Bool) throws(BlockError) {
        try flushFailure.withLock { (flushFailure) throws(BlockError) in
            if let failure = flushFailure {
                throw BlockError(.ioError, "flush of '\(path)' failed before (\(failure.errno)); data written since may be lost, so no later flush can succeed",
                                 cause: failure)
            }
            guard writableFlag.load(ordering: .acquiring), cache != .unsafe || evenIfUnsafe else { return }
            if case .failure(let failure) = descriptor.synchronizeData() {
                flushFailure = failure
                throw storageFailure(failure, "flush of '\(path)'")
            }
        }
    }

    /// ftruncate, admitted by the lease.
    public func truncate(to byteCount: Int64) throws(BlockError) {
        try leased { () throws(BlockError) in try unleasedTruncate(to: byteCount) }
    }

    private func unleasedTruncate(to byteCount: Int64) throws(BlockError) {
        let descriptor = try writableDescriptor()
        defer { forgetKnownData() }
        if case .failure(let failure) = valueOrErrno("ftruncate", { ftruncate(descriptor.rawValue, off_t(byteCount)) }) {
            throw failedByReopen(failure) ?? BlockError.systemCall(failure, "resize '\(path)' to \(byteCount) bytes")
        }
        cachedLength.store(byteCount, ordering: .relaxed)
    }

    /// fallocate(2) from the current end: on ext4 and XFS the blocks are allocated unwritten, so
    /// buffered writes into them later skip delayed allocation's per-write bookkeeping (quota
    /// and free-block reservations, the extent-status tree), a tenth of the time of 64 KiB
    /// writes into a hole here. Where the file system cannot, a sparse ftruncate.
    public func extend(to byteCount: Int64) throws(BlockError) {
        try leased { () throws(BlockError) in
            let descriptor = try writableDescriptor()
            let start = try length()
            guard byteCount > start else { return }
            switch descriptor.allocate(at: start, byteCount: byteCount - start) {
            case .success:
                cachedLength.max(byteCount, ordering: .relaxed)
            case .failure(let failure) where failure.errno == .notSupported || failure.errno == .invalidArgument:
                try unleasedTruncate(to: byteCount)
            case .failure(let failure):
                throw failedByReopen(failure) ?? BlockError.systemCall(failure, "grow '\(path)' to \(byteCount) bytes")
            }
        }
    }

    /// Allocates `range` (fallocate(2), mode 0): blocks reserved that read as zeroes, the file
    /// grown to cover the range; a file system that cannot is an error, not a sparse file.
    public func allocate(_ range: Range<Int64>) throws(BlockError) {
        guard !range.isEmpty else { return }
        try leased { () throws(BlockError) in
            let descriptor = try writableDescriptor()
            if case .failure(let failure) = descriptor.allocate(at: range.lowerBound, byteCount: range.upperBound - range.lowerBound) {
                throw failedByReopen(failure) ?? BlockError.systemCall(failure, "allocate \(range.upperBound - range.lowerBound) bytes at \(range.lowerBound) of '\(path)'")
            }
            cachedLength.max(range.upperBound, ordering: .relaxed)
        }
    }

    /// Holes and data as lseek(2) finds them (QEMU's file-posix find_allocation): a hole reads
    /// as zeroes and is not data; both are present, at their own offset. A file system that
    /// cannot tell (or a hole past data that SEEK_HOLE does not find) is taken as all data.
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        func run(_ count: Int64, isData: Bool) -> BlockStatus {
            BlockStatus(byteCount: min(count, byteCount), isData: isData, isZero: !isData, isAllocated: true,
                        hostOffset: byteOffset, file: path)
        }
        let known = knownData.load(ordering: .relaxed)
        if UInt(byteOffset) >= known.first && UInt(byteOffset) < known.second {
            return run(Int64(known.second) - byteOffset, isData: true)
        }
        switch descriptor.seekData(from: byteOffset) {
        case .success(nil): return run(byteCount, isData: false) // no data from here to the end
        case .failure: return run(byteCount, isData: true)
        case .success(let data?) where data > byteOffset: return run(data - byteOffset, isData: false)
        case .success: break
        }
        guard case .success(let hole?) = descriptor.seekHole(from: byteOffset), hole > byteOffset else {
            return run(byteCount, isData: true)
        }
        knownData.store(WordPair(first: UInt(byteOffset), second: UInt(hole)), ordering: .relaxed)
        return run(hole - byteOffset, isData: true)
    }

    private func forgetKnownData() {
        knownData.store(WordPair(first: 0, second: 0), ordering: .relaxed)
    }

    /// The range itself, where the page cache holds what reads and writes see. Not under
    /// O_DIRECT (`cache none`): its writes go around the page cache, and the kernel's
    /// invalidation of the pages they overwrite can fail while a socket still holds those pages
    /// for a sendfile, leaving stale pages that later sends would read. Nor past the length this
    /// open knows, where a read says what is wrong.
    public func hostExtent(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> HostExtent {
        guard cache != .none, byteOffset + byteCount <= (try length()) else { return .mustRead(byteCount: byteCount) }
        return HostExtent(byteCount: byteCount, file: self, fileOffset: byteOffset)
    }

    /// A new descriptor of the file, read-only or read-write as this open is now, owned by the
    /// caller: for a server that hands the file to the kernel to send from (`hostExtent`).
    public func duplicateDescriptor() throws(BlockError) -> CInt {
        switch valueOrErrno("fcntl", { fcntl(descriptor.rawValue, F_DUPFD_CLOEXEC, 0) }) {
        case .success(let duplicate): return duplicate
        case .failure(let failure): throw BlockError.systemCall(failure, "Could not duplicate the descriptor of '\(path)'")
        }
    }

    /// The file's blocks, as `du` counts them: qemu-img's "disk size".
    public func allocatedBytes() throws(BlockError) -> Int64? {
        Int64(try Self.status(of: descriptor, path: path).st_blocks) * 512
    }

    /// Turns the graph's permissions into QEMU's lock bytes on this file.
    public func applyPermissions(_ request: PermissionRequest) throws(BlockError) {
        do {
            try locks.setPermissions(request)
        } catch {
            throw BlockError(error)
        }
    }

    /// Opens a new open file description with the new access and puts it onto the I/O
    /// descriptor's number in one step (dup3); the locks, on their own descriptor, are not
    /// touched. Safe while requests run: one under way finishes on the old description, which
    /// is the same file; after a reopen read-only, a write fails as read-only (the flag first,
    /// then EBADF from the read-only description), never anywhere else. A write that entered the
    /// kernel before may still finish on the old description: BlockImage drains its writes
    /// before it reopens. The cache mode (O_DIRECT) is the same on the new description.
    public func reopen(writable: Bool) throws(BlockError) {
        guard writableFlag.load(ordering: .acquiring) != writable else { return }
        if writable {
            do throws(LockingError) { try locks.checkWritable() } catch { throw BlockError(error) }
        }
        let opened = try Self.openIO(path, writable: writable, cache: cache)
        defer { try? opened.close() }
        // Going read-only, new writes are refused before the description changes; going
        // read-write, they are admitted only once it has.
        if !writable { writableFlag.store(false, ordering: .releasing) }
        if case .failure(let failure) = descriptor.replaceDescription(with: opened) {
            writableFlag.store(!writable, ordering: .releasing)
            throw BlockError.systemCall(failure, "Could not reopen '\(path)'\(writable ? " for writing" : "")")
        }
        if writable { writableFlag.store(true, ordering: .releasing) }
    }

    private func writableDescriptor() throws(BlockError) -> FileDescriptor {
        guard writableFlag.load(ordering: .acquiring) else { throw BlockError(.readOnly, "'\(path)' is open read-only") }
        return descriptor
    }

    /// The failure of a change to the file that a reopen read-only caused while it was under
    /// way (EBADF, or EINVAL from ftruncate, on a read-only description) as a read-only error.
    private func failedByReopen(_ failure: SystemCallError) -> BlockError? {
        guard !writableFlag.load(ordering: .acquiring),
              failure.errno == .badFileDescriptor || failure.errno == .invalidArgument else { return nil }
        return BlockError(.readOnly, "'\(path)' is open read-only (reopened while the request was under way)", cause: failure)
    }

    // MARK: positional I/O

    private func storageFailure(_ failure: SystemCallError, _ what: String) -> BlockError {
        BlockError.storageFailure(failure, what, lockedOn: locks.decision.flavor == nil ? nil : locks.mount)
    }

    private func readFully(_ descriptor: FileDescriptor, at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer,
                           allowShort: Bool = false) throws(BlockError) {
        guard case .failure(let short) = descriptor.readFully(at: byteOffset, into: buffer) else { return }
        let done = short.transferred
        if let failure = short.error { throw storageFailure(failure, "read at \(byteOffset + Int64(done)) of '\(path)'") }
        guard allowShort else {
            throw BlockError(.ioError, "read at \(byteOffset + Int64(done)) of '\(path)' found the end of the file: the image shrank while open")
        }
        UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
    }

    private func writeFully(_ descriptor: FileDescriptor, at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError) {
        guard case .failure(let short) = descriptor.writeFully(at: byteOffset, from: buffer) else { return }
        let done = short.transferred
        guard let failure = short.error else {
            throw BlockError(.ioError, "write at \(byteOffset + Int64(done)) of '\(path)' made no progress")
        }
        throw failedByReopen(failure) ?? storageFailure(failure, "write at \(byteOffset + Int64(done)) of '\(path)'")
    }

    private static func isAligned(_ byteOffset: Int64, _ count: Int, _ address: UnsafeRawPointer?) -> Bool {
        let alignment = directAlignment
        return byteOffset % Int64(alignment) == 0 && count % alignment == 0 && Int(bitPattern: address) % alignment == 0
    }

    /// Runs `body` with an aligned buffer covering the aligned blocks around the request.
    private func withBounce(_ byteOffset: Int64, _ count: Int,
                            _ body: (UnsafeMutableRawBufferPointer, Int64) throws(BlockError) -> Void) throws(BlockError) {
        let alignment = Int64(Self.directAlignment)
        let start = byteOffset / alignment * alignment
        let end = (byteOffset + Int64(count) + alignment - 1) / alignment * alignment
        let bounce = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(end - start), alignment: Self.directAlignment)
        defer { bounce.deallocate() }
        try body(bounce, start)
    }
}
