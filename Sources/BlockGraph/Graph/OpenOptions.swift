// OpenOptions: how to open an image — QEMU's -f, read-only, force-share, locking, cache, and
// the migration target's inactive open — as one value.
import BlockLocking

/// The choices an open makes, QEMU's open options as one value: kept by the image for its
/// reopen and passed to the backing chain.
public struct OpenOptions: Sendable, Hashable {
    /// The format; nil probes it from the image's first bytes.
    public var format: String?
    /// Read-write access, and with it the write permission locks.
    public var writable: Bool
    /// QEMU's -U / force-share=on: take no permission others could mind. Read-only opens only.
    public var forceShare: Bool
    /// QEMU's locking=auto|on|off: whether the permission locks are taken.
    public var locking: LockingMode
    /// QEMU's cache modes: write-back, O_DIRECT, or no flushes at all.
    public var cache: CacheMode
    /// Open without permission locks (a migration target before `activate`).
    public var inactive: Bool
    /// Opened by `check -r` (QEMU's BDRV_O_CHECK): an image marked corrupt may be opened
    /// read-write to be repaired, and a dirty one is left for the check to repair.
    public var repairing: Bool
    /// Memory for a format's metadata caches (QEMU's cache-size); nil: the format's default.
    public var metadataCacheBytes: Int?
    /// Faults to inject between the format node and its file (FaultInjectionDriver); tests only.
    public var faults: [FaultRule]
    /// A file to which every write and flush under the format node is appended
    /// (WriteJournalDriver); tests rebuild crash states from it.
    public var writeJournalPath: String?
    /// Faults to inject under every image of the backing chain (each counting its own requests):
    /// what `blk commit` writes into a backing image is tested through these; tests only.
    public var backingFaults: [FaultRule] = []
    /// The journal the backing chain's writes are appended to, for crash states of what `blk
    /// commit` writes into a backing image; tests only.
    public var backingWriteJournalPath: String?
    /// Whether the image file takes a lease on shared storage (sanlock) beside its OFD locks:
    /// by default whatever this host is configured with (LeaseSettings.configured).
    public var lease: LeasePolicy
    /// The raw format's window into its file.
    public var rawByteOffset: Int64
    /// The window's length; nil to the end of the file.
    public var rawWindowSize: Int64?
    /// Whether a format opens the backing image its header names (QEMU's BDRV_O_NO_BACKING when
    /// false): `rebase -u` rewrites the name of a backing file that may be gone or moved.
    public var opensBacking: Bool = true
    /// Faults to inject between a format node and its external data file, counting their own
    /// requests; tests only.
    public var dataFileFaults: [FaultRule] = []

    /// QEMU's defaults: read-only, probed, locked, write-back.
    public init(format: String? = nil, writable: Bool = false, forceShare: Bool = false, locking: LockingMode = .auto,
                cache: CacheMode = .writeback, inactive: Bool = false, repairing: Bool = false, metadataCacheBytes: Int? = nil,
                faults: [FaultRule] = [], writeJournalPath: String? = nil, lease: LeasePolicy = .configured,
                rawByteOffset: Int64 = 0, rawWindowSize: Int64? = nil) {
        self.lease = lease
        self.format = format
        self.writable = writable
        self.forceShare = forceShare
        self.locking = locking
        self.cache = cache
        self.inactive = inactive
        self.repairing = repairing
        self.metadataCacheBytes = metadataCacheBytes
        self.faults = faults
        self.writeJournalPath = writeJournalPath
        self.rawByteOffset = rawByteOffset
        self.rawWindowSize = rawWindowSize
    }

    /// What the user of the image (QEMU's BlockBackend, as a guest device with share-rw=off)
    /// asks of the top node: read, plus write without sharing it when writable.
    var userRequest: PermissionRequest {
        writable ? PermissionRequest(held: [.consistentRead, .write], unshared: [.write])
                 : PermissionRequest(held: [.consistentRead], unshared: [])
    }
}
