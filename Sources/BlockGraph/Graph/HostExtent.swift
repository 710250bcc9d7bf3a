// HostExtent: where a run of a node's bytes is stored as the guest reads them — a range of an
// image file this process has open — so that a server can have the kernel send them from the
// page cache (sendfile) instead of reading them into memory and writing them out again.
//
// What a driver promises when it names a file range (BlockDriver.hostExtent): for as long as the
// open lives, that range holds only bytes the asked guest range held at some point since the
// call. A later write to the same guest range may change them in place (the reader then sees the
// new bytes, as a read racing that write may), but the range is never given to other guest data.
// Raw keeps its bytes where they read; qcow2 allocates only at the end of its file while open, so
// a data cluster a racing write replaced and released is never handed to another guest cluster
// (Qcow2HostExtent.swift). A driver that cannot promise this answers with no file, and the
// caller reads the run as it would without zero copies.

/// A run of bytes from an asked offset, and the file range it is stored at, if any.
public struct HostExtent: Sendable {
    /// The length of the run: at least 1 when at least 1 byte was asked.
    public var byteCount: Int64
    /// The file the run's bytes are in, as they read; nil where they are not stored that way
    /// (compressed, zero or unallocated clusters, a cache that bypasses the page cache, a driver
    /// that cannot say): then the run must be read.
    public var file: FileDriver?
    /// Where the run starts in `file`.
    public var fileOffset: Int64

    /// A run stored at `fileOffset` of `file`, or (`file` nil) one that must be read.
    public init(byteCount: Int64, file: FileDriver?, fileOffset: Int64 = 0) {
        self.byteCount = byteCount
        self.file = file
        self.fileOffset = fileOffset
    }

    /// A run that must be read: no file range holds it as it reads.
    public static func mustRead(byteCount: Int64) -> HostExtent {
        HostExtent(byteCount: byteCount, file: nil)
    }
}
