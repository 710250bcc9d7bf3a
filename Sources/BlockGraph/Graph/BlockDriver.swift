// BlockDriver: the table of operations every node's driver implements, as QEMU's BlockDriver.
// A protocol driver (file) reaches storage; a format driver (raw, qcow2) interprets the bytes
// of its child nodes. Contracts every driver keeps:
//   - byte offsets and counts are checked by the caller against `length()`; a driver may still
//     fail an access if the storage changed underneath (e.g. the file shrank);
//   - a write either completes or throws: no partial success is reported as success;
//   - `flush` makes every completed write durable, or throws, and after a failed flush every
//     later flush fails too (the page cache may have dropped the data: retrying would lie);
//   - permissions flow down: a node asks its children for what its parents ask of it, plus what
//     its own format needs, and only the protocol driver turns them into locks.
import BlockLocking

/// Where a child hangs under its parent.
public enum ChildRole: String, Sendable, Hashable {
    /// The node that stores this node's bytes (a format's file).
    case file
    /// The node unallocated reads fall through to.
    case backing
    /// The node a format keeps its guest data in, apart from its metadata (qcow2's external
    /// data file, QEMU's BDRV_CHILD_DATA child): stored to as the file is.
    case data
}

/// The table of operations a node's driver implements (QEMU's `BlockDriver`): I/O, permissions,
/// events and the format operations. Every operation but the I/O core has a default, so a
/// driver implements only what its format has and the rest says "not supported".
public protocol BlockDriver: AnyObject, Sendable {
    /// The format or protocol name: "file", "raw", "qcow2".
    var formatName: String { get }

    /// The bytes this node exposes to its parents.
    func length() throws(BlockError) -> Int64

    /// The length as the storage has it now. `length()` may be what this open last saw, and
    /// another process may have changed it since: a writer beside a reader that shares write,
    /// or a migration source beside its inactive destination.
    func refreshedLength() throws(BlockError) -> Int64

    /// Fills `buffer` with the bytes at `byteOffset`.
    func read(at byteOffset: Int64, into buffer: UnsafeMutableRawBufferPointer) throws(BlockError)

    /// Writes all of `buffer` at `byteOffset`.
    func write(at byteOffset: Int64, from buffer: UnsafeRawBufferPointer) throws(BlockError)

    /// Makes `byteCount` bytes at `byteOffset` read as zeroes, deallocating them if `mayUnmap`.
    func writeZeroes(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError)

    /// `writeZeroes` only where it is fast, without writing zeroes (QEMU's BDRV_REQ_NO_FALLBACK):
    /// a hole or zero range in a file, zero clusters in a format. Where zeroes would have to be
    /// written, throws `notSupportedByFormat` before changing anything, so that a caller with a
    /// cheaper way (NBD's FAST_ZERO clients) can take it.
    func writeZeroesWithoutFallback(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError)

    /// Makes completed writes durable: this node's own state, then its `file` child's flush.
    func flush() throws(BlockError)

    /// Grows or shrinks the node to `byteCount` bytes.
    func truncate(to byteCount: Int64) throws(BlockError)

    /// What requests that succeeded left to warn about (a qcow2 shrink whose file could not be
    /// cut), each handed over once.
    func takeWarnings() -> [String]

    /// Grows the node to `byteCount` bytes that read as zeroes, with storage reserved for them
    /// where the storage can (a file's blocks allocated, unwritten), so that writes into them
    /// later need not allocate: what a format growing its file ahead of allocation asks for.
    func extend(to byteCount: Int64) throws(BlockError)

    /// What the run of bytes from `byteOffset` is, at most `byteCount` (at least 1) of them,
    /// with the backing chain below this node walked (BlockStatus.swift). The caller has checked
    /// the range against `length()`.
    func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus

    /// Bytes the node occupies on its storage (qemu-img's "disk size"); nil when unknown.
    func allocatedBytes() throws(BlockError) -> Int64?

    /// What this node asks of its child in `role`, given the union of what its parents ask of it.
    func childPermissions(role: ChildRole, parentsNeed: PermissionRequest) -> PermissionRequest

    /// Takes the locks `request` stands for (protocol drivers); format drivers do nothing.
    func applyPermissions(_ request: PermissionRequest) throws(BlockError)

    /// Switches between read-only and read-write access to the storage (protocol drivers).
    func reopen(writable: Bool) throws(BlockError)

    /// The transaction lock of the storage, for protocol drivers that have one.
    var transactionLock: TransactionLock? { get }

    /// Whether the driver keeps what it read of the image's metadata (qcow2's tables): such an
    /// open cannot take over an image another process changed while it was inactive.
    var cachesMetadata: Bool { get }

    /// The requests that follow, until `eventEnded`, belong to `event` (BlockEvent.swift).
    /// Drivers with a file pass it down; the fault-injection driver matches rules on it.
    func eventBegan(_ event: BlockEvent)
    func eventEnded(_ event: BlockEvent)

    // MARK: format operations (QEMU's bdrv_co_check, bdrv_get_specific_info, bdrv_snapshot_list,
    // bdrv_co_pwritev_compressed, bdrv_snapshot_create/goto/delete); a driver without one says so with `notSupportedByFormat`.

    /// Compares the metadata with itself (refcounts against references) and, with `repair`,
    /// fixes what it may: the node must then be writable.
    func check(repair: RepairMode?) throws(BlockError) -> ImageCheckResult

    /// What the format says about the image beyond its size.
    func formatInfo() throws(BlockError) -> FormatSpecificInfo

    /// The internal snapshots, in table order.
    func snapshots() throws(BlockError) -> [SnapshotInfo]

    /// The persistent dirty bitmaps QEMU would load from the image, for measuring a copy; nil
    /// where the format (or this image's version of it) cannot store any.
    func persistentBitmaps() throws(BlockError) -> [PersistentBitmap]?

    /// Changes the persistent dirty bitmap `name` (`qemu-img bitmap`): durable on return.
    func changeBitmap(_ name: String, _ change: BitmapChange) throws(BlockError)

    /// The byte ranges persistent dirty bitmap `name` marks, whole granules clipped to the
    /// image, in order; a bitmap QEMU left inconsistent is refused.
    func dirtyRanges(ofBitmap name: String) throws(BlockError) -> [Range<Int64>]

    /// The format's allocation unit in bytes, which a compressed write stores whole and a copy
    /// skips zeroes by; nil for a format without clusters. A stored value: asking costs no I/O.
    var clusterBytes: Int? { get }

    /// The cluster at `byteOffset` (all of it, or the image's last, shorter one) made ready for
    /// `writeCompressed`. Takes no lock: callers may compress clusters in parallel.
    func compressCluster(at byteOffset: Int64, _ bytes: UnsafeRawBufferPointer) throws(BlockError) -> CompressedCluster

    /// Stores a cluster `compressCluster` made.
    func writeCompressed(_ cluster: CompressedCluster) throws(BlockError)

    /// Drops every cluster the image holds, so that it reads as its backing image does (QEMU's
    /// bdrv_make_empty, what `qemu-img commit` does to the overlay after the commit), in a
    /// crash-safe order, durable when it returns.
    func makeEmpty() throws(BlockError)

    /// Takes an internal snapshot of the image as it is (QEMU's bdrv_snapshot_create): named
    /// `name`, the next ID the format gives, dated as given, without VM state; returned as
    /// `snapshots()` lists it.
    func createSnapshot(name: String, dateSeconds: UInt32, dateNanoseconds: UInt32) throws(BlockError) -> SnapshotInfo

    /// Makes the snapshot with ID `id` the image's content and size (bdrv_snapshot_goto).
    func applySnapshot(id: String) throws(BlockError)

    /// Deletes the snapshot with ID `id` (bdrv_snapshot_delete).
    func deleteSnapshot(id: String) throws(BlockError)

    /// Changes the image's format options in place (QEMU's bdrv_amend_options, `qemu-img
    /// amend`): each name the format knows is checked as QEMU checks it, the rest refused, and
    /// the image changed in the format's crash-safe order. The node must be writable; this open
    /// writes no guest data afterwards (its view of the format is the old one). `progress` is
    /// told the fraction done.
    func amend(_ options: FormatOptions, force: Bool, progress: (Double) -> Void) throws(BlockError)

    /// Names `name` (stored as given, resolved beside the image when opened) as the backing
    /// file, with `format` recorded for it, or no backing file at all (`name` nil): only the
    /// header changes, crash-safely — what the guest reads through it is the caller's concern
    /// (QEMU's bdrv_change_backing_file). Writes back the image's metadata first, so what was
    /// written before is durable before the new name is.
    func changeBackingFile(_ name: String?, format: String?) throws(BlockError)

    /// Where the run of bytes from `byteOffset` (at most `byteCount`, at least 1) is stored as it
    /// reads, in a file of this process that keeps it for as long as the open lives
    /// (HostExtent.swift): what a server needs to send it with sendfile. The caller has checked
    /// the range against `length()`.
    func hostExtent(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> HostExtent
}

extension BlockDriver {
    /// Most drivers see their length only through this open; protocol drivers ask the storage again.
    public func refreshedLength() throws(BlockError) -> Int64 { try length() }
    /// Without a way to reserve storage, growing is a truncation that only ever grows.
    public func extend(to byteCount: Int64) throws(BlockError) {
        guard byteCount > (try length()) else { return }
        try truncate(to: byteCount)
    }
    /// Most drivers have nothing to warn about.
    public func takeWarnings() -> [String] { [] }
    /// A driver that adds nothing of its own passes its parents' needs through unchanged.
    public func childPermissions(role: ChildRole, parentsNeed: PermissionRequest) -> PermissionRequest { parentsNeed }
    /// Only a protocol driver holds locks; the others have nothing to take.
    public func applyPermissions(_ request: PermissionRequest) throws(BlockError) {}
    /// A driver that cannot tell says so, as the other format operations do; `readsAsZeroes`
    /// takes that as "unknown", so copies read what they cannot skip.
    public func blockStatus(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> BlockStatus {
        throw BlockError(.notSupportedByFormat, "the \(formatName) driver cannot tell block status")
    }
    /// A driver that does not say how it zeroes cannot promise it is fast.
    public func writeZeroesWithoutFallback(at byteOffset: Int64, byteCount: Int64, mayUnmap: Bool) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "the \(formatName) driver cannot zero without writing zeroes")
    }
    /// Nothing to reopen for drivers that hold no storage of their own.
    public func reopen(writable: Bool) throws(BlockError) {}
    /// Only a protocol driver over a file has a transaction lock.
    public var transactionLock: TransactionLock? { nil }
    /// Drivers that read what they need on every request may take over a changed image.
    public var cachesMetadata: Bool { false }
    /// Drivers that neither pass events down nor act on them ignore them.
    public func eventBegan(_ event: BlockEvent) {}
    /// The end of an event: ignored where its beginning was.
    public func eventEnded(_ event: BlockEvent) {}
}

extension BlockDriver {
    /// A format without metadata to check says so, as `qemu-img check` says it of raw.
    public func check(repair: RepairMode?) throws(BlockError) -> ImageCheckResult {
        throw BlockError(.notSupportedByFormat, "This image format does not support checks")
    }
    /// A format with nothing beyond the size says so; `blk info` then prints no such section.
    public func formatInfo() throws(BlockError) -> FormatSpecificInfo {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no format-specific information")
    }
    /// A format without a snapshot table says so.
    public func snapshots() throws(BlockError) -> [SnapshotInfo] {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no internal snapshots")
    }
    /// Formats without bitmaps (raw) have none to copy.
    public func persistentBitmaps() throws(BlockError) -> [PersistentBitmap]? { nil }
    /// Refused for formats without persistent bitmaps (raw).
    public func changeBitmap(_ name: String, _ change: BitmapChange) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no persistent dirty bitmaps")
    }
    /// Refused for formats without persistent bitmaps (raw).
    public func dirtyRanges(ofBitmap name: String) throws(BlockError) -> [Range<Int64>] {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no persistent dirty bitmaps")
    }
    /// Formats without clusters (raw) allocate byte by byte, as their file does.
    public var clusterBytes: Int? { nil }
    /// Refused for formats without compressed clusters.
    public func compressCluster(at byteOffset: Int64, _ bytes: UnsafeRawBufferPointer) throws(BlockError) -> CompressedCluster {
        throw BlockError(.notSupportedByFormat, "Compression not supported for this file format")
    }
    /// Refused for formats without compressed clusters.
    public func writeCompressed(_ cluster: CompressedCluster) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "Compression not supported for this file format")
    }
    /// A format without an allocation map has nothing to drop, in QEMU's words.
    public func makeEmpty() throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "\(formatName) does not support emptying nodes")
    }
    /// Refused, as listing is, by formats without a snapshot table.
    public func createSnapshot(name: String, dateSeconds: UInt32, dateNanoseconds: UInt32) throws(BlockError) -> SnapshotInfo {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no internal snapshots")
    }
    /// Refused, as listing is, by formats without a snapshot table.
    public func applySnapshot(id: String) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no internal snapshots")
    }
    /// Refused, as listing is, by formats without a snapshot table.
    public func deleteSnapshot(id: String) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "The \(formatName) format has no internal snapshots")
    }
    /// Refused in qemu-img's words for formats without options to change (raw).
    public func amend(_ options: FormatOptions, force: Bool, progress: (Double) -> Void) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "Format driver '\(formatName)' does not support option amendment")
    }
    /// Refused for formats whose images name no backing file (raw), in QEMU's words.
    public func changeBackingFile(_ name: String?, format: String?) throws(BlockError) {
        throw BlockError(.notSupportedByFormat, "Operation not supported")
    }
    /// A driver that does not say where its bytes are (one that transforms them, or injects
    /// faults into reads) has them read.
    public func hostExtent(at byteOffset: Int64, byteCount: Int64) throws(BlockError) -> HostExtent {
        .mustRead(byteCount: byteCount)
    }
}
